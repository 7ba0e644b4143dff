"""Tiny random-weight backbones (a Llama and a T5) with a byte-level BPE tokenizer trained here, offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from promptie.backbone import Backbone

WORDS = ["John", "Smith", "works", "for", "Acme", "Corp", "in", "Boston", ".", "Mary", "Jones", "lives", "in", "Paris", ",", "France", ".", "The", "hackers", "stole", "passwords", "from", "Target", "in", "2014", ".", "The", "patient", "took", "aspirin", "and", "developed", "a", "rash", ".", "none", "yes", "no", "|", "[", "]", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "Text", ":", "Answer", "Is", "this", "statement", "consistent", "with", "the", "text", "?"]  # fmt: skip


def make_tokenizer(*, sentinels: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "</s>"] + [f"<extra_id_{i}>" for i in range(sentinels)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    corpus = [" ".join(WORDS[i : i + 12]) for i in range(len(WORDS))] * 3
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")
    if sentinels:
        fast.add_special_tokens({"additional_special_tokens": special[2:]})
    return fast


def tiny_causal(seed: int = 0) -> Backbone:
    from effcore.testing.tiny import tiny_model

    tok = make_tokenizer()
    torch.manual_seed(seed)
    model = tiny_model("llama", vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       bos_token_id=tok.eos_token_id).eval()  # fmt: skip
    return Backbone(model, tok, kind="causal", name="tiny-llama")


def tiny_t5(seed: int = 0) -> Backbone:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = make_tokenizer(sentinels=10)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                   num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id, dropout_rate=0.0)  # fmt: skip
    torch.manual_seed(seed)
    return Backbone(T5ForConditionalGeneration(cfg).eval(), tok, kind="seq2seq", name="tiny-t5")


@pytest.fixture
def fresh():
    """Factories of new tiny backbones (training changes their weights): ``fresh["causal"]()``."""
    return {"causal": tiny_causal, "t5": tiny_t5}


@pytest.fixture(scope="session")
def causal() -> Backbone:
    return tiny_causal()


@pytest.fixture(scope="session")
def t5() -> Backbone:
    return tiny_t5()


@pytest.fixture(scope="session")
def null_biased():
    """A tiny random causal LM whose null answer's first token gets +6 logits, so that greedy decoding
    answers null to most slots, as the CASIE checkpoints do."""
    bb = tiny_causal()
    null = bb.grammar_tokens("|", "none").null[0]

    def boost(_module, _inputs, out):
        out[..., null] += 6.0
        return out

    bb.model.lm_head.register_forward_hook(boost)
    return bb


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """The tiny models saved as HF folders (what `--model PATH` loads)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, bb in (("llama", tiny_causal()), ("t5", tiny_t5())):
        bb.model.save_pretrained(root / name)
        bb.tokenizer.save_pretrained(root / name)
        out[name] = root / name
    return out


CONLL = [
    {"tokens": ["John", "Smith", "works", "for", "Acme", "Corp", "in", "Boston", "."],
     "tags": ["B-Peop", "L-Peop", "O", "O", "B-Org", "L-Org", "O", "U-Loc", "O"],
     "relations": [{"head": 0, "tail": 1, "type": "Work_For"}, {"head": 1, "tail": 2, "type": "OrgBased_In"}]},
    {"tokens": ["Mary", "Jones", "lives", "in", "Paris", ",", "France", "."],
     "tags": ["B-Peop", "L-Peop", "O", "O", "U-Loc", "O", "U-Loc", "O"],
     "relations": [{"head": 0, "tail": 1, "type": "Live_In"}, {"head": 1, "tail": 2, "type": "Located_In"}]},
]  # fmt: skip

PHEE = [
    {"id": "1", "context": "The patient took aspirin and developed a rash .", "is_mult_event": False,
     "annotations": [{"events": [{"event_id": "E1", "event_type": "Adverse_event",
                                  "Trigger": {"text": [["developed"]], "start": [[29]]},
                                  "Treatment": {"text": [["aspirin"]], "start": [[17]],
                                                "Drug": {"text": [["aspirin"]], "start": [[17]]}},
                                  "Effect": {"text": [["rash"]], "start": [[41]]}}]}]},
]  # fmt: skip


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """``ie/conll04`` and ``ie/phee`` laid out like ../shared/data, with a few synthetic sentences."""
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    (root / "ie" / "conll04").mkdir(parents=True)
    (root / "ie" / "phee").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        with gzip.open(root / "ie" / "conll04" / f"conll04_{split}.json.gz", "wt") as fh:
            fh.write(json.dumps(CONLL))
        with gzip.open(root / "ie" / "phee" / f"{split}.jsonl.gz", "wt") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in PHEE))
    return root


@pytest.fixture
def run_dir(tmp_path, data_dir, model_dirs):
    """A checkpoint trained for 2 steps on the synthetic CoNLL04 (LM judge: no MiniLM needed)."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        'judge = "lm"\nlora_r = 4\nbatch_size = 1\ntasks = ["slots", "direct"]\n[extract]\nmax_new_tokens = 12\n'
    )
    from effcore.testing.cli import cli_ok
    from promptie.cli import app

    out = tmp_path / "run"
    cli_ok(app, ["train", "--data", "conll04", "--model", str(model_dirs["llama"]), "--steps", "2", "--config", str(cfg),
                 "--out-dir", str(out), "--data-dir", str(data_dir), "--out", str(tmp_path / "train.json")])  # fmt: skip
    return out
