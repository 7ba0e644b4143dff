#!/usr/bin/env bash
# The commands behind the README's results (run from the checkout root). Checkpoints go to $RUNS
# (default /tmp/promptie-runs); each command writes its JSON result, with its own metadata, here.
set -euo pipefail
RUNS="${RUNS:-/tmp/promptie-runs}"
R=packages/promptie/results
C=packages/promptie/configs
case "${1:-all}" in
conll04)
  uv run promptie train --data conll04 --config $C/conll04.toml --out-dir $RUNS/conll04 --out $R/conll04-train.json
  uv run promptie eval $RUNS/conll04 --split test --limit 80 --relations judge,direct --config $C/conll04.toml --out $R/conll04-test80.json ;;
phee)
  uv run promptie train --data phee --config $C/phee.toml --out-dir $RUNS/phee --out $R/phee-train.json
  uv run promptie eval $RUNS/phee --split test --limit 40 --config $C/phee.toml --out $R/phee-test40.json ;;
casie-1pct|casie-5pct|casie-5pct-specific|casie-5pct-composable)
  pct=${1#casie-}; pct=${pct%%pct*}; modes=${1#casie-*pct}; modes=${modes#-}
  for mode in ${modes:-specific composable}; do
    uv run promptie train --data casie --config $C/casie-${pct}pct-$mode.toml --out-dir $RUNS/casie-${pct}pct-$mode --out $R/casie-${pct}pct-$mode-train.json
    uv run promptie eval $RUNS/casie-${pct}pct-$mode --split test --limit 30 --config $C/casie-${pct}pct-$mode.toml --out $R/casie-${pct}pct-$mode-test30.json
  done ;;
esac
