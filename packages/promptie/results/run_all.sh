#!/usr/bin/env bash
# The commands behind the README's results (run from the checkout root). Checkpoints go to $RUNS
# (default /tmp/promptie-runs); each command writes its JSON result, with its own metadata, here.
set -euo pipefail
export RUNS="${RUNS:-/tmp/promptie-runs}"  # exported: result files write its value as $RUNS
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
tuned-conll04)  # the null margin chosen on dev, then the same test subset (judge only: on gold entities
  # neither the MiniLM judge nor the direct baseline uses the margin, so those rows are the untuned file's)
  uv run promptie tune-null $RUNS/conll04 --limit 20 --config $C/conll04.toml --out $R/conll04-tune-dev20.json
  uv run promptie eval $RUNS/conll04 --split test --limit 80 --relations judge --config $C/conll04.toml --out $R/conll04-test80-tuned.json ;;
tuned-phee)
  uv run promptie tune-null $RUNS/phee --limit 20 --config $C/phee.toml --out $R/phee-tune-dev20.json
  uv run promptie eval $RUNS/phee --split test --limit 40 --config $C/phee.toml --out $R/phee-test40-tuned.json ;;
tuned-casie|tuned-casie-*)  # all four, or one: tuned-casie-5pct-composable
  runs=${1#tuned-}; [ "$runs" = casie ] && runs="casie-1pct-specific casie-1pct-composable casie-5pct-specific casie-5pct-composable"
  for run in $runs; do
    uv run promptie tune-null $RUNS/$run --limit 20 --config $C/$run.toml --out $R/$run-tune-dev20.json
    uv run promptie eval $RUNS/$run --split test --limit 30 --config $C/$run.toml --out $R/$run-test30-tuned.json
  done ;;
esac
