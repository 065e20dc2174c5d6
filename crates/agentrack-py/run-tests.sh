#!/usr/bin/env bash
# Builds the Python package `agentrack` into a private virtualenv and runs its pytest suite.
#
# Needs only python3 (3.10+, with venv and pip) and cargo. The venv lives in
# target/py-venv and is reused between runs. Exit code: pytest's.
#
#   crates/agentrack-py/run-tests.sh            # debug build (fast to compile), all tests
#   crates/agentrack-py/run-tests.sh -k breaker # extra arguments go to pytest
#   AGENTRACK_PY_RELEASE=1 crates/agentrack-py/run-tests.sh   # optimised build
set -euo pipefail

crate_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$crate_dir/../.." && pwd)"
venv="${AGENTRACK_PY_VENV:-$root/target/py-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

if ! python -c "import maturin, pytest, pytest_asyncio" >/dev/null 2>&1; then
  python -m pip install --quiet --disable-pip-version-check --upgrade pip
  python -m pip install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" "pytest>=8" "pytest-asyncio>=0.23"
fi

build_flags=()
if [ "${AGENTRACK_PY_RELEASE:-0}" = "1" ]; then
  build_flags+=(--release)
fi
(cd "$crate_dir" && maturin develop --quiet "${build_flags[@]}")

cd "$crate_dir"
set +e
python -m pytest -q "$@"
status=$?
set -e
exit "$status"
