"""Data directory resolution, corpus loaders and the model cache's integrity checks."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest

from effcore.assets import asset, data_dir, load_gsm8k, load_text
from effcore.assets import models as models_mod
from effcore.errors import AssetError, ConfigError, DataNotFoundError


@pytest.fixture
def fake_data(tmp_path):
    text = tmp_path / "data" / "text"
    text.mkdir(parents=True)
    with gzip.open(text / "wikitext2_valid.txt.gz", "wt") as fh:
        fh.write(" = Title = \n alpha beta gamma \n delta epsilon \n")
    with gzip.open(text / "tinyshakespeare.txt.gz", "wt") as fh:
        fh.write("".join(f"line {i}\n" for i in range(100)))
    with gzip.open(text / "gsm8k_test.jsonl.gz", "wt") as fh:
        for i in range(3):
            fh.write(json.dumps({"question": f"q{i}?", "answer": f"work\n#### {i * 7}"}) + "\n")
    return tmp_path / "data"


def test_data_dir_precedence_option_over_env(fake_data, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("EFFML_DATA", str(other))
    assert data_dir() == other.resolve()
    assert data_dir(fake_data) == fake_data.resolve()


def test_missing_data_dir_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="EFFML_DATA") as err:
        data_dir()
    assert "\n" not in str(err.value)


def test_text_splits_partition_the_corpus(fake_data):
    whole = load_text("tinyshakespeare", "all", data_dir=fake_data)
    train = load_text("tinyshakespeare", "train", data_dir=fake_data)
    valid = load_text("tinyshakespeare", "valid", data_dir=fake_data)
    assert train + valid == whole and len(train) == int(0.9 * len(whole))
    assert load_text("wikitext2", "valid", data_dir=fake_data, max_chars=20).endswith("Title = ")


def test_gsm8k_final_answers_are_parsed(fake_data):
    problems = load_gsm8k("test", data_dir=fake_data)
    assert [p.final for p in problems] == ["0", "7", "14"]
    assert load_gsm8k("test", data_dir=fake_data, limit=2)[-1].question == "q1?"


def test_malformed_and_missing_corpus_files_raise_clearly(fake_data):
    with pytest.raises(DataNotFoundError, match="wikitext2_test"):
        load_text("wikitext2", "test", data_dir=fake_data)
    (fake_data / "text" / "wikitext2_valid.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataNotFoundError, match="not a readable gzip"):
        load_text("wikitext2", "valid", data_dir=fake_data)
    with gzip.open(fake_data / "text" / "gsm8k_test.jsonl.gz", "wt") as fh:
        fh.write('{"question": "no answer"}\n')
    with pytest.raises(DataNotFoundError, match=":1 is not a GSM8K record"):
        load_gsm8k("test", data_dir=fake_data)
    with pytest.raises(ConfigError, match="no split"):
        load_text("wikitext2", "train", data_dir=fake_data)


def test_unknown_asset_suggests_the_close_name():
    with pytest.raises(AssetError, match="did you mean 'smollm2'"):
        asset("smollm")


def _fake_cache(folder):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    (folder / "config.json").write_text("{}")
    files = {
        p.name: {"size": p.stat().st_size, "sha256": models_mod._sha256(p)} for p in sorted(folder.iterdir())
    }
    (folder / models_mod._MANIFEST).write_text(json.dumps({"files": files}))


def test_verify_detects_truncated_missing_and_corrupt_files(tmp_path):
    folder = tmp_path / "m"
    _fake_cache(folder)
    assert models_mod._verify(folder) is None
    weights = folder / "model.safetensors"
    weights.write_bytes(b"x" * 999)
    assert "truncated" in models_mod._verify(folder)
    weights.write_bytes(b"y" * 1000)
    assert "sha256" in models_mod._verify(folder)
    weights.unlink()
    assert "missing" in models_mod._verify(folder)
    (folder / models_mod._MANIFEST).unlink()
    assert "partial" in models_mod._verify(folder)


def test_minilm_asset_is_a_ready_folder_from_its_wheel():
    pytest.importorskip("transformers")
    try:
        folder = models_mod.prepare_model("minilm")
    except AssetError as err:
        pytest.skip(f"model wheels not installed: {err}")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_load_sentence_encoder_gives_a_bare_encoder_and_refuses_a_causal_lm():
    pytest.importorskip("transformers")
    from effcore.assets import load_sentence_encoder

    with pytest.raises(AssetError, match="not a sentence encoder"):
        load_sentence_encoder("smollm2")
    try:
        model, tok = load_sentence_encoder("minilm", device="cpu")
    except AssetError as err:
        pytest.skip(f"model wheels not installed: {err}")
    enc = tok(["a short sentence"], return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    assert hidden.shape[-1] == 384 and not model.training


def test_quiet_transformers_silences_and_restores_the_previous_state():
    from transformers.utils import logging as hf_logging

    from effcore.assets import quiet_transformers

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    with quiet_transformers():
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert not hf_logging.is_progress_bar_enabled()
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before
    hf_logging.disable_progress_bar()  # a caller that had bars off keeps them off
    try:
        with pytest.raises(RuntimeError), quiet_transformers():
            raise RuntimeError("boom")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        if before[1]:
            hf_logging.enable_progress_bar()


def test_portable_path_names_the_cache_and_data_roots_not_this_machine(tmp_path, monkeypatch):
    from effcore.assets import portable_path

    cache, data = tmp_path / "cache", tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("EFFML_CACHE", str(cache))
    monkeypatch.setenv("EFFML_DATA", str(data))
    assert portable_path(cache / "allocmoe" / "m-1") == "$EFFML_CACHE/allocmoe/m-1"
    assert (
        portable_path(f"{data}/multitq/kg.tsv.gz [slice dev]") == "$EFFML_DATA/multitq/kg.tsv.gz [slice dev]"
    )
    sibling = tmp_path / "cachex" / "f"  # beside the cache, not inside it: only the scratch root applies
    tmp = Path(tempfile.gettempdir())
    assert portable_path(sibling) == "$TMPDIR/" + str(sibling.relative_to(tmp))
    assert portable_path(f"{tmp}/promptie-runs/conll04") == "$TMPDIR/promptie-runs/conll04"
    assert portable_path(f"{tmp}x/f") == f"{tmp}x/f"
    assert portable_path("/elsewhere/f") == "/elsewhere/f"
