"""Loaders: character offsets from CoNLL04 tokens, PHEE spans, CASIE sentences; seeded nested subsets."""

from __future__ import annotations

import pytest

from effcore.errors import ConfigError, DataNotFoundError
from promptie.data import load_dataset, subsample


def test_conll04_offsets_point_at_the_entity_text(data_dir):
    docs = load_dataset("conll04", "train", root=data_dir)
    d = docs[0]
    assert [d.text[e.start : e.end] for e in d.entities] == ["John Smith", "Acme Corp", "Boston"]
    assert [(d.text[r.head.start : r.head.end], r.type, d.text[r.tail.start : r.tail.end]) for r in d.relations] == [
        ("John Smith", "Work_For", "Acme Corp"), ("Acme Corp", "OrgBased_In", "Boston")]  # fmt: skip


def test_phee_events_keep_trigger_roles_and_drug(data_dir):
    (d,) = load_dataset("phee", "dev", root=data_dir)
    (ev,) = d.events
    assert ev.type == "Adverse_event" and d.text[ev.triggers[0].start : ev.triggers[0].end] == "developed"
    assert {(r, d.text[s.start : s.end]) for r, s in ev.arguments} == {
        ("Treatment", "aspirin"),
        ("Drug", "aspirin"),
        ("Effect", "rash"),
    }


def test_subsets_are_seeded_and_nested(data_dir):
    docs = load_dataset("conll04", "train", root=data_dir) * 50
    small, big = subsample(docs, fraction=0.01), subsample(docs, fraction=0.05)
    assert len(small) == 1 and len(big) == 5
    assert subsample(docs, fraction=0.05, seed=0) == big
    with pytest.raises(ConfigError):
        subsample(docs, fraction=0)


def test_missing_data_names_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataNotFoundError, match=r"casie\.tar\.gz"):
        load_dataset("casie", "train", root=tmp_path / "data")
    with pytest.raises(DataNotFoundError, match=r"conll04_test\.json\.gz"):
        load_dataset("conll04", "test", root=tmp_path / "data")
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset("conll04", "validation", root=tmp_path / "data")
