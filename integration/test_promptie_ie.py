"""promptie end to end on SmolLM2 and the real IE data: train (LoRA, a few steps) -> eval -> extract, in
bounded time, on CoNLL04 (entities + relations judged by MiniLM) and PHEE (events); long text windowed."""

from __future__ import annotations

import json

import pytest

from effcore.assets import data_dir
from effcore.errors import DataNotFoundError
from effcore.testing.cli import cli_ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ie_root():
    try:
        root = data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    if not (root / "ie" / "conll04" / "conll04_train.json.gz").is_file():
        pytest.skip(f"no ie/conll04 in {root}")
    return root


def _cfg(tmp_path, extra=""):
    p = tmp_path / "cfg.toml"
    p.write_text('model = "smollm2"\nbatch_size = 1\nlora_r = 4\nlora_top_layers = 2\nmax_seq_len = 200\n'
                 'checkpoint_every = 2\n' + extra + "[data]\nlimit = 4\ndev_limit = 4\n"
                 "[extract]\nmax_new_tokens = 12\nwindow_words = 24\nwindow_overlap = 6\n")  # fmt: skip
    return str(p)


def test_conll04_train_eval_extract_on_smollm2(ie_root, tmp_path):
    from promptie.cli import app

    cfg = _cfg(
        tmp_path, 'judge = "minilm"\njudge_steps = 3\njudge_batch_size = 4\ntasks = ["slots", "direct"]\n'
    )
    run = tmp_path / "run"
    cli_ok(app, ["train", "--data", "conll04", "--config", cfg, "--steps", "2", "--out-dir", str(run),
                 "--out", str(tmp_path / "t.json"), "--device", "cpu"])  # fmt: skip
    summary = json.loads((tmp_path / "t.json").read_text())
    assert summary["documents"] == 4 and len(summary["record"]["losses"]) == 2
    assert 0 <= summary["threshold"]["threshold"] <= 1
    cli_ok(app, ["eval", str(run), "--split", "test", "--limit", "2", "--relations", "judge,direct", "--config", cfg,
                 "--device", "cpu", "--out", str(tmp_path / "e.json")])  # fmt: skip
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["eval_documents"] == 2 and report["metrics"]["entity"]["gold"] > 0
    assert set(report["relations_on_gold_entities"]) == {"judge", "direct"}
    cli_ok(app, ["tune-null", str(run), "--limit", "2", "--grid", "0,3", "--config", cfg, "--device", "cpu",
                 "--out", str(tmp_path / "n.json")])  # fmt: skip
    tuned = json.loads((tmp_path / "n.json").read_text())
    assert [r["null_margin"] for r in tuned["grid"]] == [0.0, 3.0] and tuned["documents"] == 2
    assert (
        json.loads(next(run.glob("step-*/null_margin.json")).read_text())["null_margin"]
        == tuned["null_margin"]
    )
    long_text = " ".join(
        ["Bill Gates founded Microsoft in Redmond , Washington ."] * 6
    )  # 54 words: 3 windows
    res = cli_ok(app, ["extract", long_text, "-c", str(run), "--device", "cpu", "--config", cfg])
    doc = json.loads([ln for ln in res.output.splitlines() if ln.startswith("{")][-1])
    assert doc["text"] == long_text  # windowed, never truncated
    for e in doc["entities"]:
        assert long_text[e["start"] : e["end"]] == e["text"]


def test_phee_events_on_smollm2(ie_root, tmp_path):
    from promptie.cli import app

    run = tmp_path / "run"
    cfg = _cfg(tmp_path, 'mode = "composable"\n')
    cli_ok(
        app,
        [
            "train",
            "--data",
            "phee",
            "--config",
            cfg,
            "--steps",
            "1",
            "--out-dir",
            str(run),
            "--device",
            "cpu",
        ],
    )
    cli_ok(app, ["eval", str(run), "--split", "test", "--limit", "2", "--config", cfg, "--device", "cpu",
                 "--out", str(tmp_path / "e.json")])  # fmt: skip
    report = json.loads((tmp_path / "e.json").read_text())
    assert {"trigger_id", "trigger_cls", "argument_id", "argument_cls"} <= set(report["metrics"])
    assert set(report["per_event_type"]) == {"Adverse_event", "Potential_therapeutic_event"}


def test_tour_demo_runs_on_smollm2(ie_root):
    from promptie.tour import demo

    rows = demo(quick=True)
    assert [r["step"] for r in rows] == ["prompt composition (CASIE)", "constrained decoding, prefix KV reuse",
                                         "metrics on CoNLL04"]  # fmt: skip
    assert "identical output: True" in rows[1]["result"]
