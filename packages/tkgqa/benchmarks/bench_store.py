"""The numpy and DuckDB fact stores side by side on a synthetic temporal KG: build, disk, memory, search latency.

Run: uv run python packages/tkgqa/benchmarks/bench_store.py --facts 1000000 --out packages/tkgqa/results/bench_store_1m.json

A synthetic KG (`tkgqa.synthetic.write_large_tsv`: heavy-tailed entities and relations, 20 years of days) is
written as a TSV; each store is then built in its own process (numpy: `load_tsv`; DuckDB: `tkgqa import`'s
`import_tsv`), so peak RSS is that store's. Then `vector_search` runs over each store with the same calls per
filter combination (entities and relations drawn from random facts, so hubs come up as often as in the data)
and the same random unit fact vectors (dim 64, in memory): the latency is the store's filtering plus scoring
the matching rows, the vector part equal for both. Every call's hits are compared across the stores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

CASES = {  # filter combination -> the vector_search arguments it uses (E: entity, R: relation, window: a month)
    "none": {},
    "window": {"start_date": "M", "end_date": "M"},
    "relation": {"relation_filter": "R"},
    "entity": {"entity_filter_name": "E"},
    "entity front": {"entity_filter_name": "E", "entity_filter_position": "front"},
    "relation + window": {"relation_filter": "R", "start_date": "M", "end_date": "M"},
    "entity + window": {"entity_filter_name": "E", "start_date": "M", "end_date": "M"},
    "entity + relation": {"entity_filter_name": "E", "relation_filter": "R"},
    "entity + relation + window": {"entity_filter_name": "E", "relation_filter": "R", "start_date": "M", "end_date": "M"},
    "entity, time_asc": {"entity_filter_name": "E", "sort": "time_asc"},
}  # fmt: skip
DIM = 64


class RandomEncoder:
    """Unit vectors seeded by the text: a stand-in encoder so the vector part costs the same for both stores."""

    name, dim = f"random-{DIM}", DIM

    def encode(self, texts, *, batch_size=256, progress=None):
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _calls(store, per_case: int, seed: int) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, template in CASES.items():
        facts = store.facts(rng.integers(0, len(store), per_case))
        calls = []
        for i, f in enumerate(facts):
            call = {"query": f"event {i} {name}", "top_k": 10}
            for k, v in template.items():
                call[k] = {"E": f.head, "R": f.relation, "M": f.date[:7]}.get(v, v)
            calls.append(call)
        out[name] = calls
    return out


def run_phase(store_kind: str, tsv: Path, db: Path, per_case: int, seed: int) -> dict:
    """Build one store, then time every call; the dict this process prints as JSON."""
    from tkgqa.index import FactIndex
    from tkgqa.search import SearchTool

    base = _rss_mib()
    t0 = time.perf_counter()
    if store_kind == "numpy":
        from tkgqa.loaders import load_tsv

        store = load_tsv(tsv)
    else:
        from tkgqa.duckstore import DuckDBStore
        from tkgqa.importer import import_tsv

        import_tsv(tsv, db, restart=True)
        store = DuckDBStore(db)
    build = time.perf_counter() - t0
    built_rss = _rss_mib()
    vecs = np.random.default_rng(seed).standard_normal((len(store), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    tool = SearchTool(store, FactIndex(vecs.astype(np.float16), encoder_name=RandomEncoder.name,
                                       kg_digest=store.digest), RandomEncoder())  # fmt: skip
    result = {"build_seconds": round(build, 2), "rss_before_build_mib": round(base), "peak_rss_after_build_mib":
              round(built_rss), "disk_bytes": db.stat().st_size if store_kind == "duckdb" else None, "cases": {}}  # fmt: skip
    hits = {}
    for name, calls in _calls(store, per_case, seed).items():
        for c in calls[:2]:
            tool.search(**c)  # warm: the query vectors are cached, DuckDB's indexes loaded
        ms, matched = [], []
        for c in calls:
            t = time.perf_counter()
            got = tool.search(**c)
            ms.append((time.perf_counter() - t) * 1e3)
            hits.setdefault(name, []).append([h.row for h in got])
            matched.append(len(got))
        result["cases"][name] = {"calls": len(calls), "p50_ms": round(float(np.percentile(ms, 50)), 2),
                                 "p99_ms": round(float(np.percentile(ms, 99)), 2),
                                 "mean_hits": round(float(np.mean(matched)), 1)}  # fmt: skip
    result["hits_crc32"] = zlib.crc32(json.dumps(hits, sort_keys=True).encode())
    result["peak_rss_mib"] = round(_rss_mib())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", type=int, default=1_000_000)
    ap.add_argument("--per-case", type=int, default=50, help="calls per filter combination")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the TSV and the database go (a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--phase", choices=("numpy", "duckdb"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tsv", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.facts < 1 or args.per_case < 1:
        ap.error("--facts and --per-case must be >= 1")
    if args.phase:
        print(
            json.dumps(run_phase(args.phase, args.tsv, args.workdir / "kg.duckdb", args.per_case, args.seed))
        )
        return
    from tkgqa.synthetic import write_large_tsv

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        tsv = work / "facts.tsv"
        t0 = time.perf_counter()
        write_large_tsv(tsv, args.facts, seed=args.seed)
        report = {"meta": {"command": "python packages/tkgqa/benchmarks/bench_store.py " + " ".join(
            a for a in sys.argv[1:]), "facts": args.facts, "tsv_bytes": tsv.stat().st_size,
            "tsv_seconds": round(time.perf_counter() - t0, 1), "per_case": args.per_case, "vector_dim": DIM,
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "cases": CASES}}  # fmt: skip
        for kind in ("numpy", "duckdb"):
            cmd = [sys.executable, __file__, "--phase", kind, "--tsv", str(tsv), "--workdir", str(work),
                   "--per-case", str(args.per_case), "--seed", str(args.seed), "--facts", str(args.facts)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                report[kind] = {"failed": proc.stderr.strip().splitlines()[-1:]}
            else:
                report[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(kind, json.dumps(report[kind]), flush=True)
    if "hits_crc32" in report.get("numpy", {}) and "hits_crc32" in report.get("duckdb", {}):
        report["same_hits"] = report["numpy"]["hits_crc32"] == report["duckdb"]["hits_crc32"]
    if args.out:
        from effcore.io import write_json

        write_json(args.out, report)


if __name__ == "__main__":
    main()
