"""`PerfRecord(time_ns, flops, bytes)`, the unit of every effml measurement, and its CSV/JSON files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effcore.errors import ConfigError, DataNotFoundError
from effcore.io import write_rows

__all__ = [
    "NamedRecords",
    "PerfRecord",
    "read_records_csv",
    "read_records_json",
    "write_records_csv",
    "write_records_json",
    "write_rows",
]

_FIELDS = ("time_ns", "flops", "bytes")


@dataclass(frozen=True, kw_only=True, slots=True)
class PerfRecord:
    """Time taken, FLOPs done and bytes moved by one piece of work; records add up field by field.

    ``time_ns == 0`` means "not timed" (an analytic count); rates are then ``nan``.
    """

    time_ns: int
    flops: int
    bytes: int

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"PerfRecord.{name} must be a non-negative int, got {value!r}")

    def __add__(self, other: PerfRecord) -> PerfRecord:
        if not isinstance(other, PerfRecord):
            return NotImplemented
        return PerfRecord(
            time_ns=self.time_ns + other.time_ns,
            flops=self.flops + other.flops,
            bytes=self.bytes + other.bytes,
        )

    def __radd__(self, other: object) -> PerfRecord:
        # Lets the builtin ``sum(records)`` start from its integer 0.
        if other == 0:
            return self
        return NotImplemented

    @property
    def tflops_per_s(self) -> float:
        """Achieved TFLOP/s (``nan`` when untimed)."""
        return self.flops / self.time_ns / 1e3 if self.time_ns else math.nan

    @property
    def gbytes_per_s(self) -> float:
        """Achieved memory traffic in GB/s (``nan`` when untimed)."""
        return self.bytes / self.time_ns if self.time_ns else math.nan

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved (``nan`` when no bytes)."""
        return self.flops / self.bytes if self.bytes else math.nan

    def to_dict(self) -> dict[str, int]:
        return {"time_ns": self.time_ns, "flops": self.flops, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerfRecord:
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ConfigError(
                f"PerfRecord data lacks {', '.join(missing)}", hint=f"fields: {', '.join(_FIELDS)}"
            )
        return cls(**{name: int(data[name]) for name in _FIELDS})


NamedRecords = Mapping[str, PerfRecord] | Iterable[tuple[str, PerfRecord]]


def _pairs(records: NamedRecords) -> list[tuple[str, PerfRecord]]:
    pairs = list(records.items()) if isinstance(records, Mapping) else list(records)
    for name, rec in pairs:
        if not isinstance(rec, PerfRecord):
            raise ConfigError(f"record {name!r} is a {type(rec).__name__}, not a PerfRecord")
    return pairs


def _row(name: str, rec: PerfRecord) -> dict[str, Any]:
    # The derived rate is written for readers of the file; the readers below ignore it.
    rate = rec.tflops_per_s
    return {"name": name, **rec.to_dict(), "tflops_per_s": None if math.isnan(rate) else rate}


def write_records_csv(path: str | Path, records: NamedRecords) -> Path:
    """Write named records as CSV: ``name,time_ns,flops,bytes,tflops_per_s``, in the given order."""
    path = Path(path)
    if path.suffix != ".csv":
        raise ConfigError(f"{path.name!r} is not a .csv file")
    return write_rows(path, [_row(name, rec) for name, rec in _pairs(records)])


def write_records_json(path: str | Path, records: NamedRecords) -> Path:
    """Write named records as a JSON list of ``{"name", "time_ns", "flops", "bytes", "tflops_per_s"}``."""
    path = Path(path)
    if path.suffix != ".json":
        raise ConfigError(f"{path.name!r} is not a .json file")
    return write_rows(path, [_row(name, rec) for name, rec in _pairs(records)])


def _read_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, PerfRecord]]:
    try:
        return [(str(row["name"]), PerfRecord.from_dict(row)) for row in rows]
    except (KeyError, TypeError, ValueError) as err:
        raise DataNotFoundError(f"{path} is not a PerfRecord file: {err}") from None


def read_records_csv(path: str | Path) -> list[tuple[str, PerfRecord]]:
    """Read what :func:`write_records_csv` wrote."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no records file at {path}")
    with path.open(newline="") as f:
        return _read_rows(path, list(csv.DictReader(f)))


def read_records_json(path: str | Path) -> list[tuple[str, PerfRecord]]:
    """Read what :func:`write_records_json` wrote."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no records file at {path}")
    return _read_rows(path, json.loads(path.read_text()))
