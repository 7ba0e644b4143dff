"""GenTKGQA (issue 17, stage 2): a temporal GNN pre-trained by link prediction, fused into a small LM."""

from tkgqa.gen.answer import VARIANTS, GenAnswer, GenAnswerer, evaluate_generator, stage1_retriever
from tkgqa.gen.gnn import ENCODERS, GnnConfig, TemporalEncoder, TimeEncoding
from tkgqa.gen.leaks import LeakFilter, LeakReport, normalise_question
from tkgqa.gen.model import MARKERS, GenTKGQA, SubgraphFeatures, add_lora, facts_text, instruction
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
from tkgqa.gen.questions import (
    GenQuestion,
    generate_questions,
    read_questions,
    relation_phrases,
    write_questions,
)
from tkgqa.gen.train import GenTrainConfig, build_examples, build_generator, load_generator, train_generator

__all__ = [  # noqa: RUF022 -- grouped by role
    # encoders and their link-prediction pre-training
    "ENCODERS",
    "GnnConfig",
    "TemporalEncoder",
    "TimeEncoding",
    "LinkMetrics",
    "PretrainedEncoder",
    "evaluate_links",
    "filtered_ranks",
    "load_encoder",
    "pretrain",
    "save_encoder",
    "split_facts",
    # generated training questions and the leak filter
    "GenQuestion",
    "generate_questions",
    "read_questions",
    "relation_phrases",
    "write_questions",
    "LeakFilter",
    "LeakReport",
    "normalise_question",
    # the generator and its training
    "MARKERS",
    "GenTKGQA",
    "SubgraphFeatures",
    "add_lora",
    "facts_text",
    "instruction",
    "GenTrainConfig",
    "build_examples",
    "build_generator",
    "load_generator",
    "train_generator",
    # answering and evaluation
    "VARIANTS",
    "GenAnswer",
    "GenAnswerer",
    "evaluate_generator",
    "stage1_retriever",
]
