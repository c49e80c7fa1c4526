#!/usr/bin/env bash
# `make demo-forecast`: the forecast stage and the forecast -> super-resolve chain end to end on
# the bundled real AthenaK data (data/athenak; docs/forecast.md).
#   1. windows   configs/shard/forecast-demo.yaml   3 consecutive snapshots 0.1 orbit apart on
#                                                   128^2 (128^2 seed 5, 2.5-5.5 orbits: train)
#   2. operator  configs/forecast/cpu-small.yaml    the FNO (neuraloperator), one-step + 2-step
#                                                   rollout loss: a baseline and the source mean
#   3. flow      configs/forecast/flow-cpu-small.yaml the generative forecaster: conditional flow
#                                                   matching of x(t+dt) | x(t) from u = FNO(x(t)),
#                                                   the SR engine's UNet, method, EMA, DeepSpeed
#   (2 and 3: DeepSpeed ZeRO-2, fp32 on CPU, 2 gloo ranks)
#   4. rollouts  configs/forecast/rollout-demo.yaml 8-member ensembles, 20 steps (2 orbits) from
#                                                   128^2 seed 6 (held out), 10 steps from
#                                                   avgpool2(256^2 seed 4); the FNO's rollouts of
#                                                   the same states
#   5. SR model  runs/demo/train (the `make demo` model): reused when `make demo` has trained it,
#                else trained here with exactly the SR demo's commands (so `make demo` reuses it)
#   6. chain     configs/sample/forecast-chain.yaml every member of the 256^2 seed's forecast at
#                                                   0.5 and 1 orbit super-resolved to 256^2
#   7. eval      configs/eval/forecast-demo.yaml    per lead: ensemble-mean NRMSE / correlation,
#                CRPS, spread/skill, member energies and spectra vs persistence, the FNO and
#                climatology; the chain vs persistence + spline and FNO + spline; goals table
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

stage "1/7 forecast windows (0.1 orbit) from the bundled real AthenaK runs"
run shard build --config configs/shard/forecast-demo.yaml
run shard inspect runs/demo-forecast/shards

stage "2/7 the operator: FNO (one-step + rolled-out loss, DeepSpeed ZeRO-2, 2 gloo ranks)"
torchrun2 forecast train --config configs/forecast/cpu-small.yaml

stage "3/7 the generative forecaster: flow matching from the FNO's mean (same engine as SR)"
torchrun2 forecast train --config configs/forecast/flow-cpu-small.yaml

stage "4/7 ensemble rollouts (8 members x 20 steps = 2 orbits) and the FNO's rollouts"
S4=("inputs.runs=[data/athenak/mri256_nu3e-5/seed_0004]" inputs.orbit_start=3.5 steps=10)
FNO=(checkpoint=runs/demo-forecast/train output_dir=runs/demo-forecast/operator)
run forecast rollout --config configs/forecast/rollout-demo.yaml
run forecast rollout --config configs/forecast/rollout-demo.yaml "${S4[@]}"
run forecast rollout --config configs/forecast/rollout-demo.yaml "${FNO[@]}"
run forecast rollout --config configs/forecast/rollout-demo.yaml "${FNO[@]}" "${S4[@]}"

stage "5/7 the super-resolution model (runs/demo/train)"
if [ -f runs/demo/train/summary.json ]; then
    echo "reusing the SR demo model in runs/demo/train (trained by make demo)"
else
    echo "runs/demo/train has no finished model: training it with the SR demo's own commands"
    run shard build --config configs/shard/demo.yaml
    torchrun2 train --config configs/train/cpu-small.yaml
fi

stage "6/7 the chain: super-resolve every member of the 256^2 seed's forecast (0.5, 1 orbit)"
run sample --config configs/sample/forecast-chain.yaml

stage "7/7 evaluation per lead time"
run eval --config configs/eval/forecast-demo.yaml

stage "done in $(( $(date +%s) - T0 )) s"
cat <<EOM
  windows      runs/demo-forecast/shards          (mhdsr shard inspect runs/demo-forecast/shards --verify)
  run folders  runs/demo-forecast/train (FNO), runs/demo-forecast/flow (generative)
  TensorBoard  .venv/bin/tensorboard --logdir runs/demo-forecast
  rollouts     runs/demo-forecast/outputs/rollouts/*.h5 (ensembles), runs/demo-forecast/operator/*.h5 (FNO)
  chain        runs/demo-forecast/outputs/chain/*.h5
  report       runs/demo-forecast/eval/report.md  (metrics.json, summary.md, figures/)
EOM
