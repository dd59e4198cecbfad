"""The fused kernels (rasterizer, shading, compositing, loss): compiled (torch.compile) and eager give the same
values and gradients."""

import math

import pytest
import torch

import unsup3d.fused as fused_mod
from unsup3d.renderer import Renderer


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


def test_compiled_normals_equal_the_cross_product_reference(monkeypatch):
    """normals_from_points (written-out cross product, fused when compiling) against torch.linalg.cross on
    the same central differences, normalised, with the (0, 0, 1) border: values and gradients, eager and
    compiled."""
    from unsup3d.renderer.camera import intrinsics, lift_depth, normals_from_points

    torch.manual_seed(0)
    depth = 1 + 0.05 * torch.rand(2, 9, 11)
    pts = lift_depth(depth, intrinsics(9, 11, fov=10.0))
    g = torch.randn(2, 9, 11, 3)

    def reference(p):
        tu = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
        tv = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
        n = torch.zeros_like(p)
        n[..., 2] = 1.0
        n[:, 1:-1, 1:-1] = torch.linalg.cross(tu, tv, dim=-1)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-7)

    p = pts.clone().requires_grad_()
    want = reference(p)
    (want * g).sum().backward()
    for setting in ("0", "1"):
        monkeypatch.setenv("UNSUP3D_COMPILE", setting)
        q = pts.clone().requires_grad_()
        got = normals_from_points(q)
        (got * g).sum().backward()
        assert got.shape == (2, 9, 11, 3) and got.dtype == pts.dtype
        assert torch.allclose(got, want, atol=1e-6)
        assert torch.allclose(q.grad, p.grad, atol=1e-4, rtol=1e-4)
    assert torch.equal(normals_from_points(pts[:, :2]), torch.tensor([0.0, 0.0, 1.0]).expand(2, 2, 11, 3))


@pytest.mark.parametrize("inverse", [False, True])
def test_reproject_depth_equals_the_kornia_composition(monkeypatch, inverse):
    """reproject_depth (lift, rigid motion and projection fused) against lift_depth + transform_points (or
    inverse_transform_points) + project, kornia's, at another output size too: values and gradients to the
    depth and the view, eager and compiled."""
    from unsup3d.renderer.camera import (
        intrinsics,
        inverse_transform_points,
        lift_depth,
        project,
        reproject_depth,
        transform_points,
    )

    torch.manual_seed(0)
    depth = 0.95 + 0.1 * torch.rand(3, 7, 9, dtype=torch.float64)
    deg = math.pi / 180
    view = torch.tensor([[10 * deg, 30 * deg, -5 * deg, 0.02, -0.01, 0.03], [0, -40 * deg, 0, 0, 0, 0],
                         [-5 * deg, 10 * deg, 3 * deg, 0.0, 0.02, 0.0]], dtype=torch.float64)
    move = inverse_transform_points if inverse else transform_points
    g = torch.randn(3, 7, 9, 3, dtype=torch.float64)
    for size in ((7, 9), (13, 17)):
        d, v = depth.clone().requires_grad_(), view.clone().requires_grad_()
        pts = move(lift_depth(d, intrinsics(7, 9, 10.0, dtype=d.dtype)), v, 0.98)
        want = torch.cat([project(pts, intrinsics(*size, 10.0, dtype=d.dtype)), pts[..., 2:]], -1)
        (want * g).sum().backward()
        for setting in ("0", "1"):
            monkeypatch.setenv("UNSUP3D_COMPILE", setting)
            d2, v2 = depth.clone().requires_grad_(), view.clone().requires_grad_()
            got = reproject_depth(d2, v2, 10.0, size, 0.98, inverse=inverse)
            (got * g).sum().backward()
            assert got.shape == (3, 7, 9, 3) and got.dtype == torch.float64
            assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)
            assert torch.allclose(d2.grad, d.grad, atol=1e-8, rtol=1e-8)
            assert torch.allclose(v2.grad, v.grad, atol=1e-8, rtol=1e-8)


def _values_and_grads(fn, *inputs):
    """``fn``'s outputs and the gradients of a fixed random projection of them w.r.t. every input."""
    leaves = [t.clone().requires_grad_() if t is not None and t.is_floating_point() else t for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(1)
    total = sum((o * torch.rand(o.shape, generator=gen)).sum() for o in outs)
    grads = torch.autograd.grad(total, [t for t in leaves if t is not None and t.requires_grad])
    return [o.detach() for o in outs], list(grads)


def _assert_same(fn, reference, *inputs, tol=1e-5):
    """``fn`` and ``reference`` give the same values and the same gradients on ``inputs``."""
    (out, grads), (ref_out, ref_grads) = _values_and_grads(fn, *inputs), _values_and_grads(reference, *inputs)
    assert len(out) == len(ref_out) and len(grads) == len(ref_grads)
    for x, y in zip(out + grads, ref_out + ref_grads):
        assert torch.allclose(x, y, atol=tol, rtol=tol), (x - y).abs().max()


@pytest.mark.parametrize("compile_mode", ["0", "1"])
def test_fused_shading_compositing_and_loss_equal_the_op_by_op_references(monkeypatch, compile_mode):
    """The step's fused element-wise chains (shading, compositing over the background, the photometric loss,
    the depth normalisation) give the op-by-op formulas' values and gradients, eager and compiled."""
    from unsup3d.core import composite_over
    from unsup3d.losses import EPS, photometric_loss
    from unsup3d.renderer import shading

    monkeypatch.setenv("UNSUP3D_COMPILE", compile_mode)
    torch.manual_seed(0)
    b, h, w = 6, 10, 12
    albedo = torch.rand(b, 3, h, w) * 2 - 1
    normal = torch.nn.functional.normalize(torch.randn(b, h, w, 3), dim=-1)
    direction = shading.light_direction(torch.randn(b, 2))
    amb, dif = torch.rand(b), torch.rand(b)

    def reference_shading(al, n, d, a, k):
        lam = (n * d[:, None, None, :]).sum(-1).clamp(min=0)
        s = a[:, None, None] + k[:, None, None] * lam
        return lam, s, (al / 2 + 0.5) * s[:, None] * 2 - 1

    _assert_same(lambda *t: shading.shade_lambertian(*t, signed=True), reference_shading,
                 albedo, normal, direction, amb, dif)
    if compile_mode == "0":
        _, _, unsigned = shading.shade_lambertian(albedo / 2 + 0.5, normal, direction, amb, dif)
        lam = shading.lambertian(normal, direction)
        assert torch.allclose(unsigned, shading.shade(albedo / 2 + 0.5, shading.shading_map(amb, dif, lam)))

    rgba = torch.rand(2 * b, 4, h, w)
    bg, mask = torch.rand(b, 3, h, w), (torch.rand(b, 1, h, w) > 0.3).float()

    def reference_over(c, g, m):
        a = c[:, 3:]
        return (c[:, :3] * a + g.repeat(2, 1, 1, 1) * (1 - a)) * m.repeat(2, 1, 1, 1)

    _assert_same(composite_over, reference_over, rgba, bg, mask)
    with pytest.raises(ValueError, match="composite_over"):
        composite_over(rgba, bg, mask[:, :, :-1])

    im1, im2, sigma = torch.rand(b, 3, h, w), torch.rand(b, 3, h, w), torch.rand(b, 1, h, w) + 0.1

    def reference_l1(x, y, m, c):
        loss = (x - y).abs()
        if c is not None:
            loss = loss * 2**0.5 / (c + EPS) + (c + EPS).log()
        return loss.mean() if m is None else (loss * m).sum() / (m.expand_as(loss).sum())

    # (compiled: the model's combination only, each one compiles its own kernels)
    for m, c in ((mask, sigma),) if compile_mode == "1" else ((None, None), (mask, None), (mask, sigma), (None, sigma)):
        _assert_same(photometric_loss, reference_l1, im1, im2, m, c)
    with pytest.raises(ValueError, match="dimensions"):
        photometric_loss(im1, im2, mask[:, 0])


def test_auto_compiles_in_training_runs_only(monkeypatch):
    """``auto``: eager unless a training run enabled it, and eager under inference mode; ``0`` / ``1`` override."""
    monkeypatch.setattr(fused_mod, "_auto_compile", False)
    monkeypatch.setenv("UNSUP3D_COMPILE", "auto")
    assert not fused_mod.compile_enabled()  # a one-off process (eval, export, data generation): eager
    fused_mod.set_auto_compile(True)  # what unsup3d.training.train does
    assert fused_mod.compile_enabled()
    with torch.inference_mode():  # validation, image logging, evaluation inside a training run
        assert not fused_mod.compile_enabled()
    with torch.no_grad():  # the rasterizer's selection runs without gradients inside the training step
        assert fused_mod.compile_enabled()
    with fused_mod.eager():  # validation while fitting (no_grad, not inference mode)
        with fused_mod.eager():
            assert not fused_mod.compile_enabled()
        assert not fused_mod.compile_enabled()
    assert fused_mod.compile_enabled()
    monkeypatch.delenv("UNSUP3D_COMPILE")
    assert fused_mod.compile_enabled()
    monkeypatch.setenv("UNSUP3D_COMPILE", "0")
    assert not fused_mod.compile_enabled()
    monkeypatch.setenv("UNSUP3D_COMPILE", "1")
    fused_mod.set_auto_compile(False)
    with torch.inference_mode():
        assert fused_mod.compile_enabled()


def test_training_run_enables_auto_compile(monkeypatch):
    """unsup3d.training.train switches ``auto`` to compiling before it builds anything."""
    from unsup3d.training import run as run_mod

    monkeypatch.setattr(fused_mod, "_auto_compile", False)

    class Stop(Exception):
        pass

    def stop(cfg):
        raise Stop

    monkeypatch.setattr(run_mod, "run_dir", stop)
    monkeypatch.setattr(run_mod, "validate_config", lambda cfg: None)
    with pytest.raises(Stop):
        run_mod.train({})
    assert fused_mod._auto_compile
