"""The answer grammar of a prompt's slots, as token sequences: what decoding may emit, and training targets.

Output of a prompt with n slots: ``M0 a (SEP a)* M1 ... M(n-1) ... END`` where ``Mk`` is slot k's marker,
each answer ``a`` is the token sequence of a span of the input text or the null answer (alone in its
slot). :class:`SlotGrammar` follows every parse still possible after each token (an NFA over tries), so
a span that shares tokens with the separator, a marker or the null answer never confuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["GrammarTokens", "SlotGrammar", "SpanTrie", "encode_target"]


class _Node:
    __slots__ = ("children", "texts")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.texts: list[str] = []  # spans whose token sequence ends here


class SpanTrie:
    """Token-sequence trie of the candidate spans of one text."""

    def __init__(self, spans: dict[str, list[int]]) -> None:
        self.root = _Node()
        for text, ids in spans.items():
            node = self.root
            for t in ids:
                node = node.children.setdefault(t, _Node())
            node.texts.append(text)


@dataclass(frozen=True, slots=True)
class GrammarTokens:
    """The fixed token sequences of a backbone: slot markers, separator, null answer, end."""

    marker: Callable[[int], list[int]]
    sep: list[int]
    null: list[int]
    end: list[int]
    answer: Callable[[str], list[int]]  # a span's token sequence (the same in targets and the trie)


def encode_target(tokens: GrammarTokens, answers: Sequence[Sequence[str]]) -> list[int]:
    """The training target of one prompt: ``answers[k]`` are slot k's spans (empty -> null)."""
    out: list[int] = []
    for k, spans in enumerate(answers):
        out += tokens.marker(k)
        if not spans:
            out += tokens.null
        for i, text in enumerate(spans):
            out += (tokens.sep if i else []) + tokens.answer(text)
    return out + tokens.end


@dataclass(frozen=True, slots=True)
class _State:
    phase: str  # "fixed": inside a fixed sequence; "span": inside the trie; "done"
    slot: int
    seq: tuple[int, ...] = ()  # the fixed sequence being matched
    pos: int = 0
    then: str = ""  # after the fixed sequence: "answer", "next" (after sep), "close" (after null)
    node: _Node | None = None
    answers: tuple[tuple[int, str], ...] = field(default=())


class SlotGrammar:
    """Constrained decoding of one prompt: ``allowed()`` token ids, ``advance(token)``, ``answers()``."""

    def __init__(self, tokens: GrammarTokens, trie: SpanTrie, n_slots: int) -> None:
        self.tokens, self.trie, self.n_slots = tokens, trie, n_slots
        self.states = self._closure([_State("fixed", 0, tuple(tokens.marker(0)), 0, "answer")])

    def _slot_end(self, s: _State) -> _State:
        k = s.slot + 1
        if k == self.n_slots:
            return _State("fixed", k, tuple(self.tokens.end), 0, "finish", answers=s.answers)
        return _State("fixed", k, tuple(self.tokens.marker(k)), 0, "answer", answers=s.answers)

    def _closure(self, states: list[_State]) -> list[_State]:
        out, seen, todo = [], set(), list(states)
        while todo:
            s = todo.pop()
            key = (s.phase, s.slot, s.seq, s.pos, s.then, id(s.node), len(s.answers))
            if key in seen:
                continue
            seen.add(key)
            if s.phase == "fixed" and s.pos == len(s.seq):
                if s.then == "finish":
                    todo.append(_State("done", s.slot, answers=s.answers))
                elif s.then == "close":
                    todo.append(self._slot_end(s))
                else:
                    todo.append(_State("span", s.slot, node=self.trie.root, answers=s.answers))
                    if s.then == "answer":  # the null answer only as a slot's first answer
                        todo.append(
                            _State("fixed", s.slot, tuple(self.tokens.null), 0, "close", answers=s.answers)
                        )
                continue
            if s.phase == "span" and s.node is not None and s.node.texts:
                done = (*s.answers, (s.slot, s.node.texts[0]))
                todo.append(_State("fixed", s.slot, tuple(self.tokens.sep), 0, "next", answers=done))
                todo.append(self._slot_end(_State("span", s.slot, answers=done)))
            out.append(s)
        return out

    @property
    def finished(self) -> bool:
        return any(s.phase == "done" for s in self.states)

    def null_start(self) -> int | None:
        """The null answer's first token id if a slot's first answer may begin with it now, else None."""
        for s in self.states:
            if s.phase == "fixed" and s.then == "close" and s.pos == 0:
                return s.seq[0]
        return None

    def allowed(self) -> list[int]:
        """Token ids that keep the output inside the grammar (empty once finished)."""
        ids: set[int] = set()
        for s in self.states:
            if s.phase == "fixed":
                ids.add(s.seq[s.pos])
            elif s.phase == "span" and s.node is not None:
                ids.update(s.node.children)
        return sorted(ids)

    def advance(self, token: int) -> None:
        nxt = []
        for s in self.states:
            if s.phase == "fixed" and s.seq[s.pos] == token:
                nxt.append(_State("fixed", s.slot, s.seq, s.pos + 1, s.then, answers=s.answers))
            elif s.phase == "span" and s.node is not None and token in s.node.children:
                nxt.append(_State("span", s.slot, node=s.node.children[token], answers=s.answers))
        if not nxt:
            raise ValueError(f"token {token} is not allowed here")
        self.states = self._closure(nxt)

    def answers(self) -> list[list[str]]:
        """Each slot's answers (null -> []) of the finished parse, or of the longest partial one."""
        done = [s for s in self.states if s.phase == "done"]
        # a span spelled like the null answer reads as null (the parse with fewer answers)
        best = (
            min(done, key=lambda s: len(s.answers))
            if done
            else max(self.states, key=lambda s: len(s.answers))
        )
        out: list[list[str]] = [[] for _ in range(self.n_slots)]
        for k, text in best.answers:
            if text not in out[k]:
                out[k].append(text)
        return out
