"""Entity mentions in question text: token bags with demonyms and synonyms, matched as near-contiguous spans."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEMONYMS", "STOP_WORDS", "TEMPLATE_WORDS", "EntityLinker", "Mention", "tokenize", "words_of"]

# Adjectives and nationality nouns as MultiTQ questions write them, mapped to the KG's country names.
DEMONYMS = {
    "afghan": "afghanistan", "albanian": "albania", "algerian": "algeria", "american": "united states",
    "angolan": "angola", "argentine": "argentina", "argentinian": "argentina", "armenian": "armenia",
    "australian": "australia", "austrian": "austria", "azerbaijani": "azerbaijan", "bahraini": "bahrain",
    "bangladeshi": "bangladesh", "belarusian": "belarus", "belgian": "belgium", "bolivian": "bolivia",
    "bosnian": "bosnia herzegovina", "brazilian": "brazil", "british": "united kingdom", "bruneian": "brunei",
    "bulgarian": "bulgaria", "burmese": "myanmar", "burundian": "burundi", "cambodian": "cambodia",
    "cameroonian": "cameroon", "canadian": "canada", "chadian": "chad", "chilean": "chile", "chinese": "china",
    "colombian": "colombia", "congolese": "congo", "croatian": "croatia", "cuban": "cuba", "cypriot": "cyprus",
    "czech": "czech republic", "danish": "denmark", "dutch": "netherlands", "ecuadorian": "ecuador",
    "egyptian": "egypt", "emirati": "united arab emirates", "eritrean": "eritrea", "estonian": "estonia",
    "ethiopian": "ethiopia", "european": "europe", "fijian": "fiji", "filipino": "philippines",
    "philippine": "philippines", "finnish": "finland", "french": "france", "gabonese": "gabon",
    "georgian": "georgia", "german": "germany", "ghanaian": "ghana", "greek": "greece",
    "guatemalan": "guatemala", "haitian": "haiti", "honduran": "honduras", "hungarian": "hungary",
    "icelandic": "iceland", "indian": "india", "indonesian": "indonesia", "iranian": "iran", "iraqi": "iraq",
    "irish": "ireland", "israeli": "israel", "italian": "italy", "ivorian": "cote d ivoire",
    "jamaican": "jamaica", "japanese": "japan", "jordanian": "jordan", "kazakh": "kazakhstan",
    "kazakhstani": "kazakhstan", "kenyan": "kenya", "korean": "south korea", "kuwaiti": "kuwait",
    "kyrgyz": "kyrgyzstan", "lao": "laos", "laotian": "laos", "latvian": "latvia", "lebanese": "lebanon",
    "liberian": "liberia", "libyan": "libya", "lithuanian": "lithuania", "macedonian": "macedonia",
    "malagasy": "madagascar", "malawian": "malawi", "malaysian": "malaysia", "maldivian": "maldives",
    "malian": "mali", "maltese": "malta", "mauritanian": "mauritania", "mauritian": "mauritius",
    "mexican": "mexico", "moldovan": "moldova", "mongolian": "mongolia", "montenegrin": "montenegro",
    "moroccan": "morocco", "mozambican": "mozambique", "namibian": "namibia", "nepalese": "nepal",
    "nepali": "nepal", "nicaraguan": "nicaragua", "nigerian": "nigeria", "nigerien": "niger",
    "norwegian": "norway", "omani": "oman", "pakistani": "pakistan", "palestinian": "palestinian territory occupied",
    "panamanian": "panama", "paraguayan": "paraguay", "peruvian": "peru", "polish": "poland",
    "portuguese": "portugal", "qatari": "qatar", "romanian": "romania", "russian": "russia",
    "rwandan": "rwanda", "saudi": "saudi arabia", "senegalese": "senegal", "serbian": "serbia",
    "singaporean": "singapore", "slovak": "slovakia", "slovenian": "slovenia", "somali": "somalia",
    "spanish": "spain", "sri lankan": "sri lanka", "sudanese": "sudan", "swedish": "sweden", "swiss": "switzerland",
    "syrian": "syria", "taiwanese": "taiwan", "tajik": "tajikistan", "tanzanian": "tanzania", "thai": "thailand",
    "togolese": "togo", "tunisian": "tunisia", "turkish": "turkey", "turkmen": "turkmenistan",
    "ugandan": "uganda", "ukrainian": "ukraine", "uruguayan": "uruguay", "uzbek": "uzbekistan",
    "venezuelan": "venezuela", "vietnamese": "vietnam", "yemeni": "yemen", "zambian": "zambia",
    "zimbabwean": "zimbabwe", "us": "united states", "usa": "united states", "uk": "united kingdom",
}  # fmt: skip
# Role words as questions paraphrase them, rewritten on both sides (names and questions) before matching.
_PHRASES = {
    "prime minister": "head government", "leader": "head government", "premier": "head government",
    "foreign minister": "foreign affairs", "foreign ministry": "foreign affairs", "department": "ministry",
    "people": "citizen", "staff": "personnel", "governmental": "government",
}  # fmt: skip
_SYNONYMS = {
    "defence": "defense", "ministery": "ministry", "organisation": "organization", "labour": "labor",
    "govt": "government", "programme": "program", "centre": "center", "minister": "ministry",
}  # fmt: skip
STOP_WORDS = frozenset(
    [
        "the",
        "of",
        "from",
        "in",
        "for",
        "a",
        "an",
        "and",
        "s",
        "to",
        "at",
        "on",
        "by",
        "with",
        "as",
        "its",
        "their",
        "his",
        "her",
    ]
)
# Words of the question templates: an entity made only of these is never linked.
TEMPLATE_WORDS = frozenset(
    [
        "who",
        "whom",
        "which",
        "what",
        "when",
        "where",
        "country",
        "first",
        "last",
        "before",
        "after",
        "same",
        "day",
        "month",
        "year",
        "time",
        "date",
        "did",
        "does",
        "do",
        "was",
        "were",
        "is",
        "are",
        "has",
        "have",
        "had",
        "been",
        "be",
        "ever",
        "exact",
        "tell",
        "me",
        "could",
        "can",
        "you",
        "person",
        "one",
    ]
)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


def _fold_keep_case(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _singular(tok: str) -> str:
    if len(tok) > 4 and tok.endswith("ies"):
        return tok[:-3] + "y"
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
        return tok[:-1]
    return tok


def words_of(text: str) -> list[str]:
    """The lower-cased, accent-free words of ``text``; mention spans index this list."""
    return re.findall(r"[a-z0-9]+", _fold(text).replace("_", " "))


def _rewrite(words: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(words):
        two = " ".join(words[i : i + 2])
        if two in _PHRASES:
            out += [(t, i) for t in _PHRASES[two].split()]
            i += 2
            continue
        out += [(t, i) for t in _PHRASES.get(words[i], words[i]).split()]
        i += 1
    return out


def tokenize(text: str) -> list[tuple[str, int]]:
    """Normalised content tokens with the index of the word they came from (demonyms expand to names)."""
    words = _rewrite(words_of(text))
    out: list[tuple[str, int]] = []
    k = 0
    while k < len(words):
        w, i = words[k]
        two = f"{w} {words[k + 1][0]}" if k + 1 < len(words) else ""
        if two in DEMONYMS:
            out += [(t, i) for t in DEMONYMS[two].split()]
            k += 2
            continue
        k += 1
        if w in STOP_WORDS:
            continue
        mapped = DEMONYMS.get(w) or DEMONYMS.get(w[:-1] if w.endswith("s") else "")  # "Iraqis"
        if mapped:
            out += [(t, i) for t in mapped.split() if t not in STOP_WORDS]
        else:
            w = _singular(_SYNONYMS.get(w, w))
            out.append((_SYNONYMS.get(w, w), i))
    return out


@dataclass(frozen=True, slots=True)
class Mention:
    """An entity found in the text: its id, the words it spans and how much of its token bag matched."""

    entity: int
    start: int
    end: int
    score: float


class EntityLinker:
    """Finds entity mentions as near-contiguous spans holding an entity's whole token bag."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.bags: list[frozenset[str]] = []
        self.anchors: list[frozenset[str]] = []  # tokens a partial match must contain (the country part)
        self._by_token: dict[str, list[int]] = defaultdict(list)
        df: dict[str, int] = defaultdict(int)
        for i, name in enumerate(self.names):
            bag = frozenset(t for t, _ in tokenize(name.replace("/", " ")))
            if bag <= TEMPLATE_WORDS:
                bag = frozenset()
            self.bags.append(bag)
            inner = re.search(r"\(([^()]*)\)\W*$", name.replace("_", " "))
            self.anchors.append(frozenset(t for t, _ in tokenize(inner.group(1))) & bag if inner else bag)
            for t in bag:
                self._by_token[t].append(i)
                df[t] += 1
        n = max(len(self.names), 1)
        self.idf = {t: math.log(1 + n / c) for t, c in df.items()}

    def candidates(self, text: str, *, partial: float = 0.5) -> list[Mention]:
        """Mentions of every entity whose token bag occurs within a window of ``len(bag) + 2`` words.

        One mention per distinct window (a name said twice gives two). With ``partial < 1``, bags of
        three or more tokens also match when the present tokens carry at least that share of the
        bag's IDF weight (``score`` is then scaled by the share), so "the United States Cabinet of
        Ministers" still reaches ``Cabinet_/_Council_of_Ministers_/_Advisors_(United_States)``.
        """
        positions: dict[str, list[int]] = defaultdict(list)
        at_word: dict[int, set[str]] = defaultdict(set)
        for t, w in tokenize(text):
            positions[t].append(w)
            at_word[w].add(t)
        hits: dict[int, int] = defaultdict(int)
        for t in positions:
            for e in self._by_token.get(t, ()):
                hits[e] += 1
        out = []
        for e, c in hits.items():
            bag = self.bags[e]
            weight = sum(self.idf[t] for t in bag)
            present = [t for t in bag if t in positions]
            share = sum(self.idf[t] for t in present) / weight
            if c != len(bag):
                # Partial: a sector name ("Role (Country)") whose country is all there and most of its role.
                role = bag - self.anchors[e]
                role_w = sum(self.idf[t] for t in role) or 1.0
                role_share = sum(self.idf[t] for t in role if t in positions) / role_w
                if len(bag) < 3 or not role or not self.anchors[e] <= positions.keys():
                    continue
                if share < partial or role_share < 0.3:
                    continue
            for s, end in self._spans([positions[t] for t in present], len(bag) + 2):
                # No foreign content word inside the span: "China accuse Police" is not Police (China).
                if any(not (at_word[w] <= bag) for w in range(s, end + 1) if w in at_word):
                    continue
                out.append(Mention(e, s, end + 1, weight * share * (1.0 if c == len(bag) else 0.9)))
        return out

    @staticmethod
    def _spans(lists: list[list[int]], width: int) -> list[tuple[int, int]]:
        # For each start position, the nearest occurrence of every token at or after it.
        found = set()
        for s in sorted({p for ps in lists for p in ps}):
            ends = [min((p for p in ps if p >= s), default=None) for ps in lists]
            if any(x is None for x in ends):
                continue
            if min(ends) == s and max(ends) - s + 1 <= width:
                found.add((s, max(ends)))
        # Keep only minimal windows (none containing another).
        return sorted(w for w in found if not any(o != w and w[0] <= o[0] and o[1] <= w[1] for o in found))

    def link(self, text: str, *, limit: int = 4) -> list[Mention]:
        """Non-overlapping mentions, the most specific (highest token weight) first, in text order."""
        chosen: list[Mention] = []
        for m in sorted(self.candidates(text), key=lambda m: (-m.score, m.start, m.entity)):
            if all(m.end <= c.start or m.start >= c.end for c in chosen):
                chosen.append(m)
            if len(chosen) >= limit:
                break
        return sorted(chosen, key=lambda m: m.start)

    def unlinked_runs(self, text: str, taken: Sequence[Mention]) -> list[tuple[list[int], str]]:
        """Capitalised word runs no mention covers, as ``(word indexes, phrase)``: names that
        the token bags missed (template and stop words never start or join a run)."""
        words = re.findall(r"[A-Za-z0-9]+", _fold_keep_case(text).replace("_", " "))
        covered = {i for m in taken for i in range(m.start, m.end)}
        runs, cur = [], []
        for i, w in enumerate(words):
            if w[:1].isupper() and i not in covered and w.lower() not in STOP_WORDS | TEMPLATE_WORDS:
                cur.append(i)
            else:
                if cur:
                    runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        return [(run, " ".join(words[i] for i in run)) for run in runs]

    def knows(self, phrase: str) -> bool:
        """Does any entity name hold one of ``phrase``'s content tokens (after demonyms and synonyms)?"""
        return any(t in self._by_token for t, _ in tokenize(phrase))

    def fuzzy(self, text: str, taken: Sequence[Mention], *, cutoff: float = 0.8) -> list[Mention]:
        """Capitalised word runs no mention covers, matched to a name by spelling (``Mohammed VI`` ->
        ``Muhammad_VI``); difflib ratio on accent-free forms, at least ``cutoff``."""
        import difflib

        if not hasattr(self, "_folded"):
            self._folded = [
                " ".join(re.findall(r"[a-z0-9]+", _fold(n).replace("_", " "))) for n in self.names
            ]
        out = []
        for run, phrase in self.unlinked_runs(text, taken):
            phrase = phrase.lower()
            if len(phrase) < 4:
                continue
            best = difflib.get_close_matches(phrase, self._folded, n=1, cutoff=cutoff)
            if best:
                e = self._folded.index(best[0])
                out.append(
                    Mention(e, run[0], run[-1] + 1, sum(self.idf.get(t, 1.0) for t in self.bags[e]) * 0.8)
                )
        return out
