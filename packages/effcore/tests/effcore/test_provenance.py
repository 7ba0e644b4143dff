"""effcore.provenance: the metadata block every result file carries."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from effcore.provenance import command_line, git_commit, run_meta


def test_command_line_names_scripts_relative_and_paths_by_their_root(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EFFML_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench").mkdir()
    script = tmp_path / "bench" / "bench_x.py"
    scratch = Path(tempfile.gettempdir()) / "runs" / "a b"
    argv = [str(script), "--model", str(cache / "m"), "--out", str(scratch), "--n", "3"]
    assert (
        command_line(argv)
        == "python bench/bench_x.py --model '$EFFML_CACHE/m' --out '$TMPDIR/runs/a b' --n 3"
    )
    console_script = str(tmp_path / "venv" / "bin" / "tkgqa")
    assert command_line([console_script, "eval", "--limit", "5"]) == "tkgqa eval --limit 5"
    outside = tmp_path.parent / "run.py"  # not under the working directory: kept as given
    assert command_line([str(outside)]) == f"python {outside}"


def test_git_commit_reads_the_checkout_and_marks_changed_files(tmp_path) -> None:
    assert git_commit(tmp_path) is None  # not a checkout
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = git_commit(tmp_path)
    assert clean is not None and "+" not in clean
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == clean + "+dirty"


def test_run_meta_has_one_shape_and_serialises() -> None:
    started = time.perf_counter() - 2.0
    meta = run_meta(started=started, device="cpu", command="python x.py", packages=("torch", "no-such-dist"))
    assert meta["command"] == "python x.py"
    assert meta["wall_seconds"] >= 2.0
    assert meta["machine"]["device"] == "cpu"
    assert meta["machine"]["torch"] == torch.__version__
    assert meta["machine"]["threads"] == torch.get_num_threads()
    assert meta["versions"]["torch"] is not None and meta["versions"]["no-such-dist"] is None
    json.dumps(meta)
    assert run_meta()["wall_seconds"] is None
