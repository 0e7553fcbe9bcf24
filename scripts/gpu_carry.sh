#!/usr/bin/env bash
# Build the parts that carry vLLM, its missing dependencies and the producers to the lent GPU machine
# (no network there; each `run` call carries at most 64 MiB, repository included). docs/gpu-carry-plan.md
# says how the parts travel and in which order; scripts/gpu_install.sh unpacks them there.
#
#   bash scripts/gpu_carry.sh [--out .gpu-carry] [--part-bytes 30000000] [--drop-moe]
#
# Steps (downloads are cached in OUT/dl, so a rerun only re-packs):
#   1. vLLM 0.24.0 (the last release pinned to torch 2.11.0, which the machine has), trimmed per
#      shared/gpu/RECIPE.md: FA2 (FA3 serves Hopper), the vllm-rs binary, fmha_sm100 sources, FlashMLA
#      libraries, deep_gemm builds for other Pythons; --drop-moe also drops _moe_C (40 MB; MoE-only ops:
#      vLLM warns and serves dense models without it -- not yet seen on a GPU).
#   2. vLLM's dependencies that the machine lacks (shared/gpu/resolve_device_deps.py), with the
#      apache-tvm-ffi fix (vLLM's pin 0.1.9 breaks xgrammar 0.2.8).
#   3. the producers' wheels (llm-compressor, compressed-tensors 0.19, ModelOpt, ...), as RECIPE.md lists.
#   4. two uncompressed tars (wheels are already deflated; xz gained under 1 %), split into parts of at most
#      --part-bytes: OUT/parts/produce.tar.NN and OUT/parts/serve.tar.NN, with SHA256SUMS and sizes.txt.
# Wheels are for the device: CPython 3.12, x86-64 manylinux (the device README's pip download flags).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${QUANTKIT_SHARED:-$ROOT/../shared}
OUT=$ROOT/.gpu-carry
PART_BYTES=30000000
DROP_MOE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --part-bytes) PART_BYTES=$2; shift 2 ;;
    --drop-moe) DROP_MOE=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

VLLM=vllm==0.24.0
TVM_FFI=apache-tvm-ffi==0.1.15.post2
# Not carried: present on the device (torch*; KINDS.md), or not needed to serve a dense model on Hopper:
# flashinfer (VLLM_USE_FLASHINFER_SAMPLER=0), tilelang, z3, cutlass-dsl (RECIPE.md); and, measured here on
# 2026-12-02 (280 MB of the 282 MB of dependencies): tokenspeed-mla/-triton (MLA models only, imported lazily),
# humming-kernels with its JIT toolchain nvidia-cuda-nvcc/-nvvm/-cccl (ranked after Machete and Marlin, imported
# lazily; vLLM skips it when absent), nvidia-cudnn-frontend (used through flashinfer only).
VLLM_SKIP=torch,torchvision,torchaudio,flashinfer-cubin,flashinfer-python,tilelang,z3-solver,nvidia-cutlass-dsl
VLLM_SKIP+=,tokenspeed-mla,tokenspeed-triton,humming-kernels,nvidia-cuda-nvcc,nvidia-nvvm,nvidia-cuda-cccl
VLLM_SKIP+=,nvidia-cudnn-frontend
PRODUCERS=(annotated_types==0.8.0 auto_round==0.15.1 compressed_tensors==0.19.0 datasets==5.2.0 dill==0.4.1
           llmcompressor==0.14.0.1 loguru==0.7.3 multiprocess==0.70.19 nvidia_modelopt==0.47.0 omegaconf==2.4.0
           pulp==3.3.2 pydantic==2.14.3 pydantic_core==2.50.4 typing_inspection==0.4.5)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64)
DL=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp)
for p in "${PLATFORMS[@]}"; do DL+=(--platform "$p"); done

mkdir -p "$OUT"/dl/vllm "$OUT"/dl/serve-deps "$OUT"/dl/produce
t0=$(date +%s)

echo "== 1. $VLLM"
ls "$OUT"/dl/vllm/vllm-0.24.0-*.whl >/dev/null 2>&1 || "${DL[@]}" -d "$OUT/dl/vllm" "$VLLM"
rm -rf "$OUT/bundle" "$OUT/parts"
mkdir -p "$OUT"/bundle/serve "$OUT"/bundle/produce "$OUT"/parts
whl=$(ls "$OUT"/dl/vllm/vllm-0.24.0-*.whl)
cp "$whl" "$OUT/bundle/serve/"
trimmed="$OUT/bundle/serve/$(basename "$whl")"
TRIM=('vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so' 'vllm/vllm-rs' 'vllm/third_party/fmha_sm100/*'
      'vllm/_flashmla_C.abi3.so' 'vllm/_flashmla_extension_C.abi3.so'
      'vllm/third_party/deep_gemm/_C.cpython-310-*' 'vllm/third_party/deep_gemm/_C.cpython-311-*'
      'vllm/third_party/deep_gemm/_C.cpython-313-*' 'vllm/third_party/deep_gemm/_C.cpython-314-*')
[ "$DROP_MOE" = 1 ] && TRIM+=('vllm/_moe_C_stable_libtorch.abi3.so')
zip -q -d "$trimmed" "${TRIM[@]}"
echo "vllm wheel $(stat -c %s "$whl") -> $(stat -c %s "$trimmed") bytes"

echo "== 2. vLLM's missing dependencies"
# The resolver reads vLLM's requirements from the wheel it finds in its folder: give it the downloaded one.
ls "$OUT"/dl/serve-deps/vllm-0.24.0-*.whl >/dev/null 2>&1 || cp "$whl" "$OUT/dl/serve-deps/"
python3 "$SHARED/gpu/resolve_device_deps.py" "$OUT/dl/serve-deps" "$VLLM" "$VLLM_SKIP" > "$OUT/dl/serve-deps.log"
grep -E '^(FAIL|TOTAL)' "$OUT/dl/serve-deps.log" || true
# Carry what the resolver chose (its GOT lines; the folder may hold wheels of earlier, wider resolutions), except
# vLLM itself (it travels trimmed, step 1) and its tvm-ffi pin, which the fix replaces: one version of each.
mkdir -p "$OUT/dl/fix"
ls "$OUT"/dl/fix/apache_tvm_ffi-0.1.15.post2-*.whl >/dev/null 2>&1 || "${DL[@]}" -d "$OUT/dl/fix" "$TVM_FFI"
cp "$OUT"/dl/fix/apache_tvm_ffi-0.1.15.post2-*.whl "$OUT/bundle/serve/"
sed -n 's/^GOT .* -> \([^ ]*\.whl\) .*/\1/p' "$OUT/dl/serve-deps.log" | grep -v -e '^vllm-' -e '^apache_tvm_ffi-' |
  while read -r f; do cp "$OUT/dl/serve-deps/$f" "$OUT/bundle/serve/"; done

echo "== 3. producers"
for req in "${PRODUCERS[@]}"; do
  name=${req%%==*}; ver=${req##*==}
  ls "$OUT"/dl/produce/"${name}"-"${ver}"-*.whl >/dev/null 2>&1 || "${DL[@]}" -d "$OUT/dl/produce" "$req"
done
cp "$OUT"/dl/produce/*.whl "$OUT/bundle/produce/"

echo "== 4. parts of at most $PART_BYTES bytes"
for kind in produce serve; do
  tar -C "$OUT/bundle" -cf "$OUT/$kind.tar" "$kind"
  split -b "$PART_BYTES" -d -a 2 "$OUT/$kind.tar" "$OUT/parts/$kind.tar."
  rm "$OUT/$kind.tar"
done
(cd "$OUT/parts" && sha256sum produce.tar.* serve.tar.* > SHA256SUMS)
{
  echo "# built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/gpu_carry.sh (part-bytes $PART_BYTES, drop-moe $DROP_MOE)"
  for kind in produce serve; do
    n=$(ls "$OUT/bundle/$kind" | wc -l)
    echo "$kind wheels: $n files, $(du -cb "$OUT/bundle/$kind"/*.whl | tail -1 | cut -f1) bytes"
  done
  echo "vllm wheel trimmed: $(stat -c %s "$trimmed") bytes (from $(stat -c %s "$whl"))"
  (cd "$OUT/parts" && stat -c '%n %s' produce.tar.* serve.tar.*)
} > "$OUT/parts/sizes.txt"
cat "$OUT/parts/sizes.txt"
echo "done in $(( $(date +%s) - t0 )) s; parts in $OUT/parts"
