#!/usr/bin/env bash
# Shared set-up for ./run.sh and ./test.sh. Source it; it exports PYTHON.
#   - uses the environment the user has activated (virtualenv or conda), else creates/reuses .venv/
#   - installs torch first (torch==2.13.0 only when no torch is importable), then the requirements
#   - idempotent: a stamp of the requirement files in the environment skips pip on later calls
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
elif [[ -n "${CONDA_PREFIX:-}" ]]; then
    PYTHON="$CONDA_PREFIX/bin/python"
else
    if [[ ! -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "[setup] creating virtual environment in $REPO_ROOT/.venv"
        python3 -m venv "$REPO_ROOT/.venv"
    fi
    PYTHON="$REPO_ROOT/.venv/bin/python"
fi
export PYTHON

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] no importable torch: installing torch==2.13.0"
    "$PYTHON" -m pip install --disable-pip-version-check -q "torch==2.13.0"
fi

# A GPU that the installed torch cannot use (PyPI's CUDA 13 wheels need a driver of R580 or newer)
# would otherwise mean quietly training on the CPU: say so, once, with the fix.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU ' \
   && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "[setup] warning: nvidia-smi sees a GPU but this torch ($("$PYTHON" -c 'import torch; print(torch.__version__)')) cannot use it;" \
         "install the torch build for your driver first (README, 'On a GPU'), then run this again: it reuses that torch" >&2
fi

req_files=("$REPO_ROOT/requirements.txt")
if [[ "${SETUP_DEV:-0}" == "1" ]]; then req_files+=("$REPO_ROOT/requirements-dev.txt"); fi
if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    req_files+=("$REPO_ROOT/requirements-gpu.txt")
fi
stamp_file="$("$PYTHON" -c 'import sys; print(sys.prefix)')/.avatar_requirements.sha256"
stamp="$(cat "${req_files[@]}" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp_file" ]] || ! grep -qx "$stamp" "$stamp_file"; then
    echo "[setup] installing requirements: ${req_files[*]##*/}"
    pip_args=()
    for f in "${req_files[@]}"; do pip_args+=(-r "$f"); done
    "$PYTHON" -m pip install --disable-pip-version-check -q "${pip_args[@]}"
    # Several stamps can coexist (run.sh without dev requirements, test.sh with them).
    echo "$stamp" >> "$stamp_file"
else
    echo "[setup] environment up to date ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)'))"
fi
