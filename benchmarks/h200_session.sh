#!/usr/bin/env bash
# One measurement session on a lent H200, after ../shared/gpu-staging brought the stack to /tmp/site:
# the real workflow through profiles/b200 (with one SIGKILL of a generate, an evaluate and a train
# job, which restart-times reruns), the H200 checks of the seed optimizer and of profiles/multi-gpu,
# then vllm_shapes.py with whatever is left of the budget. Everything lands in OUTDIR; start it with
# setsid nohup so that later device calls can follow it.
#   setsid nohup bash benchmarks/h200_session.sh /tmp/session 1250 > /tmp/session.log 2>&1 &
# What a session can leave out (environment): SMOKE=0 (use locks/cuda.txt's versions without the
# smoke engine), CHECKS=0 (no seed-optimizer and multi-GPU checks), KILL_RULES=train,evaluate (which
# stages get their SIGKILL), CONDITIONS='[owl]' (the workflow's conditions), WORKFLOW_S (its time
# limit, 900 s: 720 s stopped the fifth session's training at epoch 8), SHAPES_PLAN and SHAPES_ARGS
# (vllm_shapes.py's --plan and further arguments), WORKFLOW=0 (no workflow run), TRAIN_PLAN (training
# throughput first: space-separated SHAPE:CONFIGS:PROCESSES:STEPS[:THREADS] runs of train_throughput.py, e.g.
# '32b:workflow:1:4 3b:workflow+gpu_share=0.5:2:30:4'; THREADS: each process's OMP_NUM_THREADS, as the
# sizing's train_threads gives a train job, default 8 / PROCESSES), START_METHODS (last: engine_start_method.py's
# --methods at 0.5b, e.g. spawn,fork,spawn,fork, given START_RESERVE_S seconds of the budget, 200),
# WORKFLOW_CONFIG (the workflow's config, benchmarks/configs/smol-gpu.yaml; smol-gpu-quick.yaml checks
# the path in ~5 min), SHAPES=0 (no vllm_shapes.py), NOISE=0 (no check_hashed_noise.py, the hashed
# sampler's kernel against its torch reference and vLLM's per-request generators), PROFILES (after
# TRAIN_PLAN: space-separated SHAPE:CONFIG runs of profile_step.py, e.g. '32b:workflow 14b:workflow';
# PROFILE_ARGS: further arguments, e.g. --gaps),
# GEMM=1 (gemm_ceiling.py: the step's matmuls alone), START_PLAN (last: space-separated
# SHAPE:STAGE:METHODS[:CAPTURE_SIZES] runs of engine_start_method.py, capture sizes joined by '/',
# e.g. '7b:generate:fork,fork 7b:evaluate:fork,fork 7b:generate:fork:1/8/32/128/512'), SYNC_DEBUG
# (after PROFILES: a shape for sync_debug.py, the training step's waits for the GPU and their stacks),
# HF_EVAL (before START_PLAN: space-separated SHAPE[:random] evaluate jobs of the transformers backend,
# two runs each, engine_start_method.py --backend transformers; random: weights built on the GPU, not
# loaded, for shapes whose 65 GB of safetensors do not fit the disk), VARLEN=1 (first: check_varlen.py,
# the training attention's FlashAttention varlen paths against a float64 reference, and their times),
# FLAT_CHECK (before TRAIN_PLAN: shapes for check_flat_optimizer.py, e.g. '7b,14b,32b': FlatAdamW against
# bitsandbytes' per-tensor AdamW, identical values and the step's cost).
set -u
OUT=${1:?usage: h200_session.sh OUTDIR BUDGET_S}
BUDGET=${2:-1250}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
export PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
mkdir -p "$OUT"
# After every step, one archive of the records so far (a device call brings back at most 8 files: a
# follower copies OUTDIR/records.tgz alone; the twelfth session lost its later records to that limit)
note() {
  echo "$(($(date +%s) - START)) s: $*" >> "$OUT/status.txt"
  (cd "$OUT" && tar czf records.tgz.part $(ls ./*.json ./*.txt ./*.log shapes/*.json shapes/*.log 2>/dev/null) \
      && mv records.tgz.part records.tgz)
}

note "start"
# locks/cuda.txt's versions of the libraries the image has older copies of (/tmp/stage/lock, installed
# apart): used when a tiny engine starts with them, else the image's, and status.txt says which
export PYTHONPATH=/tmp/site:$PWD/src
if ls /tmp/stage/lock/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site-lock /tmp/stage/lock/*.whl
  export PYTHONPATH=/tmp/site-lock:/tmp/site:$PWD/src
  if [ "${SMOKE:-1}" = 0 ]; then
    note "locks/cuda.txt versions in use (no smoke engine)"
  elif timeout 240 python3 benchmarks/vllm_shapes.py --out "$OUT/smoke" --plan gen:tiny:eager --prompts 64 --gen-tokens 8 \
      > "$OUT/smoke.log" 2>&1 && ! grep -q '"error"' "$OUT/smoke/vllm_shapes.json"; then
    note "locks/cuda.txt versions in use"
  else
    export PYTHONPATH=/tmp/site:$PWD/src
    note "locks/cuda.txt versions FAILED the smoke engine (smoke.log); the image's versions in use"
  fi
fi
{ nvidia-smi; echo "PYTHONPATH=$PYTHONPATH"; python3 -m pip list 2>/dev/null; python3 -c "import vllm, torch, trl, snakemake, transformers, peft, numpy, bitsandbytes as b; print(vllm.__version__, torch.__version__, trl.__version__, snakemake.__version__, transformers.__version__, peft.__version__, numpy.__version__, b.__version__)"; } > "$OUT/env.txt" 2>&1

if [ "${VARLEN:-0}" != 0 ]; then
  timeout 300 python3 benchmarks/check_varlen.py --json "$OUT/varlen_check.json" > "$OUT/varlen.log" 2>&1
  note "varlen check rc=$?"
fi
if [ -n "${FLAT_CHECK:-}" ]; then
  timeout 300 python3 benchmarks/check_flat_optimizer.py --shapes "$FLAT_CHECK" --json "$OUT/flat_optimizer_check.json" \
      > "$OUT/flat_optimizer_check.log" 2>&1
  note "flat optimizer check rc=$?"
fi
runs=0
for run in ${TRAIN_PLAN:-}; do
  IFS=: read -r shape configs processes steps threads <<< "$run"
  runs=$((runs + 1))  # the plan's place in each name: a repeated entry (ABAB of packed runs) keeps its own file
  name="train${runs}_${shape}_x${processes}_$(echo "$configs" | tr -c 'a-zA-Z0-9._\n-' '_')"
  OMP_NUM_THREADS=${threads:-$((8 / processes > 1 ? 8 / processes : 1))} timeout 400 python3 benchmarks/train_throughput.py \
      --shape "$shape" --configs "$configs" --processes "$processes" --warmup 2 --steps "$steps" \
      --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  note "$name rc=$?"
done
for run in ${PROFILES:-}; do
  IFS=: read -r shape config <<< "$run"
  # shellcheck disable=SC2086  # PROFILE_ARGS is a list of arguments
  timeout 400 python3 benchmarks/profile_step.py --shape "$shape" --config "$config" ${PROFILE_ARGS:-} \
      --json "$OUT/profile_${shape}_${config}.json" > "$OUT/profile_${shape}_${config}.log" 2>&1
  note "profile $shape $config rc=$?"
done
if [ -n "${SYNC_DEBUG:-}" ]; then
  timeout 200 python3 benchmarks/sync_debug.py --shape "$SYNC_DEBUG" --json "$OUT/sync_debug_$SYNC_DEBUG.json" \
      > "$OUT/sync_debug.log" 2>&1
  note "sync debug $SYNC_DEBUG rc=$?"
fi
if [ "${GEMM:-0}" != 0 ]; then
  timeout 200 python3 benchmarks/gemm_ceiling.py --json "$OUT/gemm_ceiling_h200.json" > "$OUT/gemm.log" 2>&1
  note "gemm ceiling rc=$?"
fi
[ -n "${START_METHODS:-}" ] && reserve=${START_RESERVE_S:-200} || reserve=0

if [ "${WORKFLOW:-1}" != 0 ]; then
  python3 benchmarks/kill_jobs.py --watch --json "$OUT/kills.json" --timeout-s 700 \
      --rules "${KILL_RULES:-generate,evaluate,train}" > "$OUT/kills.log" 2>&1 &
  killer=$!
  timeout "${WORKFLOW_S:-900}" snakemake --profile profiles/b200 --configfile config/config.yaml profiles/b200/sizing.yaml \
      "${WORKFLOW_CONFIG:-benchmarks/configs/smol-gpu.yaml}" ${CONDITIONS:+--config "conditions=$CONDITIONS"} > "$OUT/workflow.log" 2>&1
  note "workflow rc=$?"
  kill $killer 2>/dev/null
  python3 benchmarks/kill_jobs.py --report --json "$OUT/kills.json" >> "$OUT/kills.log" 2>&1
  python3 benchmarks/workflow_records.py --json "$OUT/h200_workflow_vllm.json" --kills "$OUT/kills.json" > /dev/null 2>> "$OUT/status.txt"
  note "records written"
fi

if [ "${CHECKS:-1}" != 0 ]; then
  timeout 150 python3 benchmarks/check_seed_optimizer.py --json "$OUT/seed_optimizer_h200.json" > "$OUT/checks.log" 2>&1
  note "seed optimizer rc=$?"
  timeout 150 python3 benchmarks/multi_gpu_check.py --json "$OUT/multi_gpu_check_h200.json" >> "$OUT/checks.log" 2>&1
  note "multi-gpu check rc=$?"
fi

if [ "${NOISE:-1}" != 0 ]; then
  timeout 120 python3 benchmarks/check_hashed_noise.py --json "$OUT/hashed_noise_h200.json" > "$OUT/noise.log" 2>&1
  note "hashed noise check rc=$?"
fi

if [ "${SHAPES:-1}" != 0 ]; then
  # shellcheck disable=SC2086  # SHAPES_ARGS is a list of arguments
  timeout "$(($(left) - reserve))" python3 benchmarks/vllm_shapes.py --out "$OUT/shapes" \
      --budget-s "$(($(left) - reserve - 170))" \
      ${SHAPES_PLAN:+--plan "$SHAPES_PLAN"} ${SHAPES_ARGS:---raw results/numbers/135m/owl/run-1/raw.jsonl} \
      > "$OUT/shapes.log" 2>&1
  note "shapes rc=$?"
fi
if [ -n "${START_METHODS:-}" ]; then
  timeout "$(left)" python3 benchmarks/engine_start_method.py --shape 0.5b --methods "$START_METHODS" \
      --json "$OUT/engine_start_method.json" --models "$OUT/shapes/models" > "$OUT/start_method.log" 2>&1
  note "start methods rc=$?"
fi
for run in ${HF_EVAL:-}; do
  IFS=: read -r shape mode <<< "$run"
  timeout "$(left)" python3 benchmarks/engine_start_method.py --shape "$shape" --backend transformers --methods none,none \
      ${mode:+--random-weights} --json "$OUT/hf_eval_$shape.json" --models "$OUT/shapes/models" > "$OUT/hf_eval_$shape.log" 2>&1
  note "transformers evaluate $run rc=$?"
  rm -rf "$OUT/shapes/models/qwen2.5-$shape-weights"  # the disk holds one shape's weights at a time
done
n=0
for run in ${START_PLAN:-}; do
  IFS=: read -r shape stage methods sizes <<< "$run"
  n=$((n + 1))
  timeout "$(left)" python3 benchmarks/engine_start_method.py --shape "$shape" --stage "$stage" --methods "$methods" \
      ${sizes:+--capture-sizes "${sizes//\//,}"} --json "$OUT/job_overhead_$n.json" --models "$OUT/shapes/models" \
      > "$OUT/job_overhead_$n.log" 2>&1
  note "job overhead $run rc=$?"
done
tar czf "$OUT/artifacts.tgz" --exclude='*.safetensors' --exclude='models' logs benchmarks/runs results .snakemake/log \
    "$OUT"/*.log "$OUT"/*.txt "$OUT"/smoke 2>/dev/null
note "done"
touch "$OUT/done"
