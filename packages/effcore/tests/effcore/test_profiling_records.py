"""PerfRecord arithmetic, rates and CSV/JSON files."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from effcore.profiling import (
    PerfRecord,
    read_records_csv,
    read_records_json,
    write_records_csv,
    write_records_json,
    write_rows,
)

counts = st.integers(min_value=0, max_value=2**62)
records = st.builds(PerfRecord, time_ns=counts, flops=counts, bytes=counts)
names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)


@given(a=records, b=records, c=records)
def test_perf_record_addition_is_fieldwise_and_associative(
    a: PerfRecord, b: PerfRecord, c: PerfRecord
) -> None:
    total = a + b
    assert total.time_ns == a.time_ns + b.time_ns, "time_ns"
    assert total.flops == a.flops + b.flops, "flops"
    assert total.bytes == a.bytes + b.bytes, "bytes"
    assert (a + b) + c == a + (b + c), "associativity"
    assert sum([a, b, c]) == a + b + c, "builtin sum starts from 0"


def test_tflops_per_s_is_flops_per_picosecond_and_nan_when_untimed() -> None:
    rec = PerfRecord(time_ns=2_000_000, flops=6 * 10**12, bytes=4 * 10**9)
    assert rec.tflops_per_s == pytest.approx(3000.0)
    assert rec.gbytes_per_s == pytest.approx(2000.0)
    assert rec.arithmetic_intensity == pytest.approx(1500.0)
    assert math.isnan(PerfRecord(time_ns=0, flops=1, bytes=1).tflops_per_s)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_perf_record_rejects_non_counts(bad: object) -> None:
    with pytest.raises(ConfigError, match="time_ns"):
        PerfRecord(time_ns=bad, flops=0, bytes=0)  # type: ignore[arg-type]


@given(rec=records)
def test_perf_record_dict_roundtrip_is_identity(rec: PerfRecord) -> None:
    assert PerfRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


@given(pairs=st.lists(st.tuples(names, records), max_size=6))
def test_records_csv_and_json_roundtrip_is_identity(pairs: list[tuple[str, PerfRecord]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert read_records_csv(write_records_csv(Path(tmp) / "r.csv", pairs)) == pairs, "csv"
        assert read_records_json(write_records_json(Path(tmp) / "r.json", pairs)) == pairs, "json"


def test_records_files_keep_mapping_order_and_write_the_rate(tmp_path: Path) -> None:
    recs = {"b": PerfRecord(time_ns=10, flops=20_000, bytes=1), "a": PerfRecord(time_ns=0, flops=1, bytes=2)}
    rows = json.loads(write_records_json(tmp_path / "r.json", recs).read_text())
    assert [r["name"] for r in rows] == ["b", "a"]
    assert rows[0]["tflops_per_s"] == pytest.approx(2.0)
    assert rows[1]["tflops_per_s"] is None, "untimed records have no rate"


def test_write_rows_picks_the_format_from_the_suffix(tmp_path: Path) -> None:
    rows = [{"name": "x", "forward_ns": 3, "backward_ns": None}]
    assert json.loads(write_rows(tmp_path / "p.json", rows).read_text()) == rows
    assert write_rows(tmp_path / "p.csv", rows).read_text().splitlines()[0] == "name,forward_ns,backward_ns"
    with pytest.raises(ConfigError, match=r"use \.json or \.csv"):
        write_rows(tmp_path / "p.txt", rows)
