"""Training: the loss falls, a resumed run equals an uninterrupted one, checkpoints refuse another schema."""

from __future__ import annotations

import pytest
import torch

from effcore.errors import ConfigError
from promptie.checkpoint import check_schema, latest, read_checkpoint
from promptie.data import Document, Entity, Event, Relation, Span
from promptie.examples import build_examples, collate, group_by_text, shared_prefix_loss
from promptie.prompts import compose_all
from promptie.schema import load_schema
from promptie.train import TrainConfig, train

TEXT = "John Smith works for Acme Corp in Boston ."
J, A, B = Entity(0, 10, "Peop"), Entity(21, 30, "Org"), Entity(34, 40, "Loc")
DOCS = [Document("1", TEXT, [J, A, B], [Relation(J, A, "Work_For"), Relation(A, B, "OrgBased_In")]),
        Document("2", "Mary Jones lives in Paris .", [Entity(0, 10, "Peop"), Entity(20, 25, "Loc")],
                 [Relation(Entity(0, 10, "Peop"), Entity(20, 25, "Loc"), "Live_In")])]  # fmt: skip


def test_shared_prefix_loss_equals_the_loss_of_full_sequences(causal):
    s = load_schema("conll04")
    ex = build_examples(DOCS[:1], s, compose_all(s, "specific"), causal, tasks=("slots", "judge", "direct"))
    group = group_by_text(ex)[0]
    total, n = shared_prefix_loss(causal, group)
    t = collate(causal, group)
    full = causal.model(**t).loss
    assert n == int((t["labels"] != -100).sum())
    assert torch.allclose(total / n, full, atol=1e-5)


@pytest.mark.parametrize("kind", ["causal", "t5"])
def test_training_lowers_the_loss(kind, fresh, tmp_path):
    cfg = TrainConfig(
        model="tiny",
        steps=12,
        batch_size=2,
        lora=False,
        lr=3e-3,
        tasks=["slots", "direct"],
        checkpoint_every=6,
    )
    out = train(DOCS, load_schema("conll04"), cfg, tmp_path / "run", backbone=fresh[kind]())
    losses = out["record"]["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) < 0.6 * sum(losses[:3])
    assert read_checkpoint(tmp_path / "run").step == 12


def test_lora_on_the_top_layers_trains_only_those(tmp_path, fresh):
    cfg = TrainConfig(model="tiny", steps=2, batch_size=1, lora=True, lora_top_layers=1, lora_r=4)
    out = train(DOCS, load_schema("conll04"), cfg, tmp_path / "run", backbone=fresh["causal"]())
    names = [n for n, p in out["backbone"].model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "layers.1." in n for n in names)


def test_resumed_training_equals_uninterrupted_training(tmp_path, fresh):
    s = load_schema("conll04")
    cfg = TrainConfig(model="tiny", steps=6, batch_size=1, lora=True, lora_r=4, checkpoint_every=3, lr=1e-2)
    whole = train(DOCS, s, cfg, tmp_path / "whole", backbone=fresh["causal"]())
    half = TrainConfig(model="tiny", steps=3, batch_size=1, lora=True, lora_r=4, checkpoint_every=3, lr=1e-2)
    train(DOCS, s, half, tmp_path / "resumed", backbone=fresh["causal"]())
    again = train(DOCS, s, cfg, tmp_path / "resumed", backbone=fresh["causal"]())  # picks up at step 3
    assert again["record"]["losses"] == pytest.approx(whole["record"]["losses"], rel=1e-4)
    a, b = whole["backbone"].model.state_dict(), again["backbone"].model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_an_interrupted_checkpoint_write_is_invisible(tmp_path, fresh):
    s = load_schema("conll04")
    cfg = TrainConfig(model="tiny", steps=2, batch_size=1, lora=True, lora_r=4, checkpoint_every=1)
    train(DOCS, s, cfg, tmp_path / "run", backbone=fresh["causal"]())
    (tmp_path / "run" / ".step-000003.partial").mkdir()  # a crash in the middle of the next write
    assert latest(tmp_path / "run").name == "step-000002"
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-000002"]


def test_a_checkpoint_for_another_schema_is_refused(tmp_path, fresh):
    cfg = TrainConfig(model="tiny", steps=1, batch_size=1, lora=True, lora_r=4)
    train(DOCS, load_schema("conll04"), cfg, tmp_path / "run", backbone=fresh["causal"]())
    ck = read_checkpoint(tmp_path / "run")
    with pytest.raises(ConfigError, match="does not fit schema 'phee'"):
        check_schema(ck, load_schema("phee"))
    with pytest.raises(ConfigError, match="does not fit"):
        train(DOCS, load_schema("phee"), TrainConfig(model="tiny", steps=2, batch_size=1, lora_r=4),
              tmp_path / "run", backbone=fresh["causal"]())  # fmt: skip


def test_held_out_event_types_are_allowed_only_with_composable_prompts(tmp_path, fresh):
    casie = load_schema("casie")
    seen = casie.subset(events=["Databreach", "Phishing"])
    doc = Document("c", "Hackers stole passwords from Target .", events=[
        Event("Databreach", (Span(8, 13),), (("Attacker", Span(0, 7)), ("Compromised-Data", Span(14, 23))))])  # fmt: skip
    train(
        [doc],
        seen,
        TrainConfig(model="tiny", steps=1, batch_size=1, lora_r=4),
        tmp_path / "run",
        backbone=fresh["causal"](),
    )
    ck = read_checkpoint(tmp_path / "run")
    check_schema(ck, casie, allow_new_events=True)
    with pytest.raises(ConfigError, match="only composable prompts"):
        check_schema(ck, casie)


@pytest.mark.parametrize("field, value, match", [
    ("steps", 0, "steps must be >= 1"), ("mode", "fancy", "mode: 'fancy'"), ("tasks", ["nope"], "tasks"),
    ("judge", "gpt", "judge: 'gpt'"), ("lr", 2.0, "lr and judge_lr"),
])  # fmt: skip
def test_bad_training_settings_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict({field: value})
    with pytest.raises(ConfigError, match="unknown field 'epochs'"):
        TrainConfig.from_dict({"epochs": 3})
