#!/usr/bin/env bash
# The commands behind the issue-17 part B result files (GenTKGQA stage 2), run from the repository root.
# RUNS is a scratch folder outside the checkout (checkpoints and question files are not committed).
# Each result JSON has a `meta` block (the command, the machine, the KG digest, the wall time).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
RUNS=${RUNS:-/tmp/gen_runs}
mkdir -p "$RUNS"
R=packages/tkgqa/results
step=${1:-all}
if [[ $step == all || $step == pretrain ]]; then
  for k in icews14 multitq; do
    uv run tkgqa gen-pretrain --kg $k --epochs 20 --max-minutes 8 --checkpoint "$RUNS/${k}_tgnn.pt" \
      --out $R/gen_pretrain_${k}.json
  done
fi
if [[ $step == all || $step == questions ]]; then
  uv run tkgqa gen-questions --kg multitq -n 8000 --against all --questions-out "$RUNS/multitq_q.jsonl" \
    --out $R/gen_questions_multitq.json
  uv run tkgqa gen-questions --kg icews14 -n 3000 --against all --questions-out "$RUNS/icews14_q.jsonl" \
    --out $R/gen_questions_icews14.json
fi
if [[ $step == all || $step == train ]]; then  # the reduced recipe run here (the default is --steps 400 --batch 4)
  uv run tkgqa gen-train --kg multitq --gnn "$RUNS/multitq_tgnn.pt" --questions "$RUNS/multitq_q.jsonl" -n 200 \
    --steps 60 --batch 2 --save-every 10 --max-minutes 25 --checkpoint "$RUNS/multitq_gen.pt" \
    --out $R/gen_train_multitq_reduced.json
fi
if [[ $step == all || $step == eval ]]; then
  for v in full no_retrieval random_subgraph no_gnn no_time; do
    uv run tkgqa eval --method gentkgqa --gnn "$RUNS/multitq_tgnn.pt" --generator "$RUNS/multitq_gen.pt" \
      --split dev -n 20 --variant $v --out $R/gen_eval_multitq_dev20_${v}.json
  done
fi
if [[ $step == all || $step == eval60 ]]; then  # a larger sample, and the planner (with AT2QA's published answers) on it
  uv run tkgqa eval --split dev -n 60 --no-rows --out $R/gen_eval_multitq_dev60_planner.json
  for v in full no_retrieval random_subgraph no_gnn no_time; do
    uv run tkgqa eval --method gentkgqa --gnn "$RUNS/multitq_tgnn.pt" --generator "$RUNS/multitq_gen.pt" \
      --split dev -n 60 --variant $v --out $R/gen_eval_multitq_dev60_${v}.json
  done
fi
