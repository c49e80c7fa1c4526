#!/usr/bin/env bash
# `make demo-forecast`: the forecast stage and the forecast -> super-resolve chain end to end on
# the bundled real AthenaK data (data/athenak; docs/design.md "Forecast stage").
#   1. windows  configs/shard/forecast-demo.yaml   4 snapshots 0.5 orbit apart on the 128^2 grid:
#                                                  train 128^2 seed 2 + avgpool2(256^2 seed 0),
#                                                  val avgpool2(256^2 seed 4), heldout 128^2 seed 3
#   2. train    configs/forecast/cpu-small.yaml    FNO (neuraloperator), one-step + 2-step rollout
#                                                  loss, DeepSpeed ZeRO-2, fp32 on CPU, 2 gloo ranks
#   3. rollout  configs/forecast/rollout-demo.yaml 8 steps (4 orbits) from 3.5-4.5 orbits of
#                                                  128^2 seed 3 and avgpool2(256^2 seed 4)
#   4. SR model runs/demo/train (the `make demo` model): reused when `make demo` has trained it,
#               else trained here with exactly the SR demo's commands (so `make demo` reuses it)
#   5. chain    configs/sample/forecast-chain.yaml every forecast step of 256^2 seed 4 up to 1
#                                                  orbit super-resolved to 256^2 (Heun, 8 NFE)
#   6. eval     configs/eval/forecast-demo.yaml    per lead: NRMSE, correlation, band errors,
#               energies vs persistence / linear extrapolation; the chain vs persistence + bicubic
#               on the 256^2 truth; energies vs AthenaK's history file; the lead-time table
# Every stage is an ordinary `mhdsr` command; rerunning skips finished work; `make clean` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DS_ACCELERATOR=cpu PYTHONUNBUFFERED=1
T0=$(date +%s)
stage() { printf '\n\033[1m[%s +%ss] %s\033[0m\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
run() { printf '$ mhdsr %s\n' "$*"; "$PY" -m mhdsr "$@"; }
torchrun2() {  # 2 gloo ranks x 1 thread (faster than 1 rank x 2 threads on 2 cores)
    printf '$ torchrun --nproc_per_node=2 -m mhdsr %s\n' "$*"
    OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nproc_per_node=2 \
        --master_port="${MHDSR_DEMO_PORT:-29527}" -m mhdsr "$@"
}

stage "1/6 forecast windows from the bundled real AthenaK runs"
run shard build --config configs/shard/forecast-demo.yaml
run shard inspect runs/demo-forecast/shards

stage "2/6 train the forecast FNO (one-step + rolled-out loss, DeepSpeed ZeRO-2, 2 gloo ranks)"
torchrun2 forecast train --config configs/forecast/cpu-small.yaml

stage "3/6 rollouts from the held-out seeds (8 steps = 4 orbits)"
run forecast rollout --config configs/forecast/rollout-demo.yaml

stage "4/6 the super-resolution model (runs/demo/train)"
if [ -f runs/demo/train/summary.json ]; then
    echo "reusing the SR demo model in runs/demo/train (trained by make demo)"
else
    echo "runs/demo/train has no finished model: training it with the SR demo's own commands"
    run shard build --config configs/shard/demo.yaml
    torchrun2 train --config configs/train/cpu-small.yaml
fi

stage "5/6 the chain: super-resolve every forecast step of 256^2 seed 4 up to 1 orbit"
run sample --config configs/sample/forecast-chain.yaml

stage "6/6 evaluation per lead time"
run eval --config configs/eval/forecast-demo.yaml

stage "done in $(( $(date +%s) - T0 )) s"
cat <<EOM
  windows      runs/demo-forecast/shards          (mhdsr shard inspect runs/demo-forecast/shards --verify)
  run folder   runs/demo-forecast/train           (config.yaml, log.txt, checkpoints/, export/)
  TensorBoard  .venv/bin/tensorboard --logdir runs/demo-forecast/train/tb
  rollouts     runs/demo-forecast/outputs/rollouts/*.h5
  chain        runs/demo-forecast/outputs/chain/*.h5
  report       runs/demo-forecast/eval/report.md  (metrics.json, summary.md, figures/)
EOM
