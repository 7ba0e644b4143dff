"""effml's main job: run every installed package's headline demo on embedded defaults, then a summary.

Each package registers ``demo(*, quick: bool) -> list[dict]`` under the ``effml.tour`` entry-point
group; rows carry package, step, result and seconds. Usage: ``uv run python tools/tour.py [--quick]
[--only PKG ...] [--out tour.json]``. Exit code 1 when any demo failed (the others still run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from rich.console import Console
from rich.table import Table

ORDER = ["effcore", "allocmoe", "grass", "paradyse", "merak", "delta", "tfdmnet", "promptie", "tkgqa"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller inputs: a smoke run in about a minute")
    parser.add_argument("--only", nargs="*", default=None, help="run only these packages' demos")
    parser.add_argument("--out", type=Path, default=None, help="write the summary rows as JSON")
    args = parser.parse_args()
    console = Console()
    demos = {ep.name: ep for ep in entry_points(group="effml.tour")}
    names = sorted(demos, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    if args.only:
        unknown = set(args.only) - set(demos)
        if unknown:
            console.print(
                f"[bold red]error:[/] no tour demo for {', '.join(sorted(unknown))} (have: {', '.join(names)})"
            )
            return 2
        names = [n for n in names if n in args.only]
    rows, failed = [], []
    t0 = time.perf_counter()
    for name in names:
        console.rule(f"[bold]{name}")
        try:
            rows += demos[name].load()(quick=args.quick)
        except Exception as err:  # one failing demo must not hide the others
            failed.append(name)
            console.print(f"[bold red]{name} failed:[/] {err}")
            traceback.print_exc()
            rows.append({"package": name, "step": "demo", "result": f"FAILED: {err}", "seconds": 0.0})
    table = Table(title=f"effml tour ({time.perf_counter() - t0:.0f} s)", header_style="bold cyan")
    for col, justify in (("package", "left"), ("step", "left"), ("result", "left"), ("seconds", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["package"], r["step"], str(r["result"]), f"{r['seconds']:.1f}")
    console.print(table)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
