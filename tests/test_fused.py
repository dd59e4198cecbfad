"""The rasterizer's fused kernels: compiled (torch.compile) and eager give the same fragments and gradients."""

import math

import pytest
import torch

from unsup3d.renderer import Renderer
from unsup3d.renderer import fused as fused_mod


def _render_and_grads(depth, view):
    d = depth.clone().requires_grad_()
    v = view.clone().requires_grad_()
    r = Renderer(image_size=depth.shape[-1])
    frags = r.rasterize_view(d, v)
    (frags.zbuf.square().sum() + (frags.bary_coords * torch.arange(3.0)).sum()).backward()
    return frags, d.grad, v.grad


def test_compiled_kernels_equal_eager(monkeypatch):
    torch.manual_seed(0)
    u = torch.linspace(-1, 1, 24)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    depth = (1.04 - 0.1 * torch.exp(-(xx**2 + yy**2) / 0.3)).expand(3, 24, 24).contiguous()
    deg = math.pi / 180
    view = torch.tensor([[10 * deg, 30 * deg, -5 * deg, 0.02, -0.01, 0.0], [0, -40 * deg, 0, 0, 0, 0],
                         [-5 * deg, 10 * deg, 3 * deg, 0.0, 0.02, 0.0]])
    monkeypatch.setenv("UNSUP3D_COMPILE", "0")
    eager = _render_and_grads(depth, view)
    monkeypatch.setenv("UNSUP3D_COMPILE", "1")
    # (where no compiler is available, fused() warns and runs eager; the comparison still holds)
    compiled = _render_and_grads(depth, view)
    assert torch.equal(eager[0].pix_to_face, compiled[0].pix_to_face)
    assert torch.allclose(eager[0].zbuf, compiled[0].zbuf, atol=1e-6)
    assert torch.allclose(eager[0].bary_coords, compiled[0].bary_coords, atol=1e-5)
    assert torch.allclose(eager[1], compiled[1], atol=1e-4, rtol=1e-4)
    assert torch.allclose(eager[2], compiled[2], atol=1e-4, rtol=1e-4)


def test_failed_compilation_falls_back_to_eager(monkeypatch):
    monkeypatch.setenv("UNSUP3D_COMPILE", "1")

    def boom(fn, **kwargs):
        def raiser(*a, **k):
            raise RuntimeError("no compiler")
        return raiser

    monkeypatch.setattr(fused_mod.torch, "compile", boom)
    fused_mod._compiled.cache_clear()

    def double(x):
        return x * 2

    with pytest.warns(RuntimeWarning, match="eager"):
        out = fused_mod.fused(double)(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0))
    fused_mod._failed.discard(double.__qualname__)
    fused_mod._compiled.cache_clear()
