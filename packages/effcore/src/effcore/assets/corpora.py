"""Loaders for the text corpora several packages share: GSM8K, Tiny Shakespeare, WikiText-2."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from effcore.assets.paths import data_file
from effcore.errors import ConfigError, DataNotFoundError

__all__ = ["CORPORA", "GSM8KProblem", "load_gsm8k", "load_text"]

# name -> {split: (relative file, fraction range)}; Tiny Shakespeare has no official split: the
# usual convention is the first 90% for train and the last 10% for validation.
CORPORA: dict[str, dict[str, tuple[str, tuple[float, float]]]] = {
    "wikitext2": {
        "valid": ("text/wikitext2_valid.txt.gz", (0.0, 1.0)),
        "test": ("text/wikitext2_test.txt.gz", (0.0, 1.0)),
    },
    "tinyshakespeare": {
        "train": ("text/tinyshakespeare.txt.gz", (0.0, 0.9)),
        "valid": ("text/tinyshakespeare.txt.gz", (0.9, 1.0)),
        "all": ("text/tinyshakespeare.txt.gz", (0.0, 1.0)),
    },
    "gsm8k": {
        "train": ("text/gsm8k_train.jsonl.gz", (0.0, 1.0)),
        "test": ("text/gsm8k_test.jsonl.gz", (0.0, 1.0)),
    },
}


def _split(corpus: str, split: str) -> tuple[str, tuple[float, float]]:
    if corpus not in CORPORA:
        raise ConfigError(f"unknown corpus {corpus!r}", hint=f"known: {', '.join(CORPORA)}")
    if split not in CORPORA[corpus]:
        raise ConfigError(
            f"corpus {corpus!r} has no split {split!r}", hint=f"its splits: {', '.join(CORPORA[corpus])}"
        )
    return CORPORA[corpus][split]


def _read_gz(path: Path) -> str:
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise DataNotFoundError(
            f"{path} is not a readable gzip text file ({type(err).__name__})",
            hint="restore it from the data payload and check it with `sha256sum -c SHA256SUMS`",
        ) from None


def load_text(
    corpus: str, split: str, *, data_dir: str | Path | None = None, max_chars: int | None = None
) -> str:
    """The raw text of ``corpus``/``split`` ("wikitext2" valid|test, "tinyshakespeare" train|valid|all).

    ``max_chars`` keeps a prefix (cut at a line boundary so no word is split); GSM8K is joined as
    "question\\nanswer" records separated by blank lines.
    """
    rel, (lo, hi) = _split(corpus, split)
    if corpus == "gsm8k":
        text = "\n\n".join(f"{p.question}\n{p.answer}" for p in load_gsm8k(split, data_dir=data_dir))
    else:
        text = _read_gz(data_file(rel, root=data_dir))
        text = text[int(lo * len(text)) : int(hi * len(text))]
    if max_chars is not None and len(text) > max_chars:
        cut = text.rfind("\n", 0, max_chars)
        text = text[: cut if cut > 0 else max_chars]
    return text


@dataclass(kw_only=True, slots=True, frozen=True)
class GSM8KProblem:
    """One grade-school maths problem; ``final`` is the number after ``####``."""

    question: str
    answer: str
    final: str


def load_gsm8k(
    split: str, *, data_dir: str | Path | None = None, limit: int | None = None
) -> list[GSM8KProblem]:
    """GSM8K ``train`` (7,473) or ``test`` (1,319) problems, in file order."""
    rel, _ = _split("gsm8k", split)
    path = data_file(rel, root=data_dir)
    out: list[GSM8KProblem] = []
    for lineno, line in enumerate(_read_gz(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            question, answer = rec["question"], rec["answer"]
        except (ValueError, KeyError, TypeError):
            raise DataNotFoundError(
                f"{path}:{lineno} is not a GSM8K record with question and answer",
                hint="restore the file from the data payload",
            ) from None
        if "####" not in answer:
            raise DataNotFoundError(f"{path}:{lineno} has no '#### <answer>' line", hint="restore the file")
        out.append(GSM8KProblem(question=question, answer=answer, final=answer.rsplit("####", 1)[1].strip()))
        if limit is not None and len(out) >= limit:
            break
    return out
