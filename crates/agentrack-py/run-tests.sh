#!/usr/bin/env bash
# Builds the Python package `agentrack` into a private virtualenv, checks its own Python code
# (ruff lint and format, mypy — the package strictly — and mypy.stubtest of the `_core.pyi` stub
# against the compiled module), then runs its pytest suite.
#
# Needs only python3 (3.10+, with venv and pip) and cargo; the tools come from PyPI, ruff and
# mypy at pinned versions so that a new release cannot fail a clean CI run. The venv lives in
# target/py-venv and is reused between runs. Exit code: the first failing check's, else pytest's.
# The suite runs twice: in local mode, then in remote mode against a real `agentrack serve` (the
# debug binary built here; AGENTRACK_PY_MODES=local or =remote runs one of them).
#
#   crates/agentrack-py/run-tests.sh            # debug build (fast to compile), all tests
#   crates/agentrack-py/run-tests.sh -k breaker # extra arguments go to pytest
#   AGENTRACK_PY_RELEASE=1 crates/agentrack-py/run-tests.sh   # optimised build
set -euo pipefail

crate_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$crate_dir/../.." && pwd)"
venv="${AGENTRACK_PY_VENV:-$root/target/py-venv}"
python="${PYTHON:-python3}"
lint_tools=("ruff==0.17.6" "mypy==2.4.1")

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

if ! python -c "import maturin, pytest, pytest_asyncio" >/dev/null 2>&1; then
  python -m pip install --quiet --disable-pip-version-check --upgrade pip
  python -m pip install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" "pytest>=8" "pytest-asyncio>=0.23"
fi
# Exactly the pinned versions (a missing one raises, and so installs too).
if ! python -c 'import importlib.metadata as m, sys; sys.exit(any(m.version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))' "${lint_tools[@]}" >/dev/null 2>&1; then
  python -m pip install --quiet --disable-pip-version-check "${lint_tools[@]}"
fi

build_flags=()
if [ "${AGENTRACK_PY_RELEASE:-0}" = "1" ]; then
  build_flags+=(--release)
fi
(cd "$crate_dir" && maturin develop --quiet "${build_flags[@]}")

cd "$crate_dir"
# Caches under target/, not in the source tree.
export RUFF_CACHE_DIR="$root/target/ruff-cache" MYPY_CACHE_DIR="$root/target/mypy-cache"
ruff check --quiet .
ruff format --check --quiet .
mypy --strict python/agentrack
mypy tests bench
# The stub against the module maturin just built (stubtest imports it).
python -m mypy.stubtest agentrack._core

modes="${AGENTRACK_PY_MODES:-local remote}"
case " $modes " in
  *" remote "*) (cd "$root" && cargo build --quiet -p agentrack-server --bin agentrack) ;;
esac
status=0
for mode in $modes; do
  echo "== pytest, $mode mode"
  python -m pytest -q --mode "$mode" "$@" || status=$?
done
exit "$status"
