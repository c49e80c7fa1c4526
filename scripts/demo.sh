#!/usr/bin/env bash
# `make demo`: the main job end to end on the bundled real AthenaK data (data/athenak).
#   1. shards   configs/shard/demo.yaml      256^2 seeds split by seed: train 0,2 / val 3 / test 1;
#                                            native 128^2 seeds 2,3 as held-out
#   2. train    configs/train/cpu-small.yaml DeepSpeed ZeRO-1, fp32 on CPU, EMA, checkpoints, TensorBoard
#   3. sample   configs/sample/demo.yaml     Heun ODE and Euler-Maruyama SDE, ensemble of 2,
#                                            on the test split and on every held-out 128^2 seed
#   4. eval     configs/eval/demo.yaml       metrics.json, figures, report.md, summary table
# Every stage is an ordinary `mhdsr` command with an ordinary config; the overrides used here are
# printed before each command runs. Rerunning skips finished work (shards no-op, training resumes,
# complete HDF5 files are kept); `make clean` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DS_ACCELERATOR=cpu PYTHONUNBUFFERED=1
T0=$(date +%s)
stage() { printf '\n\033[1m[%s +%ss] %s\033[0m\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
run() { printf '$ mhdsr %s\n' "$*"; "$PY" -m mhdsr "$@"; }

stage "1/4 shards from the bundled real AthenaK runs"
run shard build --config configs/shard/demo.yaml
run shard inspect runs/demo/shards

stage "2/4 train cpu-small (flow matching, DeepSpeed ZeRO-1, fp32 on CPU, 2 gloo ranks)"
printf '$ torchrun --nproc_per_node=2 -m mhdsr train --config configs/train/cpu-small.yaml\n'
OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nproc_per_node=2 --master_port="${MHDSR_DEMO_PORT:-29517}" \
    -m mhdsr train --config configs/train/cpu-small.yaml

stage "3/4 bulk inference: ODE (Heun) and SDE (Euler-Maruyama), test split and held-out native 128^2 seeds"
HELDOUT=(inputs.kind=runs 'inputs.runs=["data/athenak/mri128_nu3e-5/seed_000[23]"]' inputs.snap_start=6 inputs.snap_end=12 inputs.stride=3)
SDE=(sampler.name=euler_maruyama sampler.steps=8)
run sample --config configs/sample/demo.yaml output_dir=runs/demo/samples/ode-test  # (the config's default)
run sample --config configs/sample/demo.yaml "${SDE[@]}" output_dir=runs/demo/samples/sde-test
run sample --config configs/sample/demo.yaml "${HELDOUT[@]}" output_dir=runs/demo/samples/ode-heldout
run sample --config configs/sample/demo.yaml "${HELDOUT[@]}" "${SDE[@]}" output_dir=runs/demo/samples/sde-heldout

stage "4/4 evaluation against truth and baselines"
run eval --config configs/eval/demo.yaml

stage "done in $(( $(date +%s) - T0 )) s"
echo "Summary (generated band = k in [64, 128] on the 256^2 grid; error = mean |log10 E_model/E_true|, 0 is perfect):"
cat runs/demo/eval/summary.md
"$PY" - <<'PYCHECK'
import json
m = json.load(open("runs/demo/eval/metrics.json"))
print("Automatic reading of the test split (model vs every baseline, incl. the phase-blind spectral-noise):")
for group, lines in m["readings"].items():
    if group != "test":
        continue
    for kind in ("pixel", "ensemble", "spectral", "coherence", "pdf", "goal"):
        for line in lines.get(kind, []):
            if any(k in line for k in ("NRMSE ens. mean", "CRPS", "generated err", "transition coh", "jz PDF", "spread/skill")):
                print("  -", line.replace("**", ""))
PYCHECK
echo
cat <<EOM
  shards       runs/demo/shards          (mhdsr shard inspect runs/demo/shards --verify)
  run folder   runs/demo/train           (config.yaml, log.txt, checkpoints/, export/)
  TensorBoard  .venv/bin/tensorboard --logdir runs/demo/train/tb
  samples      runs/demo/samples/{ode,sde}-{test,heldout}/*.h5
  report       runs/demo/eval/report.md  (metrics.json, figures/)
EOM
