#!/usr/bin/env bash
# Write constraints.txt, the lock: the exact version of every package in a venv the tests passed
# in (default .venv, made by README command 1). Run it after upgrading that venv and a green
# `.venv/bin/python -m pytest`; commit the result. `edgekit doctor` compares a venv against it.
#   scripts/lock.sh [VENV [OUT]]     e.g. scripts/lock.sh .tox/runner-tflite-py39 constraints-tflite.txt
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
out="${2:-constraints.txt}"
py="$("$venv/bin/python" -c 'import platform, sys; print(f"Python {platform.python_version()}, {sys.platform} {platform.machine()}")')"
{
    echo "# The lock: exact versions of every package in the venv the tests run in ($py)."
    if [ "$out" = constraints.txt ]; then
        echo "# Used as pip constraints by README command 1 (pip install -c constraints.txt), .ci/run and"
        echo "# tox (PIP_CONSTRAINT); edgekit doctor reports what an installed venv has that differs."
        echo "# torch is the CPU build that pip finds through PIP_FIND_LINKS: its +cpu local version is part"
        echo "# of the pin, so a missing CPU wheel fails the install instead of pulling a multi-GB CUDA torch."
    else
        echo "# Used as pip constraints (PIP_CONSTRAINT) by the tox envs that name this file in tox.ini."
    fi
    echo "# Made by scripts/lock.sh (VENV/bin/pip freeze --exclude-editable) from a venv that passed the"
    echo "# tests; to upgrade, install without the lock into a fresh venv, test it, and lock that venv."
    "$venv/bin/pip" freeze --exclude-editable --disable-pip-version-check
} >"$out.tmp"
[ "$out" != constraints.txt ] || grep -q '^torch==.*+cpu$' "$out.tmp" || { echo "lock.sh: $venv has no CPU torch (torch==X+cpu): refusing to lock it" >&2; rm -f "$out.tmp"; exit 1; }
mv "$out.tmp" "$out"
echo "wrote $out: $(grep -vc '^#' "$out") packages from $venv ($py)"
