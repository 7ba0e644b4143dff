"""Prefix KV-cache reuse + batching gives the output of no reuse; windowed extraction = per-window extraction."""

from __future__ import annotations

import random

import pytest

from promptie.extractor import ExtractConfig, Extractor, merge
from promptie.relations import LMJudge
from promptie.schema import load_schema
from promptie.spans import windows

SENTENCES = ["John Smith works for Acme Corp in Boston .", "Mary Jones lives in Paris , France .",
             "The hackers stole passwords from Target in 2014 .", "The patient took aspirin and developed a rash ."]  # fmt: skip


def _long_text(n: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    return " ".join(rnd.choice(SENTENCES) for _ in range(n))


@pytest.mark.parametrize("schema", ["conll04", "phee", "casie"])
@pytest.mark.parametrize("backbone", ["causal", "t5"])
def test_prefix_reuse_and_batching_give_the_same_output_as_one_prompt_at_a_time(request, backbone, schema):
    bb = request.getfixturevalue(backbone)
    s = load_schema(schema)
    for mode in ("specific", "composable"):
        ours = Extractor(bb, s, ExtractConfig(mode=mode, max_new_tokens=24), judge=LMJudge(bb))
        ref = Extractor(
            bb, s, ExtractConfig(mode=mode, max_new_tokens=24, shared_prefix=False), judge=LMJudge(bb)
        )
        for text in SENTENCES[:2]:
            a, b = ours.extract(text), ref.extract(text)
            assert (a.entities, a.relations, a.events) == (b.entities, b.relations, b.events)
            ents = a.entities or []
            assert ours.direct_relations(text, ents) == ref.direct_relations(text, ents)


def test_lm_judge_scores_do_not_depend_on_prefix_reuse(causal):
    from promptie.decode import next_token_logits

    prompts = ["Is this statement consistent with the text? John works for Acme.", "short one"]
    a = next_token_logits(causal, SENTENCES[0], prompts)
    b = next_token_logits(causal, SENTENCES[0], prompts, shared_prefix=False)
    assert (a - b).abs().max() < 1e-4


def test_windowed_extraction_finds_what_each_window_finds(causal):
    s = load_schema("conll04")
    cfg = ExtractConfig(mode="specific", window_words=30, window_overlap=8, max_new_tokens=24)
    ex = Extractor(causal, s, cfg, judge=LMJudge(causal))
    text = _long_text(12)
    wins = windows(text, max_words=30, overlap=8)
    assert len(wins) > 3
    whole = ex.extract(text)
    per_window = merge([(w.start, ex.extract_window(text[w.start : w.end])) for w in wins], text)
    assert whole.entities == per_window.entities and whole.relations == per_window.relations
    assert whole.entities, "the tiny model should find something for the comparison to mean anything"
    for w in wins:  # and everything a window finds is in the whole text's result, at full-text offsets
        found = ex.extract_window(text[w.start : w.end])
        assert {(e.start + w.start, e.end + w.start, e.type) for e in found.entities} <= {
            (e.start, e.end, e.type) for e in whole.entities
        }
    for e in whole.entities:
        assert text[e.start : e.end].strip() == text[e.start : e.end]


def test_long_text_is_windowed_not_truncated(causal):
    s = load_schema("conll04")
    ex = Extractor(causal, s, ExtractConfig(window_words=20, window_overlap=5, max_new_tokens=16))
    text = _long_text(30, seed=1)
    doc = ex.extract(text)
    assert doc.text == text
    assert all(0 <= e.start < e.end <= len(text) for e in doc.entities)
