#!/usr/bin/env bash
# Rebuilds the committed demo model, saved_models/demo/1 (see saved_models/README.md): the run of
# 'xprospect demo' itself (what 'make demo' trains: demo.yaml, 512-ProjInj, base_filters 8,
# mixed bfloat16, 800 steps on 400 chest phantoms at 64^3 calibrated to real chest CT), exported
# with 'xprospect export'. About 10-15 minutes on 2 idle CPU cores (dataset ~2 min, training
# ~8-12, scoring ~1).
#
# Usage: scripts/make_demo_model.sh            (WORK=build/demo_model OUT=saved_models)
# Versions are never overwritten: remove saved_models/demo/1 first to remake it. The demo folder
# (data, run, report) stays under WORK (ignored by git); re-running resumes what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

XP=${XP:-.venv/bin/xprospect}
WORK=${WORK:-build/demo_model}
OUT=${OUT:-saved_models}

if [ -e "$OUT/demo/1" ]; then
    echo "make_demo_model: $OUT/demo/1 exists (versions are never overwritten); remove it first" >&2
    exit 2
fi

"$XP" demo --output "$WORK"
"$XP" export "$WORK/run" --name demo --version 1 --output-dir "$OUT" --serving-root /models
du -sh "$OUT/demo/1"
