"""Recall@10 of the approximate index (FAISS HNSW) against brute force on MultiTQ, per filter combination.

Run: uv run python packages/tkgqa/benchmarks/bench_ann.py --queries 100 --out packages/tkgqa/results/ann_recall_multitq.json

Needs the cached MiniLM index of MultiTQ (`tkgqa index`). The graph is built in a temporary folder (not in
the shared cache). Queries are MultiTQ dev questions (seeded sample); filters are drawn from random facts
as in bench_store.py. Two settings: the graph search forced on every call (`exact_below=0`: the graph's
own recall under filters) and the shipped one (filters leaving at most `EXACT_BELOW` rows scored exactly).
A hit tied with the 10th exact score counts as recalled.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    "none": {},
    "window (month)": {"start_date": "M", "end_date": "M"},
    "window (year)": {"start_date": "Y", "end_date": "Y"},
    "relation": {"relation_filter": "R"},
    "entity": {"entity_filter_name": "E"},
    "entity + relation": {"entity_filter_name": "E", "relation_filter": "R"},
    "compat, none": {"compat": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--graph-dir", type=Path, default=None, help="keep the graph here between runs (a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.queries < 1:
        ap.error("--queries must be >= 1")
    import torch

    from tkgqa.ann import EXACT_BELOW, load_or_build_ann
    from tkgqa.index import FactIndex
    from tkgqa.questions import load_questions
    from tkgqa.runtime import open_runtime
    from tkgqa.search import SearchTool

    torch.set_num_threads(1)
    rt = open_runtime("multitq")
    rng = np.random.default_rng(args.seed)
    questions = load_questions(split="dev")
    texts = [questions[i].question for i in rng.choice(len(questions), args.queries, replace=False)]
    facts = rt.store.facts(rng.integers(0, len(rt.store), args.queries))
    report = {"meta": {"command": "python packages/tkgqa/benchmarks/bench_ann.py " + " ".join(sys.argv[1:]),
                       "facts": len(rt.store), "encoder": rt.index.encoder_name, "queries": args.queries,
                       "hnsw": {"M": 32, "efConstruction": 80}, "exact_below": EXACT_BELOW}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        idx = FactIndex(
            rt.index.vectors, encoder_name=rt.index.encoder_name, kg_digest=rt.store.digest, path=Path(tmp)
        )
        t0 = time.perf_counter()
        ann = load_or_build_ann(idx)
        report["meta"]["build_or_load_seconds"] = round(time.perf_counter() - t0, 1)
        report["meta"]["hnsw"]["efSearch"] = ann.ef_search
        report["meta"]["graph_bytes"] = ann.path.stat().st_size
        for setting, exact_below in (("graph on every call", 0), ("shipped", EXACT_BELOW)):
            ann.exact_below = exact_below
            rows = {}
            for name, template in CASES.items():
                mode = "compat" if template.get("compat") else "default"
                exact = SearchTool(rt.store, rt.index, rt.encoder, mode=mode)
                approx = SearchTool(rt.store, rt.index, rt.encoder, mode=mode, ann=ann)
                approx._qcache = exact._qcache  # one encoding per query for both tools
                recall, ms_exact, ms_approx = [], [], []
                for text, f in zip(texts, facts, strict=True):
                    call = {"query": text}
                    for k, v in template.items():
                        if k != "compat":
                            call[k] = {"E": f.head, "R": f.relation, "M": f.date[:7], "Y": f.date[:4]}[v]
                    if mode == "compat" and "entity_filter_name" in call:
                        call["entity_filter_position"] = "front"
                    exact.search(**call)  # warm the query cache
                    t = time.perf_counter()
                    want = exact.search(**call)
                    ms_exact.append((time.perf_counter() - t) * 1e3)
                    t = time.perf_counter()
                    got = approx.search(**call)
                    ms_approx.append((time.perf_counter() - t) * 1e3)
                    floor = min((h.score for h in want), default=0.0) - 1e-6
                    recall.append(sum(h.score >= floor for h in got[: len(want)]) / max(len(want), 1))
                rows[name] = {"recall_at_10": round(float(np.mean(recall)), 4), "min": round(float(np.min(recall)), 2),
                              "exact_p50_ms": round(float(np.median(ms_exact)), 1),
                              "approx_p50_ms": round(float(np.median(ms_approx)), 1)}  # fmt: skip
                print(setting, name, rows[name], flush=True)
            report[setting] = rows
    if args.out:
        from effcore.io import write_json

        write_json(args.out, report)


if __name__ == "__main__":
    main()
