"""Presets and mixtures: shapes, twins, config round trips, one training step, op counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from tfdmnet.models import PRESETS, Conv, Freq, NetConfig, Pool, build_model, get_preset
from tfdmnet.ops import conv_flops, eml_flops, fft2_flops, measure_flops, network_table, sweep_table

SMALL = ["lenet-tfdmnet", "lenet-cemnet", "lenet-cnn", "vgg16-mixture", "vgg16-cnn"]


def _one_step(model, batch: int = 2) -> float:
    cfg = model.cfg
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradients: {missing}"
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    return loss.item()


@pytest.mark.parametrize("name", SMALL)
def test_preset_trains_one_step_and_predicts_the_classes(name):
    model = build_model(name)
    assert torch.isfinite(torch.tensor(_one_step(model)))
    model.eval()
    cfg = model.cfg
    out = model(torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size))
    assert out.shape == (3, cfg.num_classes)


@pytest.mark.parametrize("name", ["alexnet-mixture", "alexnet-cnn"])
def test_alexnet_presets_train_one_step_on_imagenet_shapes(name):
    model = build_model(name)
    assert model.cfg.image_size == 224 and model.cfg.num_classes == 1000
    assert torch.isfinite(torch.tensor(_one_step(model, batch=2)))


@pytest.mark.parametrize("name", ["lenet-tfdmnet", "lenet-cemnet", "vgg16-mixture"])
def test_presets_run_under_bf16_autocast_with_fp32_spectra(name):
    model = build_model(name, width=0.25).train()
    cfg = model.cfg
    x = torch.randn(4, cfg.in_channels, cfg.image_size, cfg.image_size)
    spectra = []
    hook = model.emls()[0].register_forward_hook(lambda m, i, o: spectra.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    hook.remove()
    out.float().sum().backward()
    assert spectra == [torch.complex64], "EMLs compute in complex64 under autocast"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vgg16_mixture_follows_the_paper_split():
    cfg = get_preset("vgg16-mixture")
    kinds = [type(layer).__name__ for layer in cfg.layers if not isinstance(layer, Pool)]
    assert kinds == ["Conv"] * 7 + ["Freq"] * 6, "convs 1-7 spatial, 8-13 in the frequency domain"
    model = build_model(cfg)
    sizes = {name: model.block_info[name]["size"] for name in ("eml8", "eml11")}
    assert sizes == {"eml8": (4, 4), "eml11": (2, 2)}
    twin = cfg.cnn_twin()
    assert all(isinstance(layer, Conv | Pool) for layer in twin.layers)
    assert [layer.kernel for layer in twin.layers if isinstance(layer, Conv)] == [3] * 13
    assert twin.head == cfg.head and twin.head_domain == "spatial"


def test_matched_twin_dropout_has_the_variance_of_the_gaussian_noise():
    cfg = get_preset("vgg16-mixture")
    same, matched = cfg.cnn_twin(), cfg.cnn_twin(dropout="matched")
    assert same.name == "vgg16-cnn" and matched.name == "vgg16-cnn-matched"
    for spec, a, b in zip(cfg.layers, same.layers, matched.layers, strict=True):
        if isinstance(spec, Freq):
            assert a.dropout == spec.dropout
            # Bernoulli(p') inverted dropout multiplies by 0 or 1/(1-p'): variance p'/(1-p')
            assert b.dropout / (1 - b.dropout) == pytest.approx((spec.dropout / 2) ** 2, rel=1e-3)
        elif not isinstance(spec, Pool):
            assert a.dropout == b.dropout == spec.dropout


def test_alexnet_mixture_keeps_only_conv1_spatial():
    model = build_model("alexnet-mixture")
    info = model.block_info
    assert info["conv1"]["size"] == (55, 55) and info["eml2"]["size"] == (27, 27)
    assert [info[f"eml{i}"]["size"] for i in (3, 4, 5)] == [(13, 13)] * 3


def test_a_mixture_may_return_to_space():
    cfg = NetConfig(name="zigzag", in_channels=1, image_size=12, num_classes=3,
                    layers=(Conv(channels=4), Freq(channels=4), Conv(channels=5), Pool(), Freq(channels=6)),
                    head=(8,))  # fmt: skip
    model = build_model(cfg)
    assert [n for n in model.blocks if n.startswith("to_")] == [
        "to_freq1",
        "to_spatial1",
        "to_freq2",
        "to_spatial2",
    ]
    _one_step(model)
    rows = network_table(model)
    assert all(r["measured_macs"] == r["analytic_macs"] for r in rows), rows


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_round_trips_through_a_dict(name):
    cfg = get_preset(name, width=0.5)
    assert NetConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_configs_are_refused_with_the_field():
    with pytest.raises(ConfigError, match="unknown model preset 'resnet'"):
        get_preset("resnet")
    with pytest.raises(ConfigError, match=r"EMLOptions\.spectrum='quarter'"):
        dataclasses.replace(get_preset("lenet-tfdmnet").eml, spectrum="quarter")
    with pytest.raises(ConfigError, match="pools 2x2 over a"):
        build_model(NetConfig(name="x", in_channels=1, image_size=2, num_classes=2,
                              layers=(Pool(), Pool())))  # fmt: skip
    with pytest.raises(ConfigError, match=r"takes images of shape \(N, 1, 28, 28\)"):
        build_model("lenet-tfdmnet")(torch.zeros(1, 1, 32, 32))


def test_cemnet_fixation_projects_every_free_eml():
    model = build_model("lenet-cemnet")
    with torch.no_grad():
        for eml in model.emls():
            eml.weight.add_(torch.randn_like(eml.weight))
    assert model.fix_weights() == 2
    for eml in model.emls():
        k = eml.kernel_size
        spatial = eml.spatial_kernel()
        assert spatial[..., k:, :].abs().max() < 1e-4 and spatial[..., :, k:].abs().max() < 1e-4


@pytest.mark.parametrize(
    ("name", "spectrum"),
    [(name, spectrum) for name in [*SMALL, "alexnet-mixture"] for spectrum in ("full", "half")
     if spectrum == "full" or get_preset(name).has_eml],
)  # fmt: skip
def test_measured_op_counts_equal_the_analytic_ones(name, spectrum):
    cfg = get_preset(name)
    cfg = dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, spectrum=spectrum))
    rows = network_table(build_model(cfg))
    for row in rows:
        assert row["measured_macs"] == row["analytic_macs"], row


@pytest.mark.parametrize("name", ["lenet-tfdmnet", "vgg16-mixture", "alexnet-mixture"])
def test_mixtures_need_fewer_operations_than_their_cnn_twins(name):
    cfg = get_preset(name)
    ours = network_table(build_model(cfg))[-1]["measured_macs"]
    twin = network_table(build_model(cfg.cnn_twin()))[-1]["measured_macs"]
    assert ours < twin


def test_conv_count_matches_torchs_flop_counter():
    conv = torch.nn.Conv2d(5, 7, 3, padding=1, bias=False)
    measured, per_op = measure_flops(lambda: conv(torch.zeros(2, 5, 9, 9)))
    assert measured == conv_flops(batch=2, cin=5, cout=7, out_size=(9, 9), kernel=3)
    assert set(per_op) == {"convolution"}


@given(h=st.integers(2, 20), w=st.integers(2, 20), c=st.integers(1, 8), o=st.integers(1, 8),
       spectrum=st.sampled_from(["half", "full"]))  # fmt: skip
def test_eml_flop_formula_matches_the_executed_ops(h, w, c, o, spectrum):
    from tfdmnet.layers import EML, ToFreq, ToSpatial

    k = min(2, h, w)
    for backend, transform in (("torch", "dft"), ("reference", "fft")):
        if backend == "reference" and c == 1:
            continue  # einsum contracts a size-1 channel dim with an elementwise multiply, not a bmm
        eml = EML(c, o, (h, w), k, spectrum=spectrum, backend=backend)
        layer = torch.nn.Sequential(ToFreq(spectrum), eml, ToSpatial((h, w), spectrum))
        x = torch.zeros(3, c, h, w)
        measured, _ = measure_flops(
            lambda f=layer, inp=x: f(inp)
        )  # training: the filters are transformed too
        expected = eml_flops(batch=3, cin=c, cout=o, size=(h, w), spectrum=spectrum, weight_transform=transform,
                             kernel=k)  # fmt: skip
        assert measured == expected["total"], backend


def test_fft_cost_model():
    assert fft2_flops((4, 4), real=False) == 5 * 16 * 4
    assert fft2_flops((4, 4), real=True, count=3) == 3 * 2.5 * 16 * 4
    assert fft2_flops((1, 1), real=True) == 0


def test_sweep_shows_where_the_eml_needs_fewer_operations():
    rows = sweep_table(sizes=(8, 32), kernels=(1, 3, 7), channels=(16,))
    by = {(r["size"], r["kernel"]): r for r in rows}
    assert by[(8, 1)]["conv_over_eml_in_domain"] < 1, "a 1x1 conv is cheaper than any EML"
    assert by[(32, 7)]["conv_over_eml_standalone"] > 10
    assert all(r["eml_standalone_measured_macs"] == r["eml_standalone_macs"] for r in rows)
