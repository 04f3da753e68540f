#!/usr/bin/env bash
# Test-only set-up: a separate virtual environment holding the reference `lpips` package
# (lpips==0.1.4, which imports torchvision) so tests/test_lpips_reference.py can compare our
# torchvision-free LPIPS against it. The product environment (.venv) never gets torchvision.
#
#   scripts/make_lpips_reference_env.sh            # create (or reuse) the reference venv
#
# Location: ${AVATAR_CACHE_DIR:-<repo>/.cache}/lpips-ref-venv   (override with LPIPS_REF_VENV)
# Interpreter used to create it: $PYTHON if set, else python3.
# Idempotent: a stamp written after a successful install + import check makes later calls a
# no-op; a half-built venv (no stamp) is deleted and rebuilt. Concurrent callers serialise on a
# lock file. Exit status is non-zero (with pip's message) when a package cannot be installed.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${AVATAR_CACHE_DIR:-$REPO_ROOT/.cache}"
VENV="${LPIPS_REF_VENV:-$CACHE_ROOT/lpips-ref-venv}"
BASE_PYTHON="${PYTHON:-python3}"
REQS=("torch==2.13.0" "torchvision==0.28.0" "lpips==0.1.4" "numpy")
STAMP_VALUE="$(printf '%s\n' "${REQS[@]}" | sha256sum | cut -d' ' -f1)"
STAMP="$VENV/.lpips_reference_env.stamp"

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

if [[ -f "$STAMP" ]] && grep -qx "$STAMP_VALUE" "$STAMP" && [[ -x "$VENV/bin/python" ]]; then
    echo "[lpips-ref] reference environment up to date: $VENV"
    exit 0
fi

start=$(date +%s)
if [[ -e "$VENV" ]]; then
    echo "[lpips-ref] removing incomplete reference environment $VENV"
    rm -rf "$VENV"
fi
echo "[lpips-ref] creating reference environment $VENV (${REQS[*]})"
"$BASE_PYTHON" -m venv "$VENV"
# (pip's warnings about this machine's empty local index folders are filtered out)
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "${REQS[@]}" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# Import check, with the two torchvision registration modules stubbed out exactly as the test
# does (the registry's torchvision is a CUDA build whose operator registrations fail to load
# beside the CPU torch; the model classes lpips needs work without them).
"$VENV/bin/python" - <<'EOF'
import sys, types
for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules[name] = types.ModuleType(name)
import torch, torchvision, lpips  # noqa: F401
assert lpips.LPIPS is not None
print(f"[lpips-ref] ok: torch {torch.__version__}, torchvision {torchvision.__version__}")
EOF
echo "$STAMP_VALUE" > "$STAMP"
echo "[lpips-ref] done in $(( $(date +%s) - start )) s"
