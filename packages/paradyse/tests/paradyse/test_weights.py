"""Per-shard initialisation: any degree's shards concatenate to the single-process weights, and building
a rank's blocks never allocates more than its own shards."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from paradyse.config import ModelConfig
from paradyse.model import ParallelTransformer
from paradyse.weights import SHARD_DIM, full_weights, init_shard, shard_shape, weight_names

CFG = ModelConfig(hidden=96, heads=12, kv_heads=6, layers=2, ffn=192)


@pytest.mark.parametrize("p", [1, 2, 3, 6])
def test_the_shards_of_every_degree_concatenate_to_the_single_process_weights(p):
    for layer in range(CFG.layers):
        full = full_weights(CFG, layer, seed=5)
        for name in weight_names(CFG):
            shards = [init_shard(CFG, layer, name, r, p, seed=5) for r in range(p)]
            assert all(s.shape == shard_shape(CFG, name, p) for s in shards)
            dim = SHARD_DIM[name]
            whole = shards[0] if dim is None else torch.cat(shards, dim=dim)
            assert torch.equal(whole, full[name]), (name, layer, p)


def test_seeds_layers_and_weights_draw_different_numbers():
    a, b = init_shard(CFG, 0, "wq", 0, 1, seed=0), init_shard(CFG, 0, "wq", 0, 1, seed=1)
    assert not torch.equal(a, b)
    assert not torch.equal(init_shard(CFG, 0, "wk", 0, 1), init_shard(CFG, 1, "wk", 0, 1))
    assert not torch.equal(init_shard(CFG, 0, "wk", 0, 1), init_shard(CFG, 0, "wv", 0, 1))
    # the scale: unit variance over fan-in (the output projections also over sqrt(layers))
    w1 = init_shard(ModelConfig(hidden=256, heads=4, layers=4), 0, "w1", 0, 1)
    assert w1.std().item() == pytest.approx(256**-0.5, rel=0.02)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op creates (factory ops included)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.largest = max(self.largest, t.numel())
        return out


@pytest.fixture
def fake_group():
    from torch.testing._internal.distributed.fake_pg import FakeStore

    def join(rank: int, world: int) -> None:
        dist.init_process_group("fake", rank=rank, world_size=world, store=FakeStore())

    yield join
    dist.destroy_process_group()


def test_a_rank_builds_only_its_shards_equal_to_the_single_process_model(fake_group):
    p, rank = 6, 4
    fake_group(rank, p)
    with _LargestTensor() as seen:
        model = ParallelTransformer(CFG, seed=3)
    biggest_shard = max(torch.Size(shard_shape(CFG, n, p)).numel() for n in weight_names(CFG))
    full_layer = max(torch.Size(w.shape).numel() for w in full_weights(CFG, 0).values())
    assert seen.largest <= biggest_shard < full_layer
    for i, blk in enumerate(model.blocks):
        full = full_weights(CFG, i, seed=3)
        for name in weight_names(CFG):
            dim = SHARD_DIM[name]
            want = full[name] if dim is None else full[name].chunk(p, dim)[rank]
            assert torch.equal(getattr(blk, name).detach(), want), (i, name)
