#!/usr/bin/env bash
# Snakemake runs this in the new environment of sublim.yaml, from the workflow's directory (this
# checkout): the same install as `make install-gpu`.
set -euo pipefail
scripts/install_lock.sh locks/cuda.txt
