"""Enforce effml's package boundaries: effcore imports no workspace package; a system package imports only effcore.

uv does not check this. It also checks that every workspace package a member imports is declared
in that member's ``[project].dependencies``. Exit code 1 lists every violation (file:line).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"


def _members() -> dict[str, Path]:
    return {p.name: p for p in sorted(PACKAGES.iterdir()) if (p / "pyproject.toml").is_file()}


def _declared(pkg_dir: Path) -> set[str]:
    data = tomllib.loads((pkg_dir / "pyproject.toml").read_text())
    names = set()
    for req in data.get("project", {}).get("dependencies", []):
        name = req.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        names.add(name.strip().replace("-", "_").lower())
    return names


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def check() -> list[str]:
    members = _members()
    problems = []
    for name, pkg_dir in members.items():
        allowed = {name} if name == "effcore" else {name, "effcore"}
        declared = _declared(pkg_dir)
        for folder in ("src", "tests", "benchmarks"):
            for path in sorted((pkg_dir / folder).rglob("*.py")):
                for lineno, mod in _imports(path):
                    if mod not in members or mod == name:
                        continue
                    where = f"{path.relative_to(ROOT)}:{lineno}"
                    if mod not in allowed:
                        rule = (
                            "effcore must not import"
                            if name == "effcore"
                            else f"{name} may import only effcore, not"
                        )
                        problems.append(f"{where}: {rule} {mod}")
                    elif folder == "src" and mod not in declared:
                        problems.append(
                            f"{where}: imports {mod} but packages/{name}/pyproject.toml does not declare it"
                        )
    return problems


def main() -> int:
    problems = check()
    for line in problems:
        print(line)
    print(f"check_imports: {len(_members())} packages, {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
