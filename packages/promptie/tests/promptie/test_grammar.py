"""Constrained decoding: every emitted answer is a span of the input; targets parse back to their answers."""

from __future__ import annotations

import random

import torch
from hypothesis import given, note
from hypothesis import strategies as st

from promptie.data import Document, Entity
from promptie.examples import gold_answers
from promptie.grammar import SlotGrammar, SpanTrie, encode_target
from promptie.prompts import Prompt
from promptie.spans import candidate_spans, windows, words

VOCAB = ["John", "Smith", "works", "for", "Acme", "Corp", "in", "Boston", ".", ",", "none", "|", "[", "1", "]",
         "yes", "no", "Mary", "lives", "Paris", "(", ")", "Corp.", "New", "York"]  # fmt: skip
TEXTS = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=25).map(" ".join)


def _grammar(bb, text, n_slots, max_words=6):
    spans = candidate_spans(text, max_words=max_words, separator="|")
    keys = list(spans)
    trie = SpanTrie(dict(zip(keys, bb.encode_many([" " + k for k in keys]), strict=True)))
    return SlotGrammar(bb.grammar_tokens("|", "none"), trie, n_slots), spans


@given(TEXTS, st.integers(1, 4), st.integers(0, 2**31 - 1), st.integers(8, 60))
def test_decoding_never_emits_a_span_absent_from_the_input(causal, text, n_slots, seed, max_new):
    """Whatever the model scores (here random logits), the grammar only lets spans of the text through."""
    g, spans = _grammar(causal, text, n_slots)
    gen = torch.Generator().manual_seed(seed)
    vocab = len(causal.tokenizer)
    for _ in range(max_new):
        allowed = g.allowed()
        if not allowed:
            break
        logits = torch.randn(vocab, generator=gen)
        g.advance(allowed[int(logits[allowed].argmax())])
    answers = g.answers()
    note(f"{text!r} -> {answers}")
    assert len(answers) == n_slots
    for slot in answers:
        for a in slot:
            assert a in spans and a in text and "|" not in a
            for s, e in spans[a]:
                assert text[s:e] == a


@given(TEXTS, st.integers(1, 3), st.randoms(use_true_random=False))
def test_a_target_parses_back_to_its_answers(causal, text, n_slots, rnd):
    """encode_target -> the grammar accepts it token by token and returns the same answers."""
    g, spans = _grammar(causal, text, n_slots)
    keys = [k for k in spans if g.tokens.answer(k) != g.tokens.null]  # "none" as a span reads as null
    answers = [
        list(dict.fromkeys(rnd.sample(keys, min(len(keys), rnd.randint(0, 3))))) for _ in range(n_slots)
    ]
    for tok in encode_target(g.tokens, answers):
        assert tok in g.allowed()
        g.advance(tok)
    assert g.finished
    # spans whose token sequences coincide parse to the first of them; compare by tokens
    enc = g.tokens.answer
    assert [[enc(a) for a in slot] for slot in g.answers()] == [[enc(a) for a in slot] for slot in answers]


def test_two_answers_around_a_separator_in_the_text_stay_two(causal):
    """``John | Smith`` is in the text, so without the exclusion it was a span and ``[0] John | Smith``
    (two answers) parsed as one; spans containing the separator are not candidates."""
    text = "John | Smith works for Acme | Boston"
    g, spans = _grammar(causal, text, 2)
    assert "John | Smith" not in spans and "Acme | Boston" not in spans and "|" not in spans
    assert {"John", "Smith", "Smith works for Acme"} <= set(spans)
    for tok in encode_target(g.tokens, [["John", "Smith"], ["Smith works for Acme", "Boston"]]):
        g.advance(tok)
    assert g.finished and g.answers() == [["John", "Smith"], ["Smith works for Acme", "Boston"]]


def test_gold_answers_leave_out_spans_with_the_separator():
    """A gold span containing the separator cannot be decoded, so it is no training target either."""
    doc = Document(
        "d", "Acme | Corp hired John", [Entity(0, 11, "Org"), Entity(18, 22, "Per"), Entity(7, 11, "Org")]
    )
    prompt = Prompt("Org", "entity", "specific", ("The orgs are ", "."), ("entity",))
    assert gold_answers(doc, prompt, separator="|") == [["Corp"]]
    assert gold_answers(doc, prompt, separator=";") == [["Acme | Corp", "Corp"]]


def test_null_only_as_a_slots_first_answer_and_separator_only_after_a_span(causal):
    g, _ = _grammar(causal, "John works for Acme .", 2)
    toks = g.tokens
    for t in toks.marker(0):
        g.advance(t)
    assert toks.null[0] in g.allowed() and toks.sep[0] not in g.allowed()
    for t in toks.null:
        g.advance(t)
    assert toks.sep[0] not in g.allowed() or toks.sep[0] in toks.marker(1)[:1]


def test_words_spans_and_windows_cover_the_text():
    text = "Acme Corp. (NYSE: ACM) hired John  Smith.\nHe starts Monday."
    assert [text[s:e] for s, e in words(text)][:5] == ["Acme", "Corp", ".", "(", "NYSE"]
    spans = candidate_spans(text, max_words=3)
    assert spans["John  Smith"] == [(29, 40)] and "Corp. (" in spans
    ws = windows(" ".join(f"w{i}" for i in range(50)), max_words=20, overlap=5)
    assert len(ws) == 3 and ws[0].start == 0 and ws[-1].end == 189  # words 0-19, 15-34, 30-49
    rnd = random.Random(0)
    text = " ".join(rnd.choice(VOCAB) for _ in range(300))
    wins = windows(text, max_words=40, overlap=10)
    covered = set()
    for w in wins:
        covered.update(i for i, (s, e) in enumerate(words(text)) if w.start <= s and e <= w.end)
    assert covered == set(range(len(words(text))))
