"""Lines of code per workspace package (non-blank, non-comment), split into src / tests / benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("src", "tests", "benchmarks")


def count_lines(path: Path) -> int:
    return sum(
        1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#")
    )


def table() -> list[dict]:
    rows = []
    dirs = [*sorted((ROOT / "packages").iterdir()), ROOT / "integration", ROOT / "tools"]
    for pkg in dirs:
        if not pkg.is_dir():
            continue
        row: dict = {"package": pkg.name}
        if pkg.parent.name == "packages":
            for part in PARTS:
                row[part] = sum(count_lines(p) for p in (pkg / part).rglob("*.py"))
        else:
            row |= {part: 0 for part in PARTS}
            part = "tests" if pkg.name == "integration" else "src"
            row[part] = sum(count_lines(p) for p in pkg.rglob("*.py"))
        row["total"] = sum(row[p] for p in PARTS)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'package':<14}{'src':>8}{'tests':>8}{'bench':>8}{'total':>8}")
    for r in rows:
        print(f"{r['package']:<14}{r['src']:>8}{r['tests']:>8}{r['benchmarks']:>8}{r['total']:>8}")
    print(
        f"{'all':<14}{sum(r['src'] for r in rows):>8}{sum(r['tests'] for r in rows):>8}"
        f"{sum(r['benchmarks'] for r in rows):>8}{sum(r['total'] for r in rows):>8}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
