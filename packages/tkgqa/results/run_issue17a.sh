#!/usr/bin/env bash
# The commands behind the issue-17 part A result files (GenTKGQA stage 1 and abstention), run from the
# repository root. Each writes its JSON with the command that made it (`meta`: also the machine and the KG digest).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
step=${1:-all}
if [[ $step == all || $step == retrieval ]]; then
  OMP_NUM_THREADS=1 uv run tkgqa eval --retrieval --split dev --no-rows \
    --out packages/tkgqa/results/multitq_dev_retrieval_rules.json
fi
if [[ $step == all || $step == calibrate ]]; then  # the abstention threshold, chosen on dev (never test)
  OMP_NUM_THREADS=1 uv run python packages/tkgqa/benchmarks/calibrate_abstention.py --split dev --rate 0.005 \
    --out packages/tkgqa/results/abstention_calibration.json
  OMP_NUM_THREADS=1 uv run python packages/tkgqa/benchmarks/calibrate_abstention.py --split dev --rate 0.005 \
    --encoder hash --out packages/tkgqa/results/abstention_calibration_hash.json
fi
if [[ $step == all || $step == abstention ]]; then  # the bundled 64 out-of-scope questions
  OMP_NUM_THREADS=1 uv run tkgqa abstention --out packages/tkgqa/results/multitq_out_of_scope_planner.json
fi
if [[ $step == all || $step == cost ]]; then  # dev Hits@1 without (strict) and with (strict_abstaining) abstention
  OMP_NUM_THREADS=1 uv run tkgqa eval --split dev -n 2000 --seed 0 --no-abstain --no-rows \
    --out packages/tkgqa/results/multitq_dev2000_planner_abstention.json
fi
