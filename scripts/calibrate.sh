#!/usr/bin/env bash
# Calibrate the sampler's per-channel source temperature on the VALIDATION split
# (src/mhdsr/eval/calibration.py): sample val -> mhdsr eval -> T_c <- T_c / (spread/skill)_c,
# ROUNDS times, then ship the evaluated round closest to spread/skill = 1 on every channel.
#
#   bash scripts/calibrate.sh CHECKPOINT SHARDS OUT [sampler overrides ...]
#   e.g. bash scripts/calibrate.sh runs/demo/train runs/demo/shards runs/demo/calibration sampler.name=heun sampler.steps=4
#
# Variables: ROUNDS (3), ENSEMBLE (4), SPLIT (val; never the test split), PY.
# Writes OUT/calibration.json (the chosen temperature, every round's spread/skill) and prints the
# override to use: sampler.temperature=[...]. Every stage is an ordinary mhdsr command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DS_ACCELERATOR=cpu PYTHONUNBUFFERED=1
[ $# -ge 3 ] || { echo "usage: $0 CHECKPOINT SHARDS OUT [sampler overrides ...]" >&2; exit 2; }
CKPT=$1 SHARDS=$2 OUT=${3%/}; shift 3
SPLIT=${SPLIT:-val}
[ "$SPLIT" != test ] || { echo "error: calibrate on the validation split, never on test" >&2; exit 2; }
ROUNDS=${ROUNDS:-3} ENSEMBLE=${ENSEMBLE:-4}
T="[1.0]"
RECS=()
for r in $(seq 1 "$ROUNDS"); do
  D=$OUT/round$r
  echo "[calibrate] round $r/$ROUNDS: sampler.temperature=$T"
  "$PY" -m mhdsr sample --config configs/sample/demo.yaml checkpoint="$CKPT" shards="$SHARDS" \
      inputs.split="$SPLIT" ensemble="$ENSEMBLE" progress=false "$@" "sampler.temperature=$T" output_dir="$D/samples"
  "$PY" -m mhdsr eval --config configs/eval/demo.yaml samples="$D/samples" shards="$SHARDS" \
      output_dir="$D/eval" "baselines=[spline]" max_panels=0 progress=false > "$D/eval.log"
  NEXT=$("$PY" -m mhdsr.eval.calibration --metrics "$D/eval/metrics.json" --group "$SPLIT" \
      --temperature "$T" --out "$D/calibration.json")
  RECS+=("$D/calibration.json")
  if "$PY" -c "import json,sys; sys.exit(0 if json.load(open('$D/calibration.json'))['converged'] else 1)"; then
    echo "[calibrate] converged at round $r"; break
  fi
  T=${NEXT#sampler.temperature=}
done
"$PY" -m mhdsr.eval.calibration --out "$OUT/calibration.json" --select "${RECS[@]}"
