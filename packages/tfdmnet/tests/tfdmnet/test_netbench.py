"""The network benchmark times every variant in every round and refuses cases it cannot compare."""

from __future__ import annotations

import pytest

from effcore.errors import ConfigError
from tfdmnet.netbench import MODES, NetCase, compare_network


def test_compare_network_reports_every_variant_and_ratio_per_mode():
    res = compare_network(NetCase(preset="lenet-tfdmnet", width=0.25, batch=2), rounds=2, warmup=0)
    assert res["twin"] == "lenet-cnn" and res["spectrum"] == "full"
    assert res["macs_ratio"] == pytest.approx(
        res["macs_per_image"]["twin"] / res["macs_per_image"]["fused"], 1e-3
    )
    for mode in MODES:
        m = res["modes"][mode]
        assert set(m["ms"]) == {"fused", "reference", "twin"}
        for v in ("fused", "reference"):
            r = m["vs_twin"][v]["wall"]
            assert 0 < r["q1"] <= r["median"] <= r["q3"]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ({"preset": "lenet-cnn"}, "no EML"),
        ({"preset": "lenet-tfdmnet", "batch": 0}, "batch must be >= 1"),
        ({"preset": "nope"}, "unknown model preset"),
    ],
)
def test_cases_that_cannot_be_compared_are_refused(case, match):
    with pytest.raises(ConfigError, match=match):
        NetCase(**case)


def test_batch_one_times_inference_only_and_says_why():
    res = compare_network(NetCase(preset="lenet-tfdmnet", width=0.25, batch=1), rounds=1, warmup=0)
    assert list(res["modes"]) == ["inference"]
    assert "BatchNorm" in res["not_run"]["train"]


def test_zero_rounds_are_refused():
    with pytest.raises(ConfigError, match="rounds >= 1"):
        compare_network(NetCase(preset="lenet-tfdmnet", width=0.25, batch=2), rounds=0)
