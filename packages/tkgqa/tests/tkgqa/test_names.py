"""Name normalisation and lookup: exact, AT2QA-normalised, spelling-robust, fuzzy, with suggestions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkgqa.names import AmbiguousNameError, NameIndex, UnknownNameError, at2qa_norm, kg_to_answer, robust_norm

VOCAB = ["Barack_Obama", "Ministry_(Iran)", "Citizen_(North_Korea)", '"Nicholas_""Nick""_Xenophon"',
         "Oluṣẹgun_Ọbasanjọ", "Wolfgang_Schüssel", "NA", "Head_of_Government_(Pakistan)"]  # fmt: skip
words = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=8)


def test_at2qa_norm_matches_the_authors_rule():
    assert at2qa_norm("Ministry_(Iran)") == "ministry (iran)"
    assert at2qa_norm("  Jack   Straw ") == "jack straw"


def test_kg_to_answer_undoes_csv_quoting_and_underscores():
    assert kg_to_answer('"Nicholas_""Nick""_Xenophon"') == 'Nicholas "Nick" Xenophon'
    assert kg_to_answer("Citizen_(North_Korea)") == "Citizen (North Korea)"


@given(st.lists(words, min_size=1, max_size=4).map("_".join))
def test_robust_norm_is_idempotent(name):
    assert robust_norm(robust_norm(name)) == robust_norm(name)


@given(st.lists(st.lists(words, min_size=1, max_size=3).map("_".join), min_size=1, max_size=20, unique=True))
def test_every_vocabulary_name_resolves_to_itself(names):
    index = NameIndex(names)
    for i, n in enumerate(names):
        assert index.lookup(n) == i


def test_answer_forms_diacritics_and_quoting_resolve():
    index = NameIndex(VOCAB)
    assert index.lookup("barack obama") == 0
    assert index.lookup("Citizen (North Korea)") == 2
    assert index.lookup('Nicholas "Nick" Xenophon') == 3
    assert index.lookup("Olusegun Obasanjo") == 4
    assert index.lookup("Wolfgang Schussel") == 5
    assert index.lookup("NA") == 6  # not turned into a missing value


def test_a_close_misspelling_resolves_and_a_far_one_suggests():
    index = NameIndex(VOCAB)
    assert index.lookup("Barak Obama") == 0
    with pytest.raises(UnknownNameError) as err:
        index.lookup("Head of State (Pakistan)")
    assert "Head_of_Government_(Pakistan)" in err.value.suggestions
    assert "did you mean" in str(err.value)


def test_names_that_normalise_alike_are_reported_as_ambiguous():
    index = NameIndex(["Lee.Min", "Lee-Min"])
    with pytest.raises(AmbiguousNameError):
        index.lookup("lee min")
