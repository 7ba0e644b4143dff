"""Name normalisation and matching: AT2QA's exact rule, a spelling-robust rule and fuzzy suggestions."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence

from effcore.errors import EffmlError

__all__ = [
    "AmbiguousNameError",
    "NameIndex",
    "UnknownNameError",
    "at2qa_norm",
    "kg_to_answer",
    "robust_norm",
]

_SPACES = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]|_")


def at2qa_norm(name: str) -> str:
    """AT2QA's normalisation: lower-case, ``_`` to space, squeeze spaces (punctuation kept)."""
    return " ".join(name.replace("_", " ").lower().split())


def robust_norm(name: str) -> str:
    """Lower-case, drop diacritics and CSV quoting, ``_`` and punctuation to spaces, squeeze spaces."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _PUNCT.sub(" ", text.lower())
    return _SPACES.sub(" ", text).strip()


def kg_to_answer(name: str) -> str:
    """A KG name in MultiTQ answer form: CSV quoting undone, ``_`` to spaces (parentheses kept)."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('""', '"')
    return name.replace("_", " ")


class UnknownNameError(EffmlError, KeyError):
    """A name that matches nothing in the KG; ``suggestions`` holds close names."""

    def __init__(self, kind: str, name: str, suggestions: Sequence[str]) -> None:
        self.kind, self.name, self.suggestions = kind, name, list(suggestions)
        hint = (
            "did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
            if self.suggestions
            else f"no {kind} name is close; check the spelling"
        )
        super().__init__(f"unknown {kind} {name!r}", hint=hint)


class AmbiguousNameError(EffmlError, KeyError):
    """A normalised name that several KG names share."""

    def __init__(self, kind: str, name: str, candidates: Sequence[str]) -> None:
        self.kind, self.name, self.candidates = kind, name, list(candidates)
        super().__init__(
            f"{kind} {name!r} matches {len(candidates)} names",
            hint="use one of " + ", ".join(repr(c) for c in candidates),
        )


class NameIndex:
    """Maps free-form names to ids of a fixed vocabulary: exact, AT2QA-normalised, robust, then fuzzy."""

    def __init__(self, names: Sequence[str], *, kind: str = "entity") -> None:
        self.names = list(names)
        self.kind = kind
        self._exact = {n: i for i, n in enumerate(self.names)}
        self._at2qa: dict[str, list[int]] = {}
        self._robust: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            self._at2qa.setdefault(at2qa_norm(n), []).append(i)
            self._robust.setdefault(robust_norm(n), []).append(i)
        self._robust_keys = list(self._robust)

    def __len__(self) -> int:
        return len(self.names)

    def exact(self, name: str) -> int | None:
        """The id of ``name`` as stored (raw KG form), else None."""
        return self._exact.get(name)

    def at2qa(self, name: str) -> list[int]:
        """Ids whose AT2QA-normalised form equals that of ``name`` (the authors' filter rule)."""
        return list(self._at2qa.get(at2qa_norm(name), []))

    def lookup(self, name: str, *, fuzzy: bool = True, cutoff: float = 0.92) -> int:
        """Resolve ``name`` to one id, or raise :class:`UnknownNameError` with close names.

        Exact, then AT2QA-normalised, then robust (diacritics, punctuation, quoting), then, when
        ``fuzzy``, one fuzzy match whose similarity is at least ``cutoff`` and clearly above the next.
        """
        if (i := self._exact.get(name)) is not None:
            return i
        for table, key in ((self._at2qa, at2qa_norm(name)), (self._robust, robust_norm(name))):
            ids = table.get(key, [])
            if len(ids) == 1:
                return ids[0]
            if len(ids) > 1:
                raise AmbiguousNameError(self.kind, name, [self.names[i] for i in ids])
        if fuzzy:
            scored = self._scored(name, n=2)
            if scored and scored[0][0] >= cutoff and (len(scored) == 1 or scored[0][0] - scored[1][0] > 0.03):
                ids = self._robust[scored[0][1]]
                if len(ids) == 1:
                    return ids[0]
        raise UnknownNameError(self.kind, name, self.suggest(name))

    def suggest(self, name: str, n: int = 5) -> list[str]:
        """Up to ``n`` vocabulary names closest to ``name`` (difflib ratio on robust forms)."""
        out: list[str] = []
        for _, key in self._scored(name, n=n):
            out += [self.names[i] for i in self._robust[key]]
        return out[:n]

    def _scored(self, name: str, *, n: int) -> list[tuple[float, str]]:
        key = robust_norm(name)
        if not key:
            return []
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(key)
        scored = []
        for cand in self._robust_keys:
            matcher.set_seq1(cand)
            if matcher.real_quick_ratio() < 0.6 or matcher.quick_ratio() < 0.6:
                continue
            if (r := matcher.ratio()) >= 0.6:
                scored.append((r, cand))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return scored[:n]
