#!/usr/bin/env bash
# Device side of scripts/gpu_carry.sh: check the carried parts, join them and install their wheels into
# TARGET/produce (llm-compressor, ModelOpt, compressed-tensors 0.19) and TARGET/serve (vLLM 0.24.0 and
# compressed-tensors 0.17): the two pin different compressed-tensors, so each gets its own PYTHONPATH.
#
#   bash scripts/gpu_install.sh --parts /tmp/qk-parts --target /tmp/qk-site [--only produce|serve]
#
# Needs only python3, pip, cat and sha256sum (the machine has no unzip; tar is not relied on either).
# pip gets the device's own tags (CPython 3.12, manylinux x86-64) explicitly, so the same command also
# rehearses the install on a machine with another Python. A kind whose parts are absent is skipped;
# TARGET/KIND/.quantkit-installed marks a finished install, and a rerun skips it.
set -euo pipefail
PARTS=""; TARGET=""; ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --parts) PARTS=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$PARTS" ] && [ -n "$TARGET" ] || { echo "usage: $0 --parts DIR --target DIR [--only produce|serve]" >&2; exit 2; }
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore
TAGS=(--only-binary=:all: --python-version 3.12 --implementation cp)
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  TAGS+=(--platform "$p")
done
mkdir -p "$TARGET"
for kind in produce serve; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$kind" ] || continue
  if [ -f "$TARGET/$kind/.quantkit-installed" ]; then echo "$kind: already installed in $TARGET/$kind"; continue; fi
  parts=$(ls "$PARTS"/$kind.tar.[0-9][0-9] 2>/dev/null || true)
  if [ -z "$parts" ]; then echo "$kind: no parts in $PARTS, skipped"; continue; fi
  t0=$(date +%s)
  if [ -f "$PARTS/SHA256SUMS" ]; then
    want=$(grep -c " $kind\.tar\." "$PARTS/SHA256SUMS")
    have=$(echo "$parts" | wc -l)
    [ "$want" = "$have" ] || { echo "$kind: $have of $want parts present in $PARTS" >&2; exit 1; }
    (cd "$PARTS" && grep " $kind\.tar\." SHA256SUMS | sha256sum -c --quiet) || { echo "$kind: checksum mismatch" >&2; exit 1; }
  fi
  stage="$TARGET/.stage-$kind"
  rm -rf "$stage"; mkdir -p "$stage"
  # shellcheck disable=SC2086
  cat $parts | "$PY" -c 'import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|").extractall(sys.argv[1], filter="data")' "$stage"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --disable-pip-version-check \
      "${TAGS[@]}" --target "$TARGET/$kind" "$stage/$kind"/*.whl
  rm -rf "$stage"
  touch "$TARGET/$kind/.quantkit-installed"
  echo "$kind: $(ls "$PARTS"/$kind.tar.[0-9][0-9] | wc -l) parts -> $TARGET/$kind ($(du -sm "$TARGET/$kind" | cut -f1) MB) in $(( $(date +%s) - t0 )) s"
done
