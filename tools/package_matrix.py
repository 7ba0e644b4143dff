"""Prove every workspace package installs alone and works with only its declared dependencies.

For each package: build its wheel (and the wheels of the workspace packages it declares), create a
clean virtual environment, install exactly the locked closure of its declared dependencies
(``uv export --package``) plus the test tools, then run its console script's ``--help`` and its own
tests against the installed wheel (not the source tree). A package that imports a sibling it does not
declare fails here. Usage: ``uv run python tools/package_matrix.py [PKG ...] [--pytest-args "..."]``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)


def export(pkg: str, *extra: str, workspace: bool = False) -> list[str]:
    cmd = ["uv", "export", "--package", pkg, "--frozen", "--no-dev", "--no-hashes", "--no-header", *extra]
    if not workspace:
        cmd.append("--no-emit-workspace")
    out = sh(cmd, capture_output=True, cwd=ROOT).stdout
    return [ln for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def run_package(pkg: str, dist: Path, work: Path, pytest_args: list[str]) -> float:
    t0 = time.perf_counter()
    members = [ln.split("/")[-1] for ln in export(pkg, workspace=True) if ln.startswith("-e ./packages/")]
    reqs = export(pkg)
    tools = sorted(set(export("effcore", "--extra", "testing")) - set(export("effcore")))
    venv = work / f"venv-{pkg}"
    sh(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)])
    req_file = work / f"{pkg}-requirements.txt"
    req_file.write_text("\n".join(reqs + tools) + "\n")
    wheels = [str(next(dist.glob(f"{m}-*.whl"))) for m in members]
    py = str(venv / "bin" / "python")
    sh(["uv", "pip", "install", "--quiet", "--python", py, "--no-deps", "-r", str(req_file), *wheels])
    sh([str(venv / "bin" / pkg), "--help"], capture_output=True)
    tests = ROOT / "packages" / pkg / "tests"
    if tests.is_dir():
        rc = subprocess.run(
            [py, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider", *pytest_args], cwd=ROOT
        )
        if rc.returncode not in (0, 5):
            raise SystemExit(f"package_matrix: tests of {pkg} failed in its isolated environment")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("packages", nargs="*", help="packages to check (default: all)")
    parser.add_argument("--pytest-args", default="", help="extra arguments for pytest, as one string")
    args = parser.parse_args()
    names = args.packages or sorted(
        p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file()
    )
    with tempfile.TemporaryDirectory(prefix="effml-matrix-") as tmp:
        work = Path(tmp)
        dist = work / "dist"
        sh(["uv", "build", "--all-packages", "--wheel", "--quiet", "-o", str(dist)], cwd=ROOT)
        times = {pkg: run_package(pkg, dist, work, shlex.split(args.pytest_args)) for pkg in names}
    for pkg, secs in times.items():
        print(f"package_matrix: {pkg} installs alone, CLI and tests pass ({secs:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
