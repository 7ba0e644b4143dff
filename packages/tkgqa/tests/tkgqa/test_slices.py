"""KG slices: a bounded, seeded cut of the KG on which the planner's calls return what they return on the whole KG."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from effcore.errors import ConfigError
from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.evaluate import evaluate
from tkgqa.index import FactIndex
from tkgqa.policies import PlannerPolicy
from tkgqa.search import SearchTool
from tkgqa.slices import SliceSpec, make_slice


def test_slice_spec_parses_defaults_and_refuses_malformed_text():
    assert SliceSpec.parse("dev") == SliceSpec("dev", 20, 40_000, 0)
    assert str(SliceSpec.parse("test:5:1000:2")) == "test:5:1000:2"
    for bad, match in [
        ("dev:x", "integers"),
        ("train", "unknown split"),
        ("dev:0", ">= 1"),
        ("a:1:2:3:4", "expected"),
    ]:
        with pytest.raises(ConfigError, match=match):
            SliceSpec.parse(bad)


def test_a_slice_keeps_whole_entities_within_its_budget_and_quota(bench):
    spec = SliceSpec("dev", 3, 600, 0)
    cut = make_slice(bench.store, bench.questions, spec)
    kg, store = bench.store, cut.store
    assert 0 < len(store) <= 600 and max(Counter(q.qtype for q in cut.questions).values()) <= 3
    ids = [kg.entity_id(n) for n in cut.entities]
    assert len(store) == int(kg.mask(entities=ids).sum())  # every fact of every kept entity, nothing else
    assert store.entities.names == kg.entities.names and store.digest != kg.digest
    assert make_slice(kg, bench.questions, spec).store.digest == store.digest
    assert make_slice(kg, bench.questions, SliceSpec("dev", 3, 600, 1)).store.digest != store.digest


def test_on_the_slice_the_planner_sees_and_answers_exactly_what_it_does_on_the_whole_kg(
    bench, hash_index, planner
):
    enc, whole_idx = hash_index
    cut = make_slice(bench.store, bench.questions, SliceSpec("dev", 4, 700, 0))
    idx = FactIndex(
        enc.encode(cut.store.texts()).astype("float16"), encoder_name=enc.name, kg_digest=cut.store.digest
    )
    on_slice = evaluate(cut.questions, lambda: PlannerPolicy(planner), SearchTool(cut.store, idx, enc))
    on_whole = evaluate(
        cut.questions, lambda: PlannerPolicy(planner), SearchTool(bench.store, whole_idx, enc)
    )
    assert len(cut.questions) >= 10
    for a, b in zip(on_slice.results, on_whole.results, strict=True):
        assert a.answers == b.answers
        assert [m["content"] for m in a.messages if m["role"] == "tool"] == [
            m["content"] for m in b.messages if m["role"] == "tool"
        ]
    assert np.isclose(on_slice.table[0]["strict"], on_whole.table[0]["strict"])


def test_eval_on_a_slice_runs_its_questions_and_refuses_sampling_options(data_dir, tmp_path):
    from tkgqa.cli import app

    common = ["--data-dir", str(data_dir), "--encoder", "hash", "--slice", "dev:3:600:0"]
    out = cli_ok(app, ["index", *common, "--out", str(tmp_path / "i.json")]).output
    meta = json.loads((tmp_path / "i.json").read_text())
    assert meta["slice"] == "dev:3:600:0" and 0 < meta["facts"] <= 600 and "slice" in out
    cli_ok(app, ["eval", *common, "--out", str(tmp_path / "e.json")])
    payload = json.loads((tmp_path / "e.json").read_text())
    assert payload["n"] == meta["slice_questions"] and "slice" in payload["questions"]
    assert payload["meta"]["kg"]["facts"] == meta["facts"]
    cli_fails(app, ["eval", *common, "-n", "5"], "--limit does not apply with --slice")
    cli_fails(
        app,
        ["eval", "--kg", "icews14", "--slice", "dev", "--data-dir", str(data_dir)],
        "does not apply to --kg icews14",
    )
