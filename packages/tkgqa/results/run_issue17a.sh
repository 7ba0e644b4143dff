#!/usr/bin/env bash
# The commands behind the issue-17 part A result files (GenTKGQA stage 1 and abstention), run from the
# repository root. Each writes its JSON with a `meta` block (the command, the machine, the KG digest).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
step=${1:-all}
if [[ $step == all || $step == retrieval ]]; then
  OMP_NUM_THREADS=1 uv run tkgqa eval --retrieval --split dev --no-rows \
    --out packages/tkgqa/results/multitq_dev_retrieval_rules.json
fi
