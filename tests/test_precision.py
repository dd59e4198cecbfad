"""Geometry in full precision under autocast: the renderer, shading, the model's rendering and the
depth metrics give their fp32 results (and fp32 tensors) inside a bf16/fp16 autocast context; a
bf16-mixed training step runs on the CPU."""

import math

import pytest
import torch

from unsup3d.metrics import DepthMetrics
from unsup3d.model import Unsup3D
from unsup3d.renderer import Renderer, full_precision, shading

S = 32
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def _autocast(device):
    return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)


def _inputs(device, b=3):
    g = torch.Generator().manual_seed(0)
    u = torch.linspace(-1, 1, S)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    bump = torch.exp(-(xx**2 + yy**2) / 0.3)
    depth = 1.04 - 0.12 * bump + 0.01 * torch.rand(b, S, S, generator=g)
    deg = math.pi / 180
    view = torch.tensor([[10 * deg, 25 * deg, -5 * deg, 0.02, -0.01, 0.01],
                         [-8 * deg, -30 * deg, 6 * deg, -0.02, 0.02, 0.0],
                         [3 * deg, 12 * deg, 2 * deg, 0.01, 0.01, -0.01]])[:b]
    tex = torch.rand(b, 3, S, S, generator=g)
    return depth.to(device), view.to(device), tex.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_renderer_under_autocast_equals_fp32(device):
    r = Renderer(image_size=S)
    depth, view, tex = _inputs(device)
    ops = {
        "warp_canon_depth": lambda: r.warp_canon_depth(depth, view),
        "inverse_warp_grid": lambda: r.inverse_warp_grid(r.warp_canon_depth(depth, view), view),
        "render_view": lambda: r.render_view(tex, depth, view),
        "normals": lambda: r.normals(depth),
        "depth_to_points": lambda: r.depth_to_points(depth),
        "view_points": lambda: r.view_points(depth, view),
    }
    for name, op in ops.items():
        ref = op()
        with _autocast(device):
            got = op()
        assert got.dtype == torch.float32, name
        assert (got - ref).abs().max() <= 1e-5, (name, (got - ref).abs().max())


def test_half_inputs_are_computed_in_fp32():
    r = Renderer(image_size=S)
    depth, view, tex = _inputs("cpu")
    ref = r.render_view(tex, depth, view)
    got = r.render_view(tex.bfloat16(), depth.bfloat16(), view.bfloat16())
    assert got.dtype == torch.float32
    # the inputs themselves are rounded to bf16, so compare against fp32 of the rounded inputs
    exact = r.render_view(tex.bfloat16().float(), depth.bfloat16().float(), view.bfloat16().float())
    assert torch.equal(got, exact)
    assert ref.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_shading_under_autocast(device):
    depth, _, tex = _inputs(device)
    r = Renderer(image_size=S)
    light = torch.tensor([[0.3, -0.2], [0.0, 0.0], [-0.5, 0.4]], device=device)

    def run():
        lam = shading.lambertian(r.normals(depth), shading.light_direction(light))
        return shading.shade(tex, shading.shading_map(torch.full((3,), 0.4, device=device),
                                                      torch.full((3,), 0.6, device=device), lam))

    ref = run()
    with _autocast(device):
        got = run()
    assert got.dtype == torch.float32 and (got - ref).abs().max() <= 1e-6


def test_shading_formulas():
    d = shading.light_direction(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    assert torch.allclose(d, torch.tensor([[0, 0, 1.0], [3 / 26**0.5, 4 / 26**0.5, 1 / 26**0.5]]))
    n = torch.tensor([0.0, 0.0, 1.0]).expand(2, 4, 5, 3)
    lam = shading.lambertian(n, d)
    assert lam.shape == (2, 4, 5)
    assert torch.allclose(lam[0], torch.tensor(1.0)) and torch.allclose(lam[1], torch.tensor(1 / 26**0.5))
    back = shading.lambertian(-n, d)
    assert torch.all(back == 0)  # max(0, n . l)
    s = shading.shading_map(torch.tensor([0.2, 0.5]), torch.tensor([0.8, 0.1]), lam)
    assert torch.allclose(s[0], torch.tensor(1.0)) and torch.allclose(s[1], 0.5 + 0.1 * lam[1])
    img = shading.shade(torch.full((2, 3, 4, 5), 0.5), s)
    assert img.shape == (2, 3, 4, 5) and torch.allclose(img, 0.5 * s.unsqueeze(1).expand(-1, 3, -1, -1))


def _fixed_raw(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.hparams.image_size
    return {
        "depth": torch.randn(b, 1, s, s, generator=g) * 0.3,
        "albedo": torch.rand(b, 3, s, s, generator=g) * 2 - 1,
        "light": torch.rand(b, 4, generator=g) * 2 - 1,
        "view": (torch.rand(b, 6, generator=g) * 2 - 1) * 0.4,
        "conf": (torch.rand(b, 2, s, s, generator=g) + 0.5, torch.rand(b, 2, s // 4, s // 4, generator=g) + 0.5),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_model_rendering_under_autocast_equals_fp32(device, monkeypatch):
    torch.manual_seed(0)
    model = Unsup3D(image_size=S, width=0.125, lam_perc=0.0).to(device)
    raw = {k: (tuple(t.to(device) for t in v) if isinstance(v, tuple) else v.to(device))
           for k, v in _fixed_raw(model).items()}
    monkeypatch.setattr(model.core, "predict", lambda x, reconstruct=True, mirrored_view=False: raw)
    images = torch.rand(2, 3, S, S, device=device)
    ref = model(images)
    with _autocast(device):
        got = model(images)
    for name in ("recon_image", "recon_image_flip", "recon_depth", "canon_image", "canon_normal", "recon_mask"):
        a, b = getattr(ref, name), getattr(got, name)
        assert b.dtype == torch.float32, name
        assert (a - b).abs().max() <= 1e-4, (name, (a - b).abs().max())
    assert ref.recon_mask.sum() > 0.3 * ref.recon_mask.numel()


def test_networks_do_run_in_bf16_under_autocast():
    model = Unsup3D(image_size=S, width=0.125, lam_perc=0.0)
    x = torch.rand(2, 3, S, S) * 2 - 1
    with _autocast("cpu"):
        raw = model.core.predict(x)
        f = model.core.render_factors(x, raw)
    assert raw["depth"].dtype == torch.bfloat16  # networks in low precision
    assert f.recon_image.dtype == torch.float32 and f.canon_depth.dtype == torch.float32
    assert torch.isfinite(f.recon_image).all()


def test_depth_metrics_under_autocast():
    depth, view, _ = _inputs("cpu")
    gt = Renderer(image_size=S).warp_canon_depth(depth, view)
    pred = gt + 0.01 * torch.randn_like(gt)
    a, b = DepthMetrics(background_depth=1.1), DepthMetrics(background_depth=1.1)
    a.update(pred, gt)
    with _autocast("cpu"):
        b.update(pred, gt)
    ra, rb = a.compute(), b.compute()
    for k in ("side", "mad", "mad_original"):
        assert rb[k].dtype == torch.float32 and abs(float(ra[k] - rb[k])) <= 1e-5 * max(1.0, abs(float(ra[k])))


def test_full_precision_context_disables_autocast():
    with _autocast("cpu"):
        assert torch.is_autocast_enabled("cpu")
        with full_precision("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
