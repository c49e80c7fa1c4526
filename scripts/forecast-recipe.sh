#!/usr/bin/env bash
# `make forecast-bench`: the longer forecast recipe on 0.1-orbit data, written to
# benchmarks/forecast.md (+ .json): windows of 128^2 seed 5 (train), the FNO, the generative
# forecaster (operator source), 8-member rollouts of 4 orbits from held-out 128^2 seed 6, the
# FNO's rollouts, the chain on avgpool2(256^2 seed 4) through the SR model, the eval per lead
# with persistence / FNO / climatology, and the NFE trade-off (4, 8, 16 NFE per step).
#
#   make forecast-bench FORECAST_DATA=/path/to/athenak   # folder with mri128_nu3e-5/seed_0005,
#                                                        # seed_0006 and mri256_nu3e-5/seed_0004
# Variables: FORECAST_DATA (default data/athenak: the bundled subset, shorter runs), FNO_STEPS
# (1000), FLOW_STEPS (1500), SR_MODEL (the SR export or run folder; default runs/demo/train, the
# `make demo` model, trained here with the SR demo's commands when missing), FORECAST_ROOT
# (runs/forecast-recipe). Every stage is an ordinary mhdsr command; rerunning resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DS_ACCELERATOR=cpu PYTHONUNBUFFERED=1
DATA=${FORECAST_DATA:-data/athenak}; DATA=${DATA%/}
OUT=${FORECAST_ROOT:-runs/forecast-recipe}
SR=${SR_MODEL:-runs/demo/train}
T0=$(date +%s)
stage() { printf '\n\033[1m[%s +%ss] %s\033[0m\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
run() { printf '$ mhdsr %s\n' "$*"; "$PY" -m mhdsr "$@"; }
torchrun2() {
    printf '$ torchrun --nproc_per_node=2 -m mhdsr %s\n' "$*"
    OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nproc_per_node=2 \
        --master_port="${MHDSR_RECIPE_PORT:-29541}" -m mhdsr "$@"
}
secs() { echo $(( $(date +%s) - $1 )); }
TIMES=()

stage "1/7 windows (0.1 orbit) of 128^2 seed 5 (train); seed 6 held out"
run shard build --config configs/shard/forecast-demo.yaml \
    "lo_runs=[$DATA/mri128_nu3e-5/seed_0005,$DATA/mri128_nu3e-5/seed_0006]" output_dir="$OUT/shards"

stage "2/7 the FNO (operator source and baseline)"
T=$(date +%s)
torchrun2 forecast train --config configs/forecast/cpu-small.yaml run_dir="$OUT/fno" \
    shards="$OUT/shards" max_steps="${FNO_STEPS:-1000}" checkpoint.every=500 log.every=100
TIMES+=("fno_train_s=$(secs "$T")")

stage "3/7 the generative forecaster (flow matching from the FNO's mean)"
T=$(date +%s)
torchrun2 forecast train --config configs/forecast/flow-cpu-small.yaml run_dir="$OUT/flow" \
    shards="$OUT/shards" forecast.operator="$OUT/fno" max_steps="${FLOW_STEPS:-1500}" \
    checkpoint.every=500 log.every=100 optim.warmup_steps=100 ema.start_step=100 ema.decay=0.995
TIMES+=("flow_train_s=$(secs "$T")")

stage "4/7 rollouts: 8 members x 40 steps (4 orbits) from seed 6 at 3, 3.5, 4 orbits; 256^2 seed 4"
R=(--config configs/forecast/rollout-demo.yaml ensemble=8 sampler.name=heun sampler.steps=4)
S6=("inputs.runs=[$DATA/mri128_nu3e-5/seed_0006]" inputs.orbit_start=3.0 inputs.orbit_end=4.0 inputs.stride=5 steps=40)
S4=("inputs.runs=[$DATA/mri256_nu3e-5/seed_0004]" inputs.orbit_start=3.0 inputs.orbit_end=4.0 inputs.stride=2 steps=10)
T=$(date +%s)
run forecast rollout "${R[@]}" checkpoint="$OUT/flow" output_dir="$OUT/outputs/rollouts" "${S6[@]}"
TIMES+=("flow_rollout_s=$(secs "$T")")
run forecast rollout "${R[@]}" checkpoint="$OUT/flow" output_dir="$OUT/outputs/rollouts" "${S4[@]}"
run forecast rollout "${R[@]}" checkpoint="$OUT/fno" output_dir="$OUT/operator" "${S6[@]}"
run forecast rollout "${R[@]}" checkpoint="$OUT/fno" output_dir="$OUT/operator" "${S4[@]}"

stage "5/7 the chain: every member of the 256^2 seed's forecast at 0.5 and 1 orbit -> 256^2"
if [ ! -e "$SR" ]; then
    run shard build --config configs/shard/demo.yaml
    torchrun2 train --config configs/train/cpu-small.yaml
fi
run sample --config configs/sample/forecast-chain.yaml checkpoint="$SR" \
    "inputs.forecasts=[$OUT/outputs/rollouts/mri256_nu3e-5__seed_0004.h5]" output_dir="$OUT/outputs/chain" progress=false

stage "6/7 evaluation per lead (persistence, linear, FNO, climatology of the train seed)"
EV=(--config configs/eval/forecast-demo.yaml "forecast.operator_rollouts=$OUT/operator/*.h5"
    "forecast.climatology.runs=[$DATA/mri128_nu3e-5/seed_0005]" forecast.climatology.orbit_start=2.5
    forecast.climatology.orbit_end=8.0 forecast.ensemble_goal_orbits=4.0 forecast.finite_orbits=4.0
    "forecast.field_leads=[1,5,10,40]" progress=false)
run eval "${EV[@]}" samples="$OUT/outputs" output_dir="$OUT/eval"

stage "7/7 NFE trade-off: 4, 8, 16 network evaluations per step (seed 6 at 3 and 3.5 orbits, 2 orbits)"
NFE_ROWS=()
for K in 2 4 8; do
    D="$OUT/nfe/heun$K"
    T=$(date +%s)
    run forecast rollout "${R[@]}" checkpoint="$OUT/flow" output_dir="$D/rollouts" sampler.steps=$K \
        "inputs.runs=[$DATA/mri128_nu3e-5/seed_0006]" inputs.orbit_start=3.0 inputs.orbit_end=3.5 inputs.stride=5 steps=20
    NFE_ROWS+=("heun$K=$(secs "$T")")
    run forecast rollout "${R[@]}" checkpoint="$OUT/fno" output_dir="$D/operator" \
        "inputs.runs=[$DATA/mri128_nu3e-5/seed_0006]" inputs.orbit_start=3.0 inputs.orbit_end=3.5 inputs.stride=5 steps=20
    run eval "${EV[@]}" "forecast.operator_rollouts=$D/operator/*.h5" forecast.ensemble_goal_orbits=2.0 \
        forecast.finite_orbits=2.0 samples="$D/rollouts" output_dir="$D/eval"
done

"$PY" benchmarks/forecast_report.py --root "$OUT" --data "$DATA" --times "${TIMES[@]}" --nfe "${NFE_ROWS[@]}" \
    --out benchmarks/forecast.md
stage "done in $(( $(date +%s) - T0 )) s -> benchmarks/forecast.md"
