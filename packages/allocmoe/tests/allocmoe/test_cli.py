"""The allocmoe CLI end to end on a tiny random MoE, and its one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from allocmoe.cli import app

runner = CliRunner()
TINY = ["-m", "tiny:qwen2_moe"]


def _run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "prof.json"
    res = _run("profile", *TINY, "-o", str(path), "--blocks", "2", "--block-size", "16")
    assert res.exit_code == 0, res.output
    return path


def test_profile_allocate_eval(profile, tmp_path):
    d = json.loads(profile.read_text())
    assert d["num_layers"] == 2 and all(v is not None for row in d["S"] for v in row)
    res = _run("allocate", "-b", "3", "-p", str(profile), "-o", str(tmp_path / "a.json"))
    assert res.exit_code == 0, res.output
    budget = json.loads((tmp_path / "a.json").read_text())["budget"]
    assert budget["total"] <= 3 and len(budget["k_layers"]) == 2
    out = tmp_path / "e.json"
    res = _run(
        "eval", *TINY, "-p", str(profile), "-b", "1/2", "--methods", "uniform,alloc_moe,top_p",
        "--blocks", "2", "--block-size", "16", "--calib-blocks", "1", "-o", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["full", "uniform", "alloc_moe", "top_p"]
    assert rows[1]["activations_per_token"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["allocate", "-b", "1"], "outside 2..4"),
        (["allocate", "-b", "5"], "outside 2..4"),
        (["allocate", "-b", "half"], "cannot read budget"),
        (["eval", *TINY, "--methods", "nope"], "unknown methods"),
        (["eval", *TINY, "--methods", "alloc_moe", "-b", "1/2"], "needs a sensitivity profile"),
        (["profile", "-m", "/nonexistent/model"], "neither 'smollm2-moe'"),
        (["profile", "-m", "tiny:llama", "-o", "x.json"], "no MoE block allocmoe can drive"),
        (["bench", "-m", "shape:nope"], "unknown model shape"),
    ],
)
def test_bad_input_is_one_clear_line(profile, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] == "allocate":
        args = [*args, "-p", str(profile)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_profile_of_another_model_is_refused(profile):
    res = runner.invoke(app, ["eval", "-m", "tiny:olmoe", "-p", str(profile), "--methods", "alloc_moe"])
    assert res.exit_code == 2 and "made for model" in res.output
