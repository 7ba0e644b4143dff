"""Synthetic stand-ins for the MultiTQ payload: a small TKG, template questions, AT2QA-style references."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tkgqa.embed import HashEncoder
from tkgqa.index import FactIndex
from tkgqa.relations import RelationScorer
from tkgqa.search import SearchTool
from tkgqa.synthetic import make_benchmark


@pytest.fixture(scope="session")
def bench():
    """A deterministic synthetic benchmark: 1,500 facts, 120 questions (20 of each qtype)."""
    return make_benchmark(seed=0)


@pytest.fixture(scope="session")
def hash_index(bench):
    enc = HashEncoder()
    return enc, FactIndex(enc.encode(bench.store.texts()).astype("float16"), encoder_name=enc.name,
                          kg_digest=bench.store.digest)  # fmt: skip


@pytest.fixture
def tool(bench, hash_index):
    """The default-mode search tool over the synthetic KG (hash encoder: no model needed)."""
    enc, idx = hash_index
    return SearchTool(bench.store, idx, enc)


@pytest.fixture(scope="session")
def planner(bench, hash_index):
    from tkgqa.planner import Planner

    enc, _ = hash_index
    return Planner(bench.store.entities.names, RelationScorer(bench.store.relations.names, enc))


def _gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)


@pytest.fixture
def data_dir(tmp_path, bench, monkeypatch) -> Path:
    """A data dir laid out like ../shared/data/multitq, holding the synthetic KG and questions."""
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    (root / "multitq").mkdir(parents=True)
    _gz(root / "multitq" / "kg_partial.tsv.gz", bench.tsv)
    qs = [{"quid": q.quid, "question": q.question, "answers": q.answers, "answer_type": q.answer_type,
           "split": "dev" if i % 4 else "test"} for i, q in enumerate(bench.questions)]  # fmt: skip
    _gz(root / "multitq" / "questions.jsonl.gz", "".join(json.dumps(q) + "\n" for q in qs))
    ref = [{"qid": q["quid"], "correct": i % 3 != 0, "n_tool_calls": 4,
            "pred": q["answers"][0] if i % 3 else "Nobody"} for i, q in enumerate(qs)]  # fmt: skip
    _gz(root / "multitq" / "at2qa_reference_correct.jsonl.gz", "".join(json.dumps(r) + "\n" for r in ref))
    labelled = [{k: getattr(q, k) for k in ("quid", "question", "answers", "answer_type", "time_level", "qtype",
                                            "qlabel")} for q in bench.questions[:30]]  # fmt: skip
    (root / "multitq" / "labeled_500.json").write_text(json.dumps(labelled))
    return root


@pytest.fixture(scope="session")
def tiny_lm():
    """A byte-level tokenizer with a chat template and a 2-layer random Llama: a stand-in LM, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    raw = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<pad>",
                                  additional_special_tokens=["<|im_start|>"])  # fmt: skip
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # fmt: skip
    import torch

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    return LlamaForCausalLM(cfg).eval(), tok
