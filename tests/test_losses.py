"""Tests of unsup3d.losses on small hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unsup3d.losses import EPS, PerceptualLoss, depth_smoothness_loss, masked_mean, photometric_loss
from unsup3d.vgg import VGG16Features

SQRT2 = math.sqrt(2.0)


@pytest.fixture(scope="module")
def vgg() -> VGG16Features:
    torch.manual_seed(0)
    return VGG16Features()  # random init: the tests need no ImageNet weights


# ---------------------------------------------------------------------------------------------
# photometric
# ---------------------------------------------------------------------------------------------


def test_photometric_plain_l1() -> None:
    im1 = torch.zeros(1, 1, 2, 2)
    im2 = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])
    torch.testing.assert_close(photometric_loss(im1, im2), torch.tensor(1.5))


def test_photometric_sigma_one_is_scaled_l1() -> None:
    torch.manual_seed(0)
    im1, im2 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    sigma = torch.ones(2, 1, 4, 4)
    l1 = (im1 - im2).abs().mean()
    # log(1 + EPS) ~ 1e-7 and 1 / (1 + EPS) ~ 1: the loss is sqrt(2) times L1
    torch.testing.assert_close(photometric_loss(im1, im2, conf_sigma=sigma), SQRT2 * l1, rtol=1e-5, atol=1e-6)


def test_photometric_sigma_two_hand_computed() -> None:
    im1 = torch.zeros(1, 1, 1, 2)
    im2 = torch.tensor([[[[1.0, 3.0]]]])
    sigma = torch.full((1, 1, 1, 2), 2.0)
    expected = (SQRT2 * 1 / 2 + math.log(2) + SQRT2 * 3 / 2 + math.log(2)) / 2
    torch.testing.assert_close(
        photometric_loss(im1, im2, conf_sigma=sigma), torch.tensor(expected), rtol=1e-5, atol=1e-6
    )


def test_photometric_mask_weighting() -> None:
    im1 = torch.zeros(1, 2, 2, 2)
    im2 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # B x 1 x H x W, expanded over channels
    expected = (1 + 4 + 5 + 8) / 4
    torch.testing.assert_close(photometric_loss(im1, im2, mask=mask), torch.tensor(expected))
    soft = torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(photometric_loss(im1, im2, mask=soft), torch.tensor((1 + 5) / 2))


def test_photometric_empty_mask_is_zero_not_nan() -> None:
    im1 = torch.randn(2, 3, 4, 4, requires_grad=True)
    im2 = torch.randn(2, 3, 4, 4)
    sigma = torch.rand(2, 1, 4, 4) + 0.5
    loss = photometric_loss(im1, im2, mask=torch.zeros(2, 1, 4, 4), conf_sigma=sigma)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(im1.grad).all() and (im1.grad == 0).all()


def test_photometric_shape_errors() -> None:
    with pytest.raises(ValueError):
        photometric_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="conf_sigma"):
        photometric_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), conf_sigma=torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="mask"):
        photometric_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), mask=torch.ones(1, 4, 4))


def test_masked_mean() -> None:
    loss = torch.arange(4.0).view(1, 1, 2, 2)
    torch.testing.assert_close(masked_mean(loss), torch.tensor(1.5))
    torch.testing.assert_close(
        masked_mean(loss, torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])), torch.tensor(1.5)
    )
    torch.testing.assert_close(
        masked_mean(loss, torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])), torch.tensor(3.0)
    )


# ---------------------------------------------------------------------------------------------
# perceptual
# ---------------------------------------------------------------------------------------------


def test_perceptual_identical_images_leave_log_sigma(vgg: VGG16Features) -> None:
    ploss = PerceptualLoss(vgg)
    torch.manual_seed(1)
    im = torch.rand(2, 3, 32, 32) * 2 - 1
    sigma = torch.rand(2, 1, 8, 8) + 0.5
    loss = ploss(im, im.clone(), conf_sigma=sigma)
    torch.testing.assert_close(loss, (sigma + EPS).log().mean())
    # with a mask, the log-sigma term is averaged with the mask pooled to 8 x 8
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :16] = 1.0
    loss = ploss(im, im.clone(), mask=mask, conf_sigma=sigma)
    torch.testing.assert_close(loss, (sigma + EPS).log()[:, :, :4].mean())
    assert ploss(im, im.clone()).item() == 0.0


def test_perceptual_matches_manual_computation(vgg: VGG16Features) -> None:
    ploss = PerceptualLoss(vgg)
    torch.manual_seed(2)
    im1, im2 = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    sigma = torch.rand(2, 1, 4, 4) + 0.5
    mask = (torch.rand(2, 1, 16, 16) > 0.3).float()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        f1 = vgg((im1 / 2 + 0.5 - mean) / std)
        f2 = vgg((im2 / 2 + 0.5 - mean) / std)
    per = (f1 - f2) ** 2 / (2 * sigma**2 + EPS) + (sigma + EPS).log()
    m = F.avg_pool2d(mask, 4, 4).expand_as(per)
    expected = (per * m).sum() / m.sum()
    torch.testing.assert_close(ploss(im1, im2, mask=mask, conf_sigma=sigma), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ploss(im1, im2), ((f1 - f2) ** 2).mean(), rtol=1e-5, atol=1e-5)


def test_perceptual_gradients_reach_images_not_vgg(vgg: VGG16Features) -> None:
    ploss = PerceptualLoss(vgg)
    torch.manual_seed(3)
    im1 = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    im2 = torch.rand(1, 3, 16, 16) * 2 - 1
    sigma = (torch.rand(1, 1, 4, 4) + 0.5).requires_grad_(True)
    ploss(im1, im2, conf_sigma=sigma).backward()
    assert im1.grad is not None and im1.grad.abs().sum() > 0
    assert sigma.grad is not None and torch.isfinite(sigma.grad).all()
    assert all(p.grad is None and not p.requires_grad for p in ploss.parameters())


def test_perceptual_empty_mask_is_zero(vgg: VGG16Features) -> None:
    ploss = PerceptualLoss(vgg)
    im1 = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss = ploss(im1, torch.rand(1, 3, 16, 16), mask=torch.zeros(1, 1, 16, 16))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(im1.grad).all()


def test_perceptual_not_in_state_dict_and_frozen() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(2, 2)
            self.perc = PerceptualLoss(VGG16Features())  # its own copy: the test moves it to float64

    model = Model()
    keys = list(model.state_dict())
    assert keys == ["net.weight", "net.bias"]  # no VGG weights, no normalisation buffers
    before = model.perc.vgg[0].weight.clone()
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, strict=True)
    torch.testing.assert_close(model.perc.vgg[0].weight, before)  # VGG kept as loaded
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["net.weight", "net.bias"]
    model.train()
    assert model.net.training and not model.perc.vgg.training
    # the normalisation buffers still follow .to()
    assert model.perc.mean_rgb.dtype == torch.float32
    assert model.to(torch.float64).perc.mean_rgb.dtype == torch.float64


def test_perceptual_shape_errors(vgg: VGG16Features) -> None:
    ploss = PerceptualLoss(vgg)
    with pytest.raises(ValueError):
        ploss(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="conf_sigma"):
        ploss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), conf_sigma=torch.ones(1, 1, 16, 16))


def test_perceptual_loads_vgg_with_allow_random(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("UNSUP3D_VGG16_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def fail(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    with pytest.warns(RuntimeWarning):
        ploss = PerceptualLoss(allow_random=True)
    assert isinstance(ploss.vgg, VGG16Features)
    with pytest.raises(RuntimeError, match="lam_perc=0"):
        PerceptualLoss()


# ---------------------------------------------------------------------------------------------
# depth smoothness
# ---------------------------------------------------------------------------------------------


def test_depth_smoothness_hand_computed() -> None:
    depth = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    # x: |1-0|, |4-2| -> mean 1.5; y: |2-0|, |4-1| -> mean 2.5
    torch.testing.assert_close(depth_smoothness_loss(depth), torch.tensor(4.0))
    torch.testing.assert_close(depth_smoothness_loss(depth[:, None]), torch.tensor(4.0))
    assert depth_smoothness_loss(torch.full((2, 5, 5), 3.0)).item() == 0.0
    ramp = torch.arange(5.0).repeat(5, 1)[None]  # slope 1 along x, flat along y
    torch.testing.assert_close(depth_smoothness_loss(ramp), torch.tensor(1.0))


def test_depth_smoothness_mask() -> None:
    depth = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]], requires_grad=True)
    mask = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    # x pairs inside: (0,1) only -> 1; y pairs inside: (1,4) only -> 3
    loss = depth_smoothness_loss(depth, mask)
    torch.testing.assert_close(loss, torch.tensor(4.0))
    empty = depth_smoothness_loss(depth, torch.zeros_like(mask))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(depth.grad).all()
    with pytest.raises(ValueError):
        depth_smoothness_loss(torch.zeros(2, 3, 4, 4))


def test_structural_error_is_blind_to_smooth_shifts_and_sees_edges():
    from unsup3d.losses import structural_error, structural_loss

    ramp = torch.linspace(-1, 1, 32).expand(2, 3, 32, 32).clone()
    for kind, share in (("gradient", 1e-3), ("ssim", 0.25)):
        # a colour offset of a smooth image: no gradient error, a small SSIM one (its luminance term), against
        # an L1 error of 0.2
        err, _ = structural_error(ramp, ramp + 0.2, kind)
        assert float(err.mean()) < share * 0.2, kind
        # an edge moved by two pixels: a clear error
        edge = torch.zeros(2, 3, 32, 32)
        edge[..., 14:] = 1.0
        moved = torch.zeros_like(edge)
        moved[..., 16:] = 1.0
        err, radius = structural_error(edge, moved, kind)
        assert float(err.max()) > 0.2 and radius >= 1, kind
    # gradient kind by hand: |d(dx)| + |d(dy)| averaged over channels, zero-padded at the far edge
    a, b = torch.rand(1, 3, 5, 5), torch.rand(1, 3, 5, 5)
    err, _ = structural_error(a, b, "gradient")
    d = a - b
    expect = torch.zeros(1, 3, 5, 5)
    expect[..., :, :-1] += (d[..., :, 1:] - d[..., :, :-1]).abs()
    expect[..., :-1, :] += (d[..., 1:, :] - d[..., :-1, :]).abs()
    assert torch.allclose(err, expect.mean(1, keepdim=True), atol=1e-6)
    # confidence-weighted at quarter resolution: Laplacian NLL of the pooled error; sigma = 1 and no mask
    sigma = torch.ones(1, 1, 1, 1)
    assert torch.isclose(structural_loss(a, b), err.mean())
    assert torch.isclose(structural_loss(a, b, None, sigma.expand(1, 1, 5, 5)), (err * 2**0.5 / (1 + EPS)).mean())
    a4, b4 = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    e4, _ = structural_error(a4, b4, "gradient")
    s = torch.full((1, 1, 2, 2), 0.5)
    expect = (torch.nn.functional.avg_pool2d(e4, 4) * 2**0.5 / (0.5 + EPS) + math.log(0.5 + EPS)).mean()
    assert torch.isclose(structural_loss(a4, b4, None, s), expect, atol=1e-6)
    with pytest.raises(ValueError, match="structural loss kind"):
        structural_error(a, b, "nope")
