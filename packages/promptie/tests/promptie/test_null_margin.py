"""The null-answer margin: 0 is plain greedy; a huge one never answers null where a span is allowed; the
tuning sweep (all margins in one batch) equals one extraction per margin; tune-null stores its choice."""

from __future__ import annotations

import json

import torch

from effcore.testing.cli import cli_ok
from promptie.cli import app
from promptie.decode import fill_slots
from promptie.extractor import ExtractConfig, Extractor
from promptie.grammar import SlotGrammar
from promptie.schema import load_schema

SENTENCES = ["John Smith works for Acme Corp in Boston .", "Mary Jones lives in Paris , France .",
             "The hackers stole passwords from Target in 2014 .", "The patient took aspirin and developed a rash ."]  # fmt: skip


def _reference_greedy(bb, text: str, prompt: str, grammar: SlotGrammar, max_new: int) -> list[list[str]]:
    """Greedy over the allowed tokens, the whole sequence recomputed each step (no cache, no margin)."""
    ids = bb.prefix_ids(text) + bb.prompt_ids(prompt)
    with torch.inference_mode():
        for _ in range(max_new):
            logits = bb.model(input_ids=torch.tensor([ids])).logits[0, -1]
            allowed = grammar.allowed()
            t = allowed[int(logits[allowed].argmax())]
            grammar.advance(t)
            ids.append(t)
            if grammar.finished:
                break
    return grammar.answers()


def _type_prompts(ex: Extractor) -> tuple[list[str], list[int]]:
    return [p.render(ex.backbone.marker) for p in ex.prompts], [len(p.slots) for p in ex.prompts]


def test_margin_zero_is_plain_greedy(null_biased):
    causal = null_biased
    ex = Extractor(causal, load_schema("conll04"), ExtractConfig(mode="specific", max_new_tokens=24))
    prompts, n_slots = _type_prompts(ex)
    nulls = 0
    for text in SENTENCES[:1]:
        got, _ = ex.fill(text, prompts, n_slots, [0.0] * len(prompts))
        trie, _ = ex.trie(text)
        ref = [_reference_greedy(causal, text, p, SlotGrammar(ex.tokens, trie, n), 24)
               for p, n in zip(prompts, n_slots, strict=True)]  # fmt: skip
        assert got == ref
        nulls += sum(not slot for answers in got for slot in answers)
    assert nulls, "some slot must be null at margin 0 for the test to mean anything"


class _Recording(SlotGrammar):
    """Records, at each step, the null answer's first token if it may start there, and the pick."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.steps: list[tuple[int | None, int, int]] = []

    def advance(self, token: int) -> None:
        self.steps.append((self.null_start(), len(self.allowed()), token))
        super().advance(token)


def test_a_huge_margin_never_answers_null_where_a_span_is_allowed(null_biased):
    causal = null_biased
    ex = Extractor(causal, load_schema("casie"), ExtractConfig(mode="composable"))
    prompts, n_slots = _type_prompts(ex)
    for margin, picked_null in ((0.0, True), (1e9, False)):
        grammars = []
        for text in SENTENCES[:2]:
            trie, _ = ex.trie(text)
            gs = [_Recording(ex.tokens, trie, n) for n in n_slots]
            fill_slots(causal, text, prompts, gs, max_new_tokens=32, null_margins=[margin] * len(prompts))
            grammars += gs
        # slot openings where the null answer and some span were both allowed
        openings = [
            (null, tok)
            for g in grammars
            for null, n_allowed, tok in g.steps
            if null is not None and n_allowed > 1
        ]
        assert len(openings) >= 10
        assert any(tok == null for null, tok in openings) == picked_null, margin


def test_the_sweep_equals_one_extraction_per_margin(null_biased):
    causal = null_biased
    schema, margins = load_schema("casie"), [0.0, 1.5, 1e9]
    ex = Extractor(causal, schema, ExtractConfig(mode="composable", max_new_tokens=24))
    for text in SENTENCES[2:]:
        swept = ex.extract_margins(text, margins)
        for m, doc in zip(margins, swept, strict=True):
            one = Extractor(
                causal, schema, ExtractConfig(mode="composable", max_new_tokens=24, null_margin=m)
            )
            assert doc.events == one.extract(text).events
    assert swept[0].events != swept[-1].events


def test_tune_null_stores_the_best_margin_and_eval_uses_it(run_dir, data_dir, tmp_path):
    cli_ok(app, ["tune-null", str(run_dir), "--grid", "0,1e9", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "t.json")])  # fmt: skip
    report = json.loads((tmp_path / "t.json").read_text())
    assert [r["null_margin"] for r in report["grid"]] == [0.0, 1e9] and report["split"] == "dev"
    assert report["score_metrics"] == ["entity", "relation_strict"]
    best = max(report["grid"], key=lambda r: (r["score"], -r["null_margin"]))
    assert report["null_margin"] == best["null_margin"]
    stored = json.loads(next(run_dir.glob("step-*/null_margin.json")).read_text())
    assert stored["null_margin"] == report["null_margin"] and stored["documents"] == 2
    base = ["eval", str(run_dir), "--data-dir", str(data_dir)]
    cli_ok(app, [*base, "--out", str(tmp_path / "e.json")])
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["extract_config"]["null_margin"] == report["null_margin"]
    assert ev["null_margin_tuned"]["null_margin"] == report["null_margin"]
    cli_ok(app, [*base, "--null-margin", "0.25", "--out", str(tmp_path / "e2.json")])
    assert json.loads((tmp_path / "e2.json").read_text())["extract_config"]["null_margin"] == 0.25
