#!/usr/bin/env bash
# Set up the environment (see scripts/setup_env.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g. ./test.sh -k flame -x
set -euo pipefail
cd "$(dirname "$0")"
SETUP_DEV=1 source scripts/setup_env.sh
exec "$PYTHON" -m pytest "$@"
