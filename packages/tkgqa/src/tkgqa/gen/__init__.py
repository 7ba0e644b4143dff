"""GenTKGQA (issue 17, stage 2): a temporal GNN pre-trained by link prediction, fused into a small LM."""

from tkgqa.gen.gnn import ENCODERS, GnnConfig, TemporalEncoder, TimeEncoding
from tkgqa.gen.pretrain import (
    LinkMetrics,
    PretrainedEncoder,
    evaluate_links,
    filtered_ranks,
    load_encoder,
    pretrain,
    save_encoder,
    split_facts,
)

__all__ = [  # noqa: RUF022 -- grouped by role
    # encoders
    "ENCODERS",
    "GnnConfig",
    "TemporalEncoder",
    "TimeEncoding",
    # link-prediction pre-training
    "LinkMetrics",
    "PretrainedEncoder",
    "evaluate_links",
    "filtered_ranks",
    "load_encoder",
    "pretrain",
    "save_encoder",
    "split_facts",
]
