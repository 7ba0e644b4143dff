"""Choose the abstention threshold on MultiTQ dev: the relation score below which no KG relation matches.

Run: uv run python packages/tkgqa/benchmarks/calibrate_abstention.py --split dev --rate 0.005 \
  --out packages/tkgqa/results/abstention_calibration.json

Every dev question is judged before any search (``Planner.judge``: entity linking, unlinked names, time
against the KG's span, the best relation's score) with the relation check off. The threshold is the
largest multiple of 0.01 at or below the ``rate`` quantile of the dev questions' best-relation scores, so at
most that share of in-scope (dev) questions abstain on it. The out-of-scope set is *not* used here (it is
the measurement, `tkgqa abstention`). Also reports how many dev questions the entity and time checks flag.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--split", default="dev", choices=("dev",), help="labelled questions to choose on (never test)"
    )
    ap.add_argument(
        "--rate", type=float, default=0.005, help="share of dev questions the relation check may flag"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (more than the free cores slows MiniLM)"
    )
    ap.add_argument(
        "--encoder", default="minilm", choices=("minilm", "hash"), help="the relation scorer's encoder"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not 0 < args.rate < 0.2:
        raise SystemExit("--rate must be in (0, 0.2)")
    import torch

    from tkgqa.abstain import AbstentionConfig
    from tkgqa.embed import get_encoder
    from tkgqa.loaders import load_kg
    from tkgqa.planner import Planner
    from tkgqa.questions import load_questions
    from tkgqa.relations import RelationScorer
    from tkgqa.store import kg_days

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    kg = load_kg("multitq")
    scorer = RelationScorer(kg.relations.names, get_encoder(args.encoder))
    planner = Planner(kg.entities.names, scorer, kg_days=kg_days(kg),
                      abstention=AbstentionConfig(min_relation_score=-1.0))  # fmt: skip
    questions = load_questions(split=args.split)
    kinds: Counter[str] = Counter()
    scores, flagged = [], []
    for q in questions:
        judged = planner.judge(q.question)
        if judged.abstention is not None:
            kinds[judged.abstention.kind] += 1
            flagged.append({"quid": q.quid, "question": q.question, "reason": judged.abstention.reason})
            continue
        scores.append((judged.relation_score, q.quid, q.question, judged.phrase, judged.relation))
    values = np.array([s for s, *_ in scores])
    cut = float(np.quantile(values, args.rate))
    threshold = math.floor(cut * 100) / 100
    lowest = sorted(scores)[:15]
    report = {
        "split": args.split,
        "encoder": scorer.encoder.name,
        "questions": len(questions),
        "flagged_before_relation_check": dict(kinds),
        "flagged_examples": flagged[:20],
        "relation_score_quantiles": {
            str(p): round(float(np.quantile(values, p)), 4) for p in (0.001, 0.005, 0.01, 0.05, 0.5)
        },
        "rate": args.rate,
        "min_relation_score": threshold,
        "dev_flagged_by_relation": int((values < threshold).sum()),
        "lowest": [
            {"score": round(s, 4), "quid": i, "question": t, "phrase": ph, "relation": r}
            for s, i, t, ph, r in lowest
        ],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": "python packages/tkgqa/benchmarks/calibrate_abstention.py --split "
        f"{args.split} --rate {args.rate} --encoder {args.encoder}"
        + (f" --out {args.out}" if args.out else ""),
    }
    print(f"min_relation_score = {threshold} (the {args.rate} quantile is {cut:.4f}); dev flagged by relation: "
          f"{report['dev_flagged_by_relation']}, by entity/time: {dict(kinds)} of {len(questions)}")  # fmt: skip
    if args.out:
        from effcore.io import write_json

        write_json(args.out, report)


if __name__ == "__main__":
    main()
