"""Tests of unsup3d.networks: original-release layout, other sizes and widths, encoder init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from unsup3d.networks import ConfNet, EDDeconv, Encoder, build_networks, group_count, init_encoder

REPO = Path(__file__).resolve().parents[1]
REFERENCE_KEYS = REPO.parent / "shared" / "reference" / "original_checkpoint_keys.json"
NET_NAMES = ("netD", "netA", "netL", "netV", "netC")


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, list[int]]]:
    if not REFERENCE_KEYS.is_file():
        pytest.skip(f"reference key file not found at {REFERENCE_KEYS}")
    return json.loads(REFERENCE_KEYS.read_text())


@pytest.fixture(scope="module")
def full_networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return build_networks(image_size=64, width=1.0)


# ---------------------------------------------------------------------------------------------
# original layout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NET_NAMES)
def test_state_dict_matches_original_release(name: str, reference, full_networks) -> None:
    net = full_networks[name]
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(shapes) == list(reference[name])  # same keys in the same order
    assert shapes == reference[name]

    # a checkpoint with exactly the reference shapes loads strictly, and the result runs
    fake = {k: torch.randn(s) * 0.05 for k, s in reference[name].items()}
    net.load_state_dict(fake, strict=True)
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 3, 64, 64) * 2 - 1)
    expected = {
        "netD": [(1, 1, 64, 64)],
        "netA": [(1, 3, 64, 64)],
        "netL": [(1, 4)],
        "netV": [(1, 6)],
        "netC": [(1, 2, 64, 64), (1, 2, 16, 16)],
    }[name]
    outs = list(out) if isinstance(out, tuple) else [out]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_original_layer_indices(full_networks) -> None:
    net_d, net_a = full_networks["netD"].network, full_networks["netA"].network
    assert len(net_d) == 43 and len(net_a) == 44
    assert isinstance(net_d[35], nn.Upsample) and isinstance(net_a[43], nn.Tanh)
    assert isinstance(net_d[42], nn.Conv2d) and net_d[42].out_channels == 1
    assert [type(m) for m in net_d[:3]] == [nn.Conv2d, nn.GroupNorm, nn.LeakyReLU]
    assert isinstance(net_d[13], nn.ConvTranspose2d)
    gns = [(m.num_groups, m.num_channels) for m in net_d if isinstance(m, nn.GroupNorm)]
    assert (
        gns == [(16, 64), (32, 128), (64, 256), (64, 256), (64, 256), (32, 128), (32, 128)] + [(16, 64)] * 4
    )
    enc = full_networks["netL"].network
    assert len(enc) == 12 and isinstance(enc[11], nn.Tanh)
    conf = full_networks["netC"]
    assert isinstance(conf.out_net1[7], nn.Softplus) and isinstance(conf.out_net2[1], nn.Softplus)
    # outputs of the confidence net are positive
    with torch.no_grad():
        c1, c2 = conf(torch.randn(1, 3, 64, 64))
    assert (c1 > 0).all() and (c2 > 0).all()


def test_tanh_ranges_and_linear_depth() -> None:
    torch.manual_seed(0)
    nets = build_networks(64, width=0.125)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert nets["netA"](x).abs().max() <= 1
        assert nets["netV"](x).abs().max() <= 1
    assert not isinstance(nets["netD"].network[-1], nn.Tanh)


# ---------------------------------------------------------------------------------------------
# other sizes and widths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 128])
def test_output_shapes_small_width(size: int) -> None:
    torch.manual_seed(0)
    nets = build_networks(image_size=size, width=0.125)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert nets["netD"](x).shape == (2, 1, size, size)
        assert nets["netA"](x).shape == (2, 3, size, size)
        assert nets["netL"](x).shape == (2, 4)
        assert nets["netV"](x).shape == (2, 6)
        c1, c2 = nets["netC"](x)
    assert c1.shape == (2, 2, size, size)
    assert c2.shape == (2, 2, size // 4, size // 4)


def test_size_changes_only_outer_stages() -> None:
    # 128 adds an nf-wide stage at the outside; 32 drops the outermost one
    d64 = EDDeconv(3, 1, zdim=32, nf=8, activation=None, image_size=64)
    d128 = EDDeconv(3, 1, zdim=32, nf=8, activation=None, image_size=128)
    d32 = EDDeconv(3, 1, zdim=32, nf=8, activation=None, image_size=32)
    assert len(d128.network) == len(d64.network) + 9  # one more down (3) and up (6) stage
    assert len(d32.network) == len(d64.network) - 9
    assert d32.network[0].out_channels == 16  # 2 nf at 16 x 16
    assert d128.network[3].out_channels == 8  # nf at 32 x 32
    assert Encoder(3, 4, nf=4, image_size=128)(torch.randn(1, 3, 128, 128)).shape == (1, 4)


def test_width_scaling_and_group_counts() -> None:
    nets = build_networks(64, width=0.25)
    assert nets["netD"].nf == 16 and nets["netD"].zdim == 64
    assert nets["netL"].nf == 8 and nets["netC"].zdim == 32
    # odd widths still give valid GroupNorms
    nets = build_networks(32, width=0.3)
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, nn.GroupNorm):
                assert m.num_channels % m.num_groups == 0
    with torch.no_grad():
        assert nets["netD"](torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert group_count(64) == 16 and group_count(256) == 64 and group_count(16) == 4
    assert group_count(19) == 1 and group_count(38) == 2 and group_count(6) == 1 and group_count(12) == 3
    # explicit overrides and omitting netC
    nets = build_networks(64, width=0.125, nf=4, zdim=8, encoder_nf=2, conf_zdim=6, with_confidence=False)
    assert set(nets) == {"netD", "netA", "netL", "netV"}
    assert nets["netD"].nf == 4 and nets["netL"].nf == 2


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_groupnorm_has_four_channels_per_group_at_every_width(width: float) -> None:
    """The original's GroupNorm(16, nf), GroupNorm(32, 2 nf), ... have 4 channels per group; narrow
    networks keep that (fewer groups), not the group count (which would make instance norms)."""
    nets = build_networks(64, width=width)
    norms = [m for net in nets.values() for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms
    for m in norms:
        assert m.num_channels // m.num_groups == 4, (width, m)
    if width == 1.0:
        # the original's counts: GroupNorm(16, 64), (32, 128), (64, 256)
        counts = {(m.num_groups, m.num_channels) for m in norms}
        assert counts == {(16, 64), (32, 128), (64, 256)}


@pytest.mark.parametrize("size", [16, 48, 96, 256])
def test_wrong_image_size_raises(size: int) -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_networks(image_size=size)
    with pytest.raises(ValueError, match="image_size"):
        ConfNet(3, image_size=size)


def test_wrong_width_raises() -> None:
    with pytest.raises(ValueError, match="width"):
        build_networks(64, width=0)


def test_wrong_input_shape_raises() -> None:
    net = EDDeconv(3, 1, zdim=8, nf=4, image_size=64)
    with pytest.raises(ValueError, match="64 x 64"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="input channels"):
        net(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="B x 3"):
        net(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="32 x 32"):
        Encoder(3, 4, nf=2, image_size=32)(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="128 x 128"):
        ConfNet(3, zdim=8, nf=4, image_size=128)(torch.randn(1, 3, 64, 64))


def test_backward_through_all_networks() -> None:
    torch.manual_seed(0)
    nets = build_networks(32, width=0.125)
    x = torch.randn(2, 3, 32, 32)
    total = sum(
        (o if isinstance(o, torch.Tensor) else o[0].mean() + o[1].mean()).mean()
        for o in (net(x) for net in nets.values())
    )
    total.backward()
    for name, net in nets.items():
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name


def test_kaiming_encoder_init_wakes_up_the_plain_encoders() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 64, 64) * 2 - 1

    def spread(enc: nn.Module) -> float:  # across-image spread of the pre-tanh output
        with torch.no_grad():
            return float(enc.network[:-1](x).flatten(1).std(0).mean())

    default = build_networks(64, 0.25)["netV"]
    keys = {k: v.shape for k, v in default.state_dict().items()}
    assert spread(default) < 5e-3  # PyTorch's default init: the output barely depends on the image
    woken = init_encoder(build_networks(64, 0.25)["netV"], "kaiming", output_std=0.1)
    assert 0.02 < spread(woken) < 0.2
    assert {k: v.shape for k, v in woken.state_dict().items()} == keys  # checkpoints unaffected
    same = build_networks(64, 0.25)["netL"]
    before = [p.clone() for p in same.parameters()]
    assert init_encoder(same, "pytorch") is same
    assert all(torch.equal(a, b) for a, b in zip(before, same.parameters()))
    with pytest.raises(ValueError, match="encoder init"):
        init_encoder(same, "xavier")
