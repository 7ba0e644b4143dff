"""TFDMNet: frequency-domain element-wise multiplication layers (EMLs) that replace convolutions.

The layers (``tfdmnet.layers``; an EML block's fused tail in ``tfdmnet.fused``), spectral conventions
(``tfdmnet.spectral``), the channel-mixing kernel (``tfdmnet.kernels``), network configs and presets
(``tfdmnet.models``), op counts (``tfdmnet.ops``), data (``tfdmnet.data``), training
(``tfdmnet.train``) and timing (``tfdmnet.bench``, ``tfdmnet.netbench``, ``tfdmnet.profile``).
Names resolve lazily, so ``import tfdmnet`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effcore.lazy import lazy_getattr

if TYPE_CHECKING:
    from tfdmnet.fused import FreqBlock, freq_bn_act_dropout
    from tfdmnet.kernels import freq_mix, freq_mix_reference, freq_mix_torch, freq_mix_triton
    from tfdmnet.layers import (
        EML,
        ComplexHead,
        FreqBatchNorm,
        FreqDropout,
        FreqLeakyReLU,
        FreqMaxPool,
        FreqSpatialReLU,
        ToFreq,
        ToSpatial,
    )
    from tfdmnet.models import (
        PRESETS,
        Conv,
        EMLOptions,
        Freq,
        NetConfig,
        Pool,
        TFDMNet,
        build_model,
        get_preset,
    )
    from tfdmnet.ops import eml_flops, measure_flops, network_table
    from tfdmnet.spectral import circular_conv2d, fix_spectrum, kernel_spectrum, to_freq, to_spatial
    from tfdmnet.train import Recipe, evaluate, get_recipe, train

__version__ = "0.1.0"

_LAZY: dict[str, str] = {}
for _module, _names in {
    "tfdmnet.layers": ("EML", "ComplexHead", "FreqBatchNorm", "FreqDropout", "FreqLeakyReLU",
                       "FreqMaxPool", "FreqSpatialReLU", "ToFreq", "ToSpatial"),
    "tfdmnet.fused": ("FreqBlock", "freq_bn_act_dropout"),
    "tfdmnet.spectral": ("circular_conv2d", "fix_spectrum", "kernel_spectrum", "to_freq", "to_spatial"),
    "tfdmnet.kernels": ("freq_mix", "freq_mix_reference", "freq_mix_torch", "freq_mix_triton"),
    "tfdmnet.models": ("PRESETS", "Conv", "EMLOptions", "Freq", "NetConfig", "Pool", "TFDMNet",
                       "build_model", "get_preset"),
    "tfdmnet.ops": ("eml_flops", "measure_flops", "network_table"),
    "tfdmnet.train": ("Recipe", "evaluate", "get_recipe", "train"),
}.items():  # fmt: skip
    _LAZY.update(dict.fromkeys(_names, _module))

__all__ = [  # noqa: RUF022 -- grouped by submodule
    # layers
    "EML",
    "ComplexHead",
    "FreqBatchNorm",
    "FreqDropout",
    "FreqLeakyReLU",
    "FreqMaxPool",
    "FreqSpatialReLU",
    "ToFreq",
    "ToSpatial",
    # fused EML-block tail
    "FreqBlock",
    "freq_bn_act_dropout",
    # spectral conventions
    "circular_conv2d",
    "fix_spectrum",
    "kernel_spectrum",
    "to_freq",
    "to_spatial",
    # kernels
    "freq_mix",
    "freq_mix_reference",
    "freq_mix_torch",
    "freq_mix_triton",
    # networks
    "PRESETS",
    "Conv",
    "EMLOptions",
    "Freq",
    "NetConfig",
    "Pool",
    "TFDMNet",
    "build_model",
    "get_preset",
    # op counts
    "eml_flops",
    "measure_flops",
    "network_table",
    # training
    "Recipe",
    "evaluate",
    "get_recipe",
    "train",
    # version
    "__version__",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
