"""Documents with character-offset annotations, and loaders for CoNLL04, PHEE and CASIE."""

from __future__ import annotations

import gzip
import json
import random
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from effcore.assets import data_dir
from effcore.errors import ConfigError, DataNotFoundError

__all__ = [
    "DATASETS",
    "Document",
    "Entity",
    "Event",
    "Relation",
    "Span",
    "load_dataset",
    "subsample",
]

DATASETS = ("conll04", "phee", "casie")


@dataclass(frozen=True, slots=True, order=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Entity:
    start: int
    end: int
    type: str


@dataclass(frozen=True, slots=True)
class Relation:
    head: Entity
    tail: Entity
    type: str


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    triggers: tuple[Span, ...]
    arguments: tuple[tuple[str, Span], ...]  # (role, span)


@dataclass(slots=True)
class Document:
    id: str
    text: str
    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _root(root: Path | None) -> Path:
    return data_dir(root) / "ie"


def _conll04(root: Path, split: str) -> list[Document]:
    path = root / "conll04" / f"conll04_{split}.json.gz"
    if not path.is_file():
        raise DataNotFoundError(f"missing {path}", hint="restore ie/conll04 from the data payload")
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        records = json.load(fh)
    for i, rec in enumerate(records):
        starts, pos = [], 0
        for tok in rec["tokens"]:
            starts.append(pos)
            pos += len(tok) + 1
        text = " ".join(rec["tokens"])
        ents, open_at = [], None
        for j, tag in enumerate(rec["tags"]):  # BILOU, decoded in order (relations index this list)
            prefix, _, typ = tag.partition("-")
            if prefix in ("B", "U"):
                open_at = j
            if prefix in ("L", "U"):
                ents.append(Entity(starts[open_at], starts[j] + len(rec["tokens"][j]), typ))
        rels = [Relation(ents[r["head"]], ents[r["tail"]], r["type"]) for r in rec["relations"]]
        docs.append(Document(f"conll04-{split}-{i}", text, ents, rels))
    return docs


_PHEE_ROLES = ("Subject", "Treatment", "Effect")
_PHEE_SUBROLES = {"Treatment": ("Drug",)}


def _phee_spans(arg: dict) -> list[Span]:
    return [Span(s, s + len(t)) for ts, ss in zip(arg["text"], arg["start"], strict=True)
            for t, s in zip(ts, ss, strict=True)]  # fmt: skip


def _phee(root: Path, split: str) -> list[Document]:
    path = root / "phee" / f"{split}.jsonl.gz"
    if not path.is_file():
        raise DataNotFoundError(f"missing {path}", hint="restore ie/phee from the data payload")
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    for rec in records:
        events = []
        for ann in rec["annotations"]:
            for ev in ann["events"]:
                args = []
                for role in _PHEE_ROLES:
                    if role in ev:
                        args += [(role, s) for s in _phee_spans(ev[role])]
                        for sub in _PHEE_SUBROLES.get(role, ()):
                            if sub in ev[role]:
                                args += [(sub, s) for s in _phee_spans(ev[role][sub])]
                events.append(Event(ev["event_type"], tuple(_phee_spans(ev["Trigger"])), tuple(args)))
        docs.append(Document(rec["id"], rec["context"], events=events))
    return docs


_SENT = re.compile(r"[^\n]+?(?:[.!?](?=\s)|\n|$)")


def _casie_docs(root: Path) -> list[tuple[str, dict]]:
    path = root / "casie" / "casie.tar.gz"
    if not path.is_file():
        raise DataNotFoundError(f"missing {path}", hint="restore ie/casie from the data payload")
    out = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if "/annotation/" in m.name and m.name.endswith(".json"):
                out.append((Path(m.name).stem, json.load(tar.extractfile(m))))
    return sorted(out, key=lambda x: int(x[0]))


def _casie(root: Path, split: str) -> list[Document]:
    """Sentences of CASIE articles; an event belongs to the sentence of its trigger (nugget), its
    arguments to the same sentence; misaligned offsets (~4% in the source) are dropped."""
    docs = _casie_docs(root)
    order = list(range(len(docs)))
    random.Random(0).shuffle(order)  # fixed article split 80/10/10 (CASIE has no official one)
    n = len(order)
    pick = {
        "train": order[: int(0.8 * n)],
        "dev": order[int(0.8 * n) : int(0.9 * n)],
        "test": order[int(0.9 * n) :],
    }
    out = []
    for di in sorted(pick[split]):
        doc_id, ann = docs[di]
        content = ann["content"]
        events = []
        for hopper in ann.get("cyberevent", {}).get("hopper", []):
            for ev in hopper.get("events", []):
                nug = ev["nugget"]
                if content[nug["startOffset"] : nug["endOffset"]] != nug["text"]:
                    continue
                args = [(a["role"]["type"], Span(a["startOffset"], a["endOffset"])) for a in ev.get("argument", [])
                        if content[a["startOffset"] : a["endOffset"]] == a["text"]]  # fmt: skip
                events.append((ev["subtype"], Span(nug["startOffset"], nug["endOffset"]), args))
        for si, m in enumerate(_SENT.finditer(content)):
            s, e = m.span()
            while s < e and content[s].isspace():
                s += 1
            if e - s < 3:
                continue
            sent_events = []
            for typ, trig, args in events:
                if s <= trig.start and trig.end <= e:
                    inside = tuple(
                        (r, Span(a.start - s, a.end - s)) for r, a in args if s <= a.start and a.end <= e
                    )
                    sent_events.append(Event(typ, (Span(trig.start - s, trig.end - s),), inside))
            out.append(Document(f"casie-{doc_id}-{si}", content[s:e].rstrip(), events=sent_events))
    return out


def load_dataset(name: str, split: str, *, root: Path | None = None) -> list[Document]:
    """``name`` in conll04 / phee / casie, ``split`` in train / dev / test (from ``<data>/ie``)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}", hint=f"use one of {', '.join(DATASETS)}")
    if split not in ("train", "dev", "test"):
        raise ConfigError(f"unknown split {split!r}", hint="use train, dev or test")
    return {"conll04": _conll04, "phee": _phee, "casie": _casie}[name](_root(root), split)


def subsample(docs: list[Document], *, fraction: float = 1.0, limit: int | None = None, seed: int = 0,
              with_events_only: bool = False) -> list[Document]:  # fmt: skip
    """A seeded subset: ``fraction`` of the documents (at least one), then at most ``limit``."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    pool = [d for d in docs if d.events] if with_events_only else list(docs)
    idx = list(range(len(pool)))
    random.Random(seed).shuffle(idx)
    keep = sorted(idx[: max(1, round(fraction * len(pool)))])
    if limit is not None:
        keep = sorted(idx[: min(len(keep), limit)])
    return [pool[i] for i in keep]
