"""Device inference and specs."""

from __future__ import annotations

import pytest
import torch

from effcore.device import (
    KNOWN_DEVICES,
    DeviceSpec,
    cuda_available,
    infer_device,
    known_spec,
    measure_cpu_spec,
)
from effcore.errors import ConfigError


def test_infer_device_auto_matches_hardware():
    assert infer_device("auto").type == ("cuda" if cuda_available() else "cpu")
    assert infer_device(None) == infer_device("auto")


def test_infer_device_rejects_unknown_and_missing_devices():
    with pytest.raises(ConfigError, match="unknown device"):
        infer_device("tpu:banana")
    with pytest.raises(ConfigError, match="not supported"):
        infer_device("meta")
    if not cuda_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            infer_device("cuda")


def test_known_specs_have_every_field_and_a_source():
    for name in ("A100", "H100", "H200"):
        spec = known_spec(name.lower())
        assert spec.memory_bytes > 40 * 2**30
        assert spec.flops(torch.bfloat16) > spec.flops("float32") > 0
        assert spec.memory_bandwidth > spec.interconnect_bandwidth > spec.host_link_bandwidth > 0
        assert "datasheet" in spec.source
    assert KNOWN_DEVICES["H200"].memory_bandwidth > KNOWN_DEVICES["H100"].memory_bandwidth
    with pytest.raises(ConfigError, match="unknown accelerator"):
        known_spec("B9000")
    with pytest.raises(ConfigError, match="no peak FLOP/s"):
        known_spec("V100").flops("float8")


def test_cpu_spec_is_measured_cached_and_round_trips(tmp_path):
    spec = measure_cpu_spec(cache_dir=tmp_path)
    assert spec.measured and spec.kind == "cpu"
    assert spec.flops("float32") > 1e8 and spec.memory_bandwidth > 1e8
    assert measure_cpu_spec(cache_dir=tmp_path) == spec  # second call reads the cache
    assert DeviceSpec.from_dict(spec.to_dict()) == spec
    (next(tmp_path.glob("cpu-*.json"))).write_text("{not json")
    assert measure_cpu_spec(cache_dir=tmp_path).measured  # a corrupt cache is re-measured
