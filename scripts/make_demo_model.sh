#!/usr/bin/env bash
# Rebuilds the committed demo model, saved_models/demo/1 (see saved_models/README.md):
# 120 procedural chest phantoms at 64^3 calibrated to real chest CT (docs/phantoms.md; X2CT
# cone-beam DRRs), the shipped 'demo' experiment (512-ProjInj, base_filters 8, mixed bfloat16)
# slimmed to max_filters 16 and cut to 600 steps,
# then exported with 'xprospect export'. About 10 minutes of training on 2 idle CPU cores
# (21 minutes of wall time when it was made, on cores shared with other jobs).
#
# Usage: scripts/make_demo_model.sh            (WORK=build/demo_model OUT=saved_models)
# Versions are never overwritten: remove saved_models/demo/1 first to remake it. Training data
# and the run folder stay under WORK (ignored by git); re-running resumes what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

XP=${XP:-.venv/bin/xprospect}
WORK=${WORK:-build/demo_model}
OUT=${OUT:-saved_models}

if [ -e "$OUT/demo/1" ]; then
    echo "make_demo_model: $OUT/demo/1 exists (versions are never overwritten); remove it first" >&2
    exit 2
fi

"$XP" prepare --phantoms 120 --size 64 --val-fraction 0.1 --test-fraction 0.1 --seed 0 \
    --phantom-calibration real_ct --output "$WORK/data"
"$XP" train --config demo --data "$WORK/data" --output-dir "$WORK/run" \
    --set training.steps=600 --set training.validation_every=150 \
    --set model.overrides.max_filters=16 --no-progress
"$XP" export "$WORK/run" --name demo --version 1 --output-dir "$OUT" --serving-root /models
du -sh "$OUT/demo/1"
