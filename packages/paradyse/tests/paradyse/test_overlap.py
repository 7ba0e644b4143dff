"""The cost model of communication overlap (the equality of the overlapped path is in test_equivalence)."""

from __future__ import annotations

import dataclasses

import pytest

from paradyse.config import STRATEGIES, get_model
from paradyse.simulate import gpu_hardware, layer_work

SYNC = get_model("paper-7b")
OVERLAP = dataclasses.replace(SYNC, overlap=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seq_len", [4096, 65536, 638976])
def test_overlap_hides_only_bytes_the_layer_sends_and_never_costs_time(strategy, seq_len):
    hw = gpu_hardware("H100")
    sync, over = layer_work(SYNC, strategy, seq_len, 32), layer_work(OVERLAP, strategy, seq_len, 32)
    assert (sync.flops, sync.bytes, sync.collectives) == (over.flops, over.bytes, over.collectives)
    assert sync.overlapped == 0 and 0 <= over.overlapped <= over.bytes
    assert hw.layer_time(over) <= hw.layer_time(sync)
    if strategy == "megatron":  # its sequence gathers and reduce-scatters stay synchronous
        assert over.overlapped == 0
    else:
        assert over.overlapped > 0 and hw.layer_time(over) < hw.layer_time(sync)


def test_hidden_bytes_cost_what_compute_cannot_cover():
    from paradyse.simulate import Hardware, LayerWork

    hw = Hardware(name="unit", flops=1.0, bandwidth=1.0, latency=0.0, memory_bytes=1)
    assert hw.layer_time(LayerWork(flops=5, bytes=8, collectives=0, overlapped=3)) == 5 + 5
    assert hw.layer_time(LayerWork(flops=2, bytes=8, collectives=0, overlapped=6)) == 6 + 2
    assert hw.layer_time(LayerWork(flops=2, bytes=8, collectives=0)) == 2 + 8
