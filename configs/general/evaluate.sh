#!/bin/bash
# Held-out evaluation of a model of several instruments (README "General models"): per target
# instrument, a tau_init sweep on O'Neill's tunes (FluidR3) picks the operating point, then
# `compare` scores warm init there next to DDIB, plain generation and the true target on each
# held-out set, against real clips of the same collection's other pieces (same soundfont).
# The sampler is the product's default (DPM-Solver++(2M), 6 steps from sigma_start).
# Usage: [SETS="oneills-fluidr3 ..."] configs/general/evaluate.sh MODEL_URI DATA [LIMIT] [TARGETS...]
#   DATA holds heldout/<collection>-<soundfont>/clips (configs/general/heldout-*.json); results
#   land in DATA/eval (sweeps/, compare/); re-runs reuse finished sweeps and comparisons.
set -euo pipefail
MODEL=${1:?model URI, e.g. shipped:instruments-latent}
DATA=${2:?data root holding heldout/}
LIMIT=${3:-16}
shift $(( $# < 3 ? $# : 3 ))
TARGETS=${*:-flute clarinet oboe trumpet cello violin}
R=${REINSTRUMENT:-.venv/bin/reinstrument}
OUT=${EVAL_OUT:-$DATA/eval}   # EVAL_OUT: another folder, e.g. to score a second model on the same sets
for target in $TARGETS; do
  guide=violin; [ "$target" = violin ] && guide=flute
  H=$DATA/heldout/oneills-fluidr3/clips
  $R sweep --inputs "$H" --model "$MODEL" --target "$target" --domain "$guide" --split test --limit "$LIMIT" \
    --reference "$H" --reference-split train --t-init 0.8 --t-init 0.7 --t-init 0.6 --t-init 0.5 \
    --lam 0 --lam 1 --actors 0 --out "$OUT" --no-prefect
  for set in ${SETS:-oneills-fluidr3 trecento-fluidr3 oneills-gmbank trecento-gmbank}; do
    H=$DATA/heldout/$set/clips
    $R compare --inputs "$H" --model "$MODEL" --target "$target" --task timbre --timbre-domain "$guide" \
      --source-model "timbre=$MODEL" --neighbour 0 --split test --limit "$LIMIT" --reference "$H" \
      --actors 0 --out "$OUT" --no-prefect
  done
done
