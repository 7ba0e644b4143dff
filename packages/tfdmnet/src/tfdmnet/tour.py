"""tfdmnet's part of the effml tour: the EML is a convolution, it costs fewer operations, and it learns MNIST."""

from __future__ import annotations

import tempfile

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """EML vs conv2d, op counts of the mixtures vs their CNN twins, one MNIST epoch; one row per step."""
    import torch

    from effcore.errors import DataNotFoundError
    from effcore.tour import TourSteps
    from tfdmnet.layers import EML, ToFreq, ToSpatial
    from tfdmnet.models import build_model, get_preset
    from tfdmnet.ops import network_table
    from tfdmnet.spectral import circular_conv2d
    from tfdmnet.train import mnist_cpu, train

    step = TourSteps("tfdmnet")

    def equivalence() -> str:
        torch.manual_seed(0)
        layer = torch.nn.Sequential(ToFreq(), EML(16, 32, 14, 5), ToSpatial(14))
        x = torch.randn(8, 16, 14, 14)
        err = (layer(x) - circular_conv2d(x, layer[1].weight)).abs().max().item()
        return f"max |EML(x) - circular conv2d(x)| = {err:.1e} (16->32 channels, 14x14, k=5, fp32)"

    def op_counts() -> str:
        parts = []
        for name in ("lenet-tfdmnet", "vgg16-mixture"):
            cfg = get_preset(name)
            ours = network_table(build_model(cfg))[-1]["measured_macs"]
            twin = network_table(build_model(cfg.cnn_twin()))[-1]["measured_macs"]
            parts.append(f"{name} {ours / 1e6:.2f} vs CNN {twin / 1e6:.2f} MMACs ({twin / ours:.2f}x)")
        return "; ".join(parts)

    def mnist() -> str:
        n = 5000 if quick else 60000
        recipe = mnist_cpu().replace(epochs=1, limit_train=n)
        with tempfile.TemporaryDirectory(prefix="tfdmnet-tour-") as run:
            try:
                m = train(get_preset("lenet-tfdmnet"), recipe, run)
            except DataNotFoundError as err:
                return f"skipped: {err}"
        return f"lenet-tfdmnet, 1 epoch on {n} MNIST images: test accuracy {m['test_accuracy']:.4f}"

    step("EML equals circular conv2d", equivalence)
    step("inference MACs per image, mixture vs CNN twin", op_counts)
    step("train on MNIST", mnist)
    return step.rows
