"""The memory-limit sweep: a real child process reports its peak RSS; the sweep stops at the limit and
never starts a length predicted to blow past it or past the machine's free memory."""

from __future__ import annotations

import pytest

from delta.limits import _child, evoformer_limits, longest
from effcore.errors import ConfigError

GiB = 2**30


def test_a_child_process_trains_one_step_and_reports_its_peak():
    out = _child("checkpoint+chunked", 16, 4, 1)
    assert out["peak_rss"] >= out["base_rss"] > 50 * 2**20  # python + torch alone exceed 50 MiB
    assert out["seconds"] > 0


def _fake(table):
    def run(form, n, chunk, threads):
        return {"peak_rss": table[n], "base_rss": GiB // 2, "seconds": 0.1}

    return run


def test_the_sweep_stops_at_the_first_length_over_the_limit():
    table = {64: 1 * GiB, 128: 3 * GiB, 192: 5 * GiB, 256: 9 * GiB}
    rows = evoformer_limits([64, 128, 192, 256], ["plain"], limit=4 * GiB, margin=100.0, run=_fake(table),
                            free=lambda: 100 * GiB)  # fmt: skip
    assert [r.residues for r in rows] == [64, 128, 192]
    assert longest(rows, 4 * GiB) == {"plain": 128}


def test_a_length_predicted_far_over_the_limit_or_the_free_memory_is_not_started():
    table = {64: 1 * GiB, 128: 2 * GiB}
    rows = evoformer_limits(
        [64, 128, 1024], ["plain"], limit=4 * GiB, run=_fake(table), free=lambda: 100 * GiB
    )
    assert rows[-1].residues == 1024 and rows[-1].peak_rss is None and "limit" in rows[-1].skipped
    rows = evoformer_limits([64, 128, 160], ["plain"], limit=40 * GiB, run=_fake(table), free=lambda: 2 * GiB)
    assert rows[-1].residues == 160 and "free on the machine" in rows[-1].skipped


def test_bad_forms_and_lengths_are_refused():
    with pytest.raises(ConfigError, match="unknown forms"):
        evoformer_limits([16], ["delta"], limit=GiB)
    with pytest.raises(ConfigError, match="increasing"):
        evoformer_limits([32, 16], ["plain"], limit=GiB)


def test_a_length_predicted_past_the_time_cap_is_not_started_and_says_so():
    def run(form, n, chunk, threads):
        return {"peak_rss": GiB, "base_rss": GiB // 2, "seconds": float(n)}

    rows = evoformer_limits([64, 128, 512], ["plain"], limit=40 * GiB, max_seconds=300, run=run,
                            free=lambda: 100 * GiB)  # fmt: skip
    assert rows[-1].residues == 512 and "time cap" in rows[-1].skipped
