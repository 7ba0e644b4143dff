"""Tiny random-weight models build for every family and are reproducible."""

from __future__ import annotations

import pytest
import torch

from effcore.errors import ConfigError
from effcore.testing.tiny import TINY_CONFIGS, tiny_model


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_tiny_model_is_seeded_and_runs(family):
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    a, b = tiny_model(family, seed=3), tiny_model(family, seed=3)
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    assert la.shape == (2, 7, 128) and torch.isfinite(la).all()
    assert torch.equal(la, lb), "same seed must give the same weights"


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown tiny model family"):
        tiny_model("gpt5")
