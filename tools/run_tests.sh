#!/usr/bin/env bash
# Sets up .venv (Python 3.10+; torch 2.13.0 CPU wheel first, so pip never pulls CUDA builds) and runs
# the test suite. Usage: tools/run_tests.sh [--heavy | --all] [extra pytest arguments]
#   (default) the fast suite, heavy cases excluded      --heavy  only the heavy cases
#   --all      everything
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
V=.venv/bin/python
if ! "$V" -c "import torch" 2>/dev/null; then
    "$V" -m pip install -q torch==2.13.0
fi
TORCH_VERSION=$("$V" -c "import torch; print(torch.__version__.split('+')[0])")
"$V" -m pip install -q -c <(echo "torch==$TORCH_VERSION") -e ".[dev]"
marker=()
case "${1:-}" in
    --heavy) marker=(-m heavy); shift ;;
    --all) marker=(-m "heavy or not heavy"); shift ;;
esac
exec "$V" -m pytest "${marker[@]}" "$@"
