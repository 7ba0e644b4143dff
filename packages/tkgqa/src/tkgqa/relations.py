"""Relation readings of a question: similarity of its relation words to each KG relation's name."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from tkgqa.embed import Encoder
from tkgqa.names import kg_to_answer

__all__ = ["LEXICON", "RelationScorer"]

_INTENT = r"(want|wish|would like|intend|intention|interest|seek|desire|announce|declare|express|hope|keen|eager|plan|offer|propose)"
# Question phrasings of CAMEO relations: (pattern over the residual words, relation, bonus). Domain
# knowledge of the event codebook (intent vs act, host vs visit), not fitted to answers.
LEXICON: tuple[tuple[str, str, float], ...] = (
    (r"\b(host|hosted|hosting|receive|received|receiving|welcome|welcomed)\b.*\bvisit", "Host_a_visit", 0.5),
    (r"\bvisit(s|ed|ing)?\b", "Make_a_visit", 0.3),
    (rf"{_INTENT}\w*\b.*\b(meet|negotiat|talk|meeting)", "Express_intent_to_meet_or_negotiate", 0.5),
    (r"\bnegotiat|\bnegotiations\b", "Engage_in_negotiation", 0.3),
    (
        rf"{_INTENT}\w*\b.*\b(diplomatic|policy support)",
        "Express_intent_to_engage_in_diplomatic_cooperation_(such_as_policy_support)",
        0.55,
    ),
    (r"\bdiplomatic cooperation\b", "Engage_in_diplomatic_cooperation", 0.35),
    (rf"{_INTENT}\w*\b.*\b(cooperat|collaborat)", "Express_intent_to_cooperate", 0.45),
    (rf"{_INTENT}\w*\b.*\beconomic", "Express_intent_to_cooperate_economically", 0.5),
    (
        r"\b(praise|praised|praising|endorse|endorsed|commend|commended|laud|lauded|applaud|support|supported|hail|hailed)\b",
        "Praise_or_endorse",
        0.35,
    ),
    (
        r"\b(appeal|appealed|request|requested|ask|asked|plead|call on|called on|made a request)\b",
        "Make_an_appeal_or_request",
        0.3,
    ),
    (r"\b(accuse|accused|blame|blamed|charge|charged)\b", "Accuse", 0.4),
    (
        r"\b(criticise|criticised|criticize|criticized|condemn|condemned|denounce|denounced|rebuke|censure)\b",
        "Criticize_or_denounce",
        0.4,
    ),
    (r"\b(sign|signed|signing)\b.*\bagreement", "Sign_formal_agreement", 0.5),
    (r"\b(reject|rejected|decline|declined|turn down|turned down|refuse|refused)\b", "Reject", 0.35),
    (r"\binvestigat", "Investigate", 0.4),
    (r"\boptimis", "Make_optimistic_comment", 0.5),
    (r"\b(pessimis|negative (remark|comment|statement)|negatively)", "Make_pessimistic_comment", 0.5),
    (r"\b(empath|sympath)", "Make_empathetic_comment", 0.5),
    (r"\bthreat", "Threaten", 0.4),
    (r"\b(telephone|phone|call)\b", "Discuss_by_telephone", 0.45),
    (r"\bunconventional\b", "Use_unconventional_violence", 0.55),
    (r"\bconventional (military|force)", "Use_conventional_military_force", 0.5),
    (r"\bsmall arms\b", "fight_with_small_arms_and_light_weapons", 0.55),
    (r"\bhumanitarian\b", "Provide_humanitarian_aid", 0.5),
    (r"\beconomic aid\b", "Provide_economic_aid", 0.5),
    (r"\bmilitary aid\b", "Provide_military_aid", 0.5),
    (r"\b(release|released|return|returned|repatriat)", "Return,_release_person(s)", 0.45),
    (r"\b(arrest|detain|detained|arrested)\b", "Arrest,_detain,_or_charge_with_legal_action", 0.45),
    (r"\b(demand|demanded)\b", "Demand", 0.4),
    (r"\b(consult|consulted|discuss|discussed)\b", "Consult", 0.35),
    (r"\b(statement|state|stated|comment|commented|say|said)\b", "Make_statement", 0.2),
    (r"\bsymbolic\b", "Engage_in_symbolic_act", 0.5),
    (r"\bthird\b.*\blocation|\bthird country\b", "Meet_at_a_'third'_location", 0.5),
)


class RelationScorer:
    """Cosine between the question's residual words and each relation name (embedded once), plus lexicon cues."""

    def __init__(self, relations: Sequence[str], encoder: Encoder, *, lexicon: bool = True) -> None:
        self.relations = list(relations)
        self.encoder = encoder
        texts = [kg_to_answer(r).lower() for r in self.relations]
        self.vectors = encoder.encode(texts) if texts else np.zeros((0, encoder.dim), np.float32)
        self._cache: dict[str, dict[str, float]] = {}
        self._lexicon = [(re.compile(p, re.I), rel, bonus) for p, rel, bonus in (LEXICON if lexicon else ())]

    def scores(self, text: str) -> dict[str, float]:
        """Relation name -> cosine with ``text``."""
        if (hit := self._cache.get(text)) is not None:
            return hit
        q = self.encoder.encode([text])[0]
        sims = self.vectors @ q
        out = {r: float(s) for r, s in zip(self.relations, sims.tolist(), strict=False)}
        for pattern, rel, bonus in self._lexicon:
            if rel in out and pattern.search(text):
                out[rel] += bonus
        if len(self._cache) < 65536:
            self._cache[text] = out
        return out
