"""promptie: composable prompt-based generative information extraction (entities, relations, events)."""

from promptie.backbone import MODELS, Backbone, LoraSettings, add_lora, load_backbone
from promptie.data import DATASETS, Document, Entity, Event, Relation, Span, load_dataset, subsample
from promptie.decode import fill_slots, next_token_logits
from promptie.extractor import ExtractConfig, Extractor
from promptie.grammar import GrammarTokens, SlotGrammar, SpanTrie, encode_target
from promptie.metrics import METRICS, PRF, score_documents
from promptie.prompts import MODES, Prompt, compose, compose_all
from promptie.relations import CrossEncoderJudge, LMJudge, best_threshold, candidates, statement
from promptie.schema import (
    EntityType,
    EventType,
    RelationType,
    Schema,
    dump_schema,
    load_schema,
    parse_schema,
)
from promptie.train import TrainConfig, load_extractor, train, train_judge

__all__ = [  # noqa: RUF022 -- grouped by role, sorted within groups
    # schemas and prompts
    "EntityType",
    "EventType",
    "MODES",
    "Prompt",
    "RelationType",
    "Schema",
    "compose",
    "compose_all",
    "dump_schema",
    "load_schema",
    "parse_schema",
    # models and decoding
    "Backbone",
    "GrammarTokens",
    "LoraSettings",
    "MODELS",
    "SlotGrammar",
    "SpanTrie",
    "add_lora",
    "encode_target",
    "fill_slots",
    "load_backbone",
    "next_token_logits",
    # extraction and relations
    "CrossEncoderJudge",
    "ExtractConfig",
    "Extractor",
    "LMJudge",
    "best_threshold",
    "candidates",
    "statement",
    # data and metrics
    "DATASETS",
    "Document",
    "Entity",
    "Event",
    "METRICS",
    "PRF",
    "Relation",
    "Span",
    "load_dataset",
    "score_documents",
    "subsample",
    # training
    "TrainConfig",
    "load_extractor",
    "train",
    "train_judge",
]
