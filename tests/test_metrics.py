"""Tests of unsup3d.metrics (SIDE, MAD, MAE, MSE, masks, aggregation, baselines)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from unsup3d.metrics import (
    SIDE_SCALE,
    DepthMetrics,
    average_depth_map,
    constant_depth_baseline,
    erode_mask,
    evaluation_mask,
    foreground_mask,
    mad,
    masked_mae,
    masked_mse,
    normal_angle_map,
    side,
    to_paper_units,
)
from unsup3d.renderer import intrinsics

BG = 1.1  # background depth (max_depth) of the synthetic data


def _face_like(b: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth positive depth in [0.9, 1.05] with background at BG outside a centred disc."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r2 = u**2 + v**2
    amp = 0.1 * torch.rand(b, 1, 1, generator=g) + 0.02
    depth = 1.05 - amp * (1 - r2).clamp(min=0)
    return torch.where(r2 < 0.8, depth, torch.full_like(depth, BG))


def test_erode_mask_hand_made():
    m = torch.ones(1, 7, 7, dtype=torch.bool)
    m[0, 2, 2] = False
    expected = torch.zeros(1, 7, 7, dtype=torch.bool)
    expected[0, 1:6, 1:6] = True  # border removed (zero padding)
    expected[0, 1:4, 1:4] = False  # 3x3 neighbourhood of the hole removed
    assert torch.equal(erode_mask(m), expected)
    # float input, channel dim, and a 3x3 block shrinking to its centre
    f = torch.zeros(1, 1, 5, 5)
    f[0, 0, 1:4, 1:4] = 1.0
    out = erode_mask(f)
    assert out.dtype == torch.bool and out.shape == (1, 5, 5)
    assert out.sum() == 1 and out[0, 2, 2]
    assert erode_mask(f, iterations=2).sum() == 0


def test_evaluation_mask_combines_foreground_and_valid():
    gt = torch.full((1, 6, 6), BG)
    gt[0, 1:5, 1:5] = 1.0  # 4x4 foreground -> eroded to the central 2x2
    assert foreground_mask(gt, BG).sum() == 16
    assert foreground_mask(gt, None).sum() == 16  # per-image max as background
    valid = torch.ones(1, 6, 6)
    valid[0, :, 4:] = 0.0  # columns 4,5 invalid -> eroded valid keeps columns 1..2
    m = evaluation_mask(gt, valid, BG)
    expected = torch.zeros(1, 6, 6, dtype=torch.bool)
    expected[0, 2:4, 2:3] = True
    assert torch.equal(m, expected)
    assert evaluation_mask(gt, None, BG).sum() == 4


def test_identical_depth_gives_zero():
    gt = _face_like()
    mask = evaluation_mask(gt, None, BG)
    assert mask.sum() > 0
    assert torch.allclose(side(gt, gt, mask), torch.zeros(3), atol=1e-6)
    assert torch.allclose(mad(gt, gt, mask), torch.zeros(3), atol=1e-3)
    assert torch.equal(masked_mae(gt, gt, mask), torch.zeros(3))
    assert torch.equal(masked_mse(gt, gt, mask), torch.zeros(3))


def test_original_mad_is_biased_for_identical_depth():
    # The original's (|n| + 1e-7) normalisation + acos gives ~6.5 degrees at 64 px, fov 10, depth 1.
    d = torch.ones(1, 64, 64)
    mask = evaluation_mask(d, None, BG)
    assert mad(d, d, mask, match_original=True).item() == pytest.approx(6.51, abs=0.05)
    assert mad(d, d, mask).item() == pytest.approx(0.0, abs=1e-3)


def test_scaled_prediction_is_scale_invariant():
    gt = _face_like()
    mask = evaluation_mask(gt, None, BG)
    pred = gt * 1.7
    assert torch.allclose(side(pred, gt, mask), torch.zeros(3), atol=1e-6)
    assert torch.allclose(mad(pred, gt, mask), torch.zeros(3), atol=1e-3)
    assert torch.allclose(masked_mae(pred, gt, mask), 0.7 * (gt * mask).flatten(1).sum(1) / mask.sum((1, 2)))


def test_side_half_offset_pattern():
    eps = 0.05
    gt = 0.9 + 0.2 * torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[:, 1:9, 1:9] = True
    pred = gt.clone()
    pred[:, :, 1:5] *= math.exp(eps)  # half of the mask's columns (1..4 of 1..8)
    pred[:, 0, :] = -1.0  # outside the mask: must not produce NaN
    s = side(pred, gt, mask)
    assert torch.allclose(s, torch.full((2,), eps / 2), atol=1e-6)
    # matches a direct population-std computation on random data
    pred2 = gt * torch.exp(0.1 * torch.randn(2, 10, 10, generator=torch.Generator().manual_seed(2)))
    d = (pred2.log() - gt.log())[mask].view(2, -1)
    assert torch.allclose(side(pred2, gt, mask), d.std(dim=1, unbiased=False), atol=1e-6)


def _plane_depth(normal: torch.Tensor, h: int, w: int, fov: float) -> torch.Tensor:
    """Depth (z) of the plane n . P = n_z (passes through (0, 0, 1)) along each pixel ray."""
    K = intrinsics(h, w, fov, dtype=torch.float64)
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    return (normal[2] / (rays @ normal)).unsqueeze(0)


@pytest.mark.parametrize(("tilt_deg", "azimuth_deg"), [(20.0, 0.0), (35.0, 60.0), (5.0, 200.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mad_tilted_plane_vs_fronto_parallel(tilt_deg, azimuth_deg, dtype):
    h = w = 32
    t, a = math.radians(tilt_deg), math.radians(azimuth_deg)
    n = torch.tensor([math.sin(t) * math.cos(a), math.sin(t) * math.sin(a), math.cos(t)], dtype=torch.float64)
    tilted = _plane_depth(n, h, w, 10.0).to(dtype)
    fronto = torch.ones(1, h, w, dtype=dtype)
    mask = erode_mask(torch.ones(1, h, w))
    assert mad(tilted, fronto, mask).item() == pytest.approx(tilt_deg, abs=0.1)
    angles = normal_angle_map(tilted, fronto)
    assert angles.dtype == dtype
    assert torch.allclose(angles[0, 1:-1, 1:-1], torch.full((h - 2, w - 2), tilt_deg, dtype=dtype), atol=0.1)
    # border normals are (0, 0, 1) for both -> zero angle there
    assert angles[0, 0].abs().max() < 1e-3


def test_empty_mask_is_nan():
    gt = torch.full((2, 8, 8), BG)
    gt[1, 2:6, 2:6] = 1.0
    mask = evaluation_mask(gt, None, BG)
    s, m = side(gt, gt, mask), mad(gt, gt, mask)
    assert torch.isnan(s[0]) and torch.isnan(m[0]) and torch.isnan(masked_mae(gt, gt, mask)[0])
    assert s[1] == 0


def test_metric_class_means_and_empty_images():
    gt = _face_like(b=3)
    gt[1] = BG  # image 1: empty mask
    pred = gt * torch.exp(0.002 * torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(3)))
    metric = DepthMetrics(fov=10.0, background_depth=BG)
    metric.update(pred, gt.unsqueeze(1))  # B x 1 x H x W accepted
    out = metric.compute()
    per = metric.per_image()
    assert out["num_images"] == 3 and out["num_empty"] == 1
    assert per["side"].shape == (3,) and torch.isnan(per["side"][1]) and per["num_pixels"][1] == 0
    mask = evaluation_mask(gt, None, BG)
    ref = side(pred, gt, mask)[[0, 2]]
    assert torch.allclose(out["side"], ref.mean())
    assert torch.allclose(out["side_std"], ref.std())
    assert torch.allclose(out["mad"], mad(pred, gt, mask)[[0, 2]].mean())
    assert out["mad_original"] > out["mad"]  # the original's normalisation biases MAD upwards
    paper = to_paper_units(out)
    assert torch.allclose(paper["side"], out["side"] * SIDE_SCALE)
    assert torch.equal(paper["mad"], out["mad"])


def test_valid_mask_is_used():
    gt = _face_like(b=1)
    pred = gt.clone()
    pred[:, :, :8] *= 1.3  # corrupt the left half...
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    valid[:, :, :9] = False  # ...and declare it (plus one column, for the erosion) invalid
    metric = DepthMetrics(background_depth=BG)
    metric.update(pred, gt, valid)
    assert metric.compute()["side"] < 1e-6
    metric.reset()
    metric.update(pred, gt)
    assert metric.compute()["side"] > 1e-3


def test_aggregation_update_twice_merge_and_fake_ddp():
    gt = _face_like(b=6, seed=4)
    pred = gt * torch.exp(0.03 * torch.randn(6, 16, 16, generator=torch.Generator().manual_seed(5)))
    once = DepthMetrics(background_depth=BG)
    once.update(pred, gt)
    ref = once.per_image()

    twice = DepthMetrics(background_depth=BG)
    twice.update(pred[:4], gt[:4])
    twice.update(pred[4:], gt[4:])

    a, b = DepthMetrics(background_depth=BG), DepthMetrics(background_depth=BG)
    a.update(pred[:2], gt[:2])
    b.update(pred[2:], gt[2:])
    b_state = {k: list(v) for k, v in b.metric_state.items()}
    a.merge_state(b)  # incoming state first: b's images, then a's
    merged = a.per_image()
    perm = torch.tensor([2, 3, 4, 5, 0, 1])

    # DDP sync through torchmetrics' own path, with a fake all-gather (rank 0: first 3 images).
    r0, r1 = DepthMetrics(background_depth=BG), DepthMetrics(background_depth=BG)
    r0.update(pred[:3], gt[:3])
    r1.update(pred[3:], gt[3:])
    remote = itertools.cycle([dim_zero_cat(v) for v in r1.metric_state.values()])
    r0.dist_sync_fn = lambda t, group=None: [t, next(remote)]
    r0.distributed_available_fn = lambda: True
    ddp_out = r0.compute()
    ddp_per = r0.per_image()
    assert len(r0.side) == 1 and r0.side[0].shape == (3,)  # local state restored after sync

    for key, val in ref.items():
        assert torch.allclose(twice.per_image()[key], val, equal_nan=True), key
        assert torch.allclose(merged[key], val[perm], equal_nan=True), key
        assert torch.allclose(ddp_per[key], val, equal_nan=True), key
    for key, val in once.compute().items():
        assert torch.allclose(ddp_out[key], val, equal_nan=True), key
    assert len(b_state["side"]) == 1


def test_average_depth_map_and_constant_baseline():
    batches = [torch.full((2, 4, 5), 1.0), torch.full((1, 1, 4, 5), 4.0), torch.full((4, 5), 2.5)]
    avg = average_depth_map(iter(batches))
    assert avg.shape == (4, 5) and torch.allclose(avg, torch.full((4, 5), (2 * 1.0 + 4.0 + 2.5) / 4))
    with pytest.raises(ValueError):
        average_depth_map([])
    gt = _face_like(b=2)
    mask = evaluation_mask(gt, None, BG)
    c1, c2 = constant_depth_baseline(gt, 1.0), constant_depth_baseline(gt, 0.5)
    assert torch.allclose(side(c1, gt, mask), side(c2, gt, mask), atol=1e-6)
    assert torch.allclose(mad(c1, gt, mask), mad(c2, gt, mask), atol=1e-3)
    assert (side(c1, gt, mask) > 0).all()


def _original_eval(recon_depth, depth_gt, recon_im_mask, fov=10.0):
    """Transcription of the original release's evaluation (model.py / renderer / utils)."""
    b, h, w = depth_gt.shape
    f = (w - 1) / 2 / math.tan(fov / 2 * math.pi / 180)
    inv_k = torch.linalg.inv(torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]]))

    def normal(depth):
        gh, gw = torch.meshgrid(torch.linspace(0, h - 1, h), torch.linspace(0, w - 1, w), indexing="ij")
        grid = torch.stack([gw, gh, torch.ones_like(gw)], 2).expand(b, h, w, 3)
        g3 = grid.matmul(inv_k.transpose(1, 0)) * depth.unsqueeze(-1)
        tu = g3[:, 1:-1, 2:] - g3[:, 1:-1, :-2]
        tv = g3[:, 2:, 1:-1] - g3[:, :-2, 1:-1]
        n = tu.cross(tv, dim=3)
        zero = torch.tensor([0.0, 0.0, 1.0])
        n = torch.cat([zero.repeat(b, h - 2, 1, 1), n, zero.repeat(b, h - 2, 1, 1)], 2)
        n = torch.cat([zero.repeat(b, 1, w, 1), n, zero.repeat(b, 1, w, 1)], 1)
        return n / (((n**2).sum(3, keepdim=True)) ** 0.5 + 1e-7)

    pool = torch.nn.functional.avg_pool2d
    mask_gt = (depth_gt < depth_gt.max()).float()
    mask_gt = (pool(mask_gt.unsqueeze(1), 3, stride=1, padding=1).squeeze(1) > 0.99).float()
    mask_pred = (pool(recon_im_mask.unsqueeze(1), 3, stride=1, padding=1).squeeze(1) > 0.99).float()
    mask = mask_gt * mask_pred
    cnt = mask.view(b, -1).sum(1)
    diff = (recon_depth.log() - depth_gt.log()) * mask
    avg = diff.view(b, -1).sum(1) / cnt
    sie = (((diff - avg.view(b, 1, 1)) ** 2 * mask).view(b, -1).sum(1) / cnt) ** 0.5
    ang = (normal(recon_depth) * normal(depth_gt)).sum(3).clamp(-1, 1).acos() / math.pi * 180
    nerr = (ang * mask).view(b, -1).sum(1) / cnt
    mae = ((recon_depth - depth_gt).abs() * mask).view(b, -1).sum(1) / cnt
    return {"side": sie, "mad_original": nerr, "mae": mae}


def test_matches_transcription_of_original_evaluation():
    gt = _face_like(b=4, h=32, w=32, seed=6)
    pred = gt * torch.exp(0.003 * torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(7)))
    valid = torch.ones(4, 32, 32)
    valid[:, 20:, :] = 0.0
    ref = _original_eval(pred, gt, valid)
    metric = DepthMetrics(fov=10.0, background_depth=BG)
    metric.update(pred, gt, valid)
    per = metric.per_image()
    for key, val in ref.items():
        assert torch.allclose(per[key], val, rtol=1e-4, atol=1e-4), key
    assert (per["mad"] < per["mad_original"]).all()


def test_side_untilted_removes_exactly_the_plane_of_the_log_error():
    from unsup3d.metrics import side_untilted

    s = 16
    y, x = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    gt = (1.0 + 0.05 * torch.exp(-(x**2 + y**2) / 0.3)).expand(3, s, s)
    mask = (x.abs() < 0.8) & (y.abs() < 0.7)
    mask = mask.expand(3, s, s).clone()
    checker = 0.01 * ((torch.arange(s).view(s, 1) + torch.arange(s).view(1, s)) % 2 * 2 - 1).float()
    lean = torch.stack([0.02 * x, 0.03 * y - 0.01 * x, torch.zeros_like(x)])
    shape = torch.stack([torch.zeros_like(x), checker, checker])
    pred = gt * (lean + shape).exp()
    untilted, slopes = side_untilted(pred, gt, mask)
    # a pure lean leaves nothing; the planes are found; what is left is the SIDE of the non-planar part alone
    assert untilted[0].item() < 1e-5
    assert torch.allclose(slopes[:2], torch.tensor([[0.02, 0.0], [-0.01, 0.03]]), atol=2e-4)
    alone = side(gt * shape[2].exp(), gt[:1], mask[:1])
    assert torch.allclose(untilted[2], alone[0], atol=1e-6)
    # the checker is nearly orthogonal to a plane: removing one changes its error little, and never raises it
    assert untilted[1].item() == pytest.approx(alone[0].item(), rel=0.05)
    assert (untilted <= side(pred, gt, mask) + 1e-7).all()
    # an empty mask gives NaN, not an error
    u, sl = side_untilted(pred[:1], gt[:1], torch.zeros(1, s, s, dtype=torch.bool))
    assert math.isnan(u.item()) and torch.isnan(sl).all()
