# Sourced by tools/demo and tools/test: make .venv if missing and install the project into it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -n "${PRUNEYOLO_PYTHON:-}" ]; then  # an interpreter that already has pruneyolo (the tests): no set-up
    export PATH="$(dirname "$PRUNEYOLO_PYTHON"):$PATH"
    return 0
fi
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
stamp=.venv/.pruneyolo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
