"""Profiling core: PerfRecords, FLOP/byte counts, module profiles, cost models, memory by category."""

from effcore.profiling.costmodel import CostModel, ModelKind, fit_cost_model, roofline_ns
from effcore.profiling.flops import (
    AttentionImpl,
    OpCost,
    attention_cost,
    decoder_layer_cost,
    linear_cost,
    mlp_cost,
)
from effcore.profiling.memtrack import MemoryBreakdown, track_memory
from effcore.profiling.module_profiler import (
    ModelTiming,
    ModuleProfile,
    profile_decoder,
    profile_modules,
    time_model,
)
from effcore.profiling.records import (
    NamedRecords,
    PerfRecord,
    read_records_csv,
    read_records_json,
    write_records_csv,
    write_records_json,
    write_rows,
)

__all__ = [  # noqa: RUF022 -- grouped by submodule (CONVENTIONS.md), sorted within groups
    # records
    "NamedRecords",
    "PerfRecord",
    "read_records_csv",
    "read_records_json",
    "write_records_csv",
    "write_records_json",
    "write_rows",
    # analytic counts
    "AttentionImpl",
    "OpCost",
    "attention_cost",
    "decoder_layer_cost",
    "linear_cost",
    "mlp_cost",
    # measured profiles
    "ModelTiming",
    "ModuleProfile",
    "profile_decoder",
    "profile_modules",
    "time_model",
    # cost models
    "CostModel",
    "ModelKind",
    "fit_cost_model",
    "roofline_ns",
    # memory
    "MemoryBreakdown",
    "track_memory",
]
