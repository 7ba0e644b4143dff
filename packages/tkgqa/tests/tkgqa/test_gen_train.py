"""A tiny end-to-end GenTKGQA run on the synthetic KG: generate questions, train, resume, answer, evaluate."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from effcore.errors import ConfigError
from tkgqa.embed import HashEncoder
from tkgqa.gen.answer import GenAnswerer, evaluate_generator, stage1_retriever
from tkgqa.gen.gnn import GnnConfig
from tkgqa.gen.model import SubgraphFeatures
from tkgqa.gen.pretrain import pretrain
from tkgqa.gen.questions import generate_questions
from tkgqa.gen.train import GenTrainConfig, build_examples, build_generator, load_generator, train_generator


@pytest.fixture(scope="module")
def setup(bench):
    enc = pretrain(bench.store, GnnConfig(dim=16, epochs=1, batch=512), device=torch.device("cpu"))
    retrieve = stage1_retriever(bench.store, HashEncoder(), facts=4)
    qs = generate_questions(bench.store, 12, seed=2)
    examples = build_examples(bench.store, qs, lambda q: retrieve(q)[0], facts=4)
    return enc, retrieve, examples


def test_examples_hold_gold_facts_and_retrieved_ones(bench, setup):
    _, _, examples = setup
    assert all(1 <= len(ex.rows) <= 4 and ex.target for ex in examples)


def test_tiny_train_resume_and_answer_end_to_end(tmp_path, tiny_lm, bench, setup):
    enc, retrieve, examples = setup
    lm, tok = tiny_lm
    torch.manual_seed(0)
    cfg = GenTrainConfig(
        llm="tiny", steps=6, batch=2, save_every=3, facts=4, lr=1e-2, proj_lr=1e-2, lora_rank=4
    )
    model = build_generator(copy.deepcopy(lm), tok, enc.cfg.dim, cfg)
    feats = SubgraphFeatures(enc, bench.store)
    ident = {"kg": bench.store.digest, "encoder": "e1"}
    ckpt = tmp_path / "gen.pt"
    hist = train_generator(model, feats, examples, cfg, checkpoint=ckpt, identity=ident, max_seconds=0.0)
    assert len(hist) == 1 and ckpt.is_file()  # stopped by time after one step, saved there
    longer = dataclasses.replace(cfg, steps=20)
    hist = train_generator(model, feats, examples, longer, checkpoint=ckpt, identity=ident, resume=True)
    assert [h["step"] for h in hist] == list(range(1, 21))
    assert sum(h["loss"] for h in hist[-5:]) < sum(h["loss"] for h in hist[:5])
    with pytest.raises(ConfigError, match="trained with another identity"):
        train_generator(model, feats, examples, longer, checkpoint=ckpt, identity={**ident, "encoder": "e2"},
                        resume=True)  # fmt: skip
    back, saved = load_generator(ckpt, ident, lm_factory=lambda name: (copy.deepcopy(lm), tok))
    assert saved["step"] == 20 and torch.equal(back.proj.weight, model.proj.weight)
    with pytest.raises(ConfigError, match="was trained for"):
        load_generator(ckpt, {**ident, "kg": "other"}, lm_factory=lambda name: (copy.deepcopy(lm), tok))
    answerer = GenAnswerer(bench.store, back, feats, retrieve, facts=4)
    q = bench.questions[0]
    a = answerer(q.question)
    assert a.rows and not a.abstained and isinstance(a.answer, str)
    nothing = answerer("What is the capital of Atlantis?")
    assert nothing.abstained and nothing.answer == "" and "empty subgraph" in nothing.notes[0]
    report = evaluate_generator(bench.questions[:3], answerer)
    assert report["table"][0]["n"] == 3 and len(report["rows"]) == 3
    assert (
        GenAnswerer(bench.store, back, feats, retrieve, variant="no_retrieval", facts=4)(q.question).rows
        == []
    )
    assert (
        len(
            GenAnswerer(bench.store, back, feats, retrieve, variant="random_subgraph", facts=4)(
                q.question
            ).rows
        )
        == 4
    )
