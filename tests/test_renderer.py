"""Renderer tests: camera conventions, exact ray casting, gradients, consistency, backends."""

import math

import pytest
import torch
import torch.nn.functional as F

from unsup3d.renderer import Renderer, camera, grid_faces, rasterize
from unsup3d.renderer.pytorch3d_backend import is_available as p3d_available

S = 16  # tiny images keep the exact ray cast cheap


def original_faces(h: int, w: int, diagonal: str = "bl-tr") -> torch.Tensor:
    """The grid triangulation written out independently of the package: the original release's
    ``get_face_idx`` splits each cell along its bottom-left/top-right diagonal into (tl, bl, tr) and
    (tr, bl, br); ``diagonal="tl-br"`` gives the other split, (tl, bl, br) and (tl, br, tr)."""
    first, second = [], []  # the original concatenates the first triangle of every cell, then the second
    for i in range(h - 1):
        for j in range(w - 1):
            tl, tr, bl, br = i * w + j, i * w + j + 1, (i + 1) * w + j, (i + 1) * w + j + 1
            if diagonal == "bl-tr":
                first.append((tl, bl, tr))
                second.append((tr, bl, br))
            else:
                first.append((tl, bl, br))
                second.append((tl, br, tr))
    return torch.tensor(first + second)


def ray_cast_depth(renderer: Renderer, canon_depth: torch.Tensor, view: torch.Tensor, size: int,
                   diagonal: str = "bl-tr") -> torch.Tensor:
    """Exact reference: a ray from the camera centre through each pixel centre, nearest hit of the
    transformed grid-mesh triangles of the original's triangulation (Moller-Trumbore), in float64;
    returns z of the hit or NaN (B x S x S)."""
    b, h, w = canon_depth.shape
    pts = renderer.depth_to_points(canon_depth.double()).view(b, -1, 3)
    pts = camera.transform_points(pts, view.double(), renderer.rot_center_depth)
    faces = original_faces(h, w, diagonal)
    tri = pts[:, faces]  # B x F x 3 x 3
    K = camera.intrinsics(size, size, renderer.fov, dtype=torch.float64)
    uv = camera.pixel_grid(size, size, dtype=torch.float64).view(-1, 2)
    dirs = torch.cat([uv, torch.ones(uv.shape[0], 1, dtype=torch.float64)], -1) @ torch.linalg.inv(K).T
    v0, v1, v2 = tri[:, None, :, 0], tri[:, None, :, 1], tri[:, None, :, 2]  # B x 1 x F x 3
    d = dirs[None, :, None, :]  # 1 x P x 1 x 3
    e1, e2 = v1 - v0, v2 - v0
    p = torch.linalg.cross(d.expand_as(e2 + d), e2.expand_as(e2 + d), dim=-1)
    det = (e1 * p).sum(-1)
    inv = 1.0 / det
    tvec = -v0
    uu = (tvec * p).sum(-1) * inv
    q = torch.linalg.cross(tvec.expand_as(p), e1.expand_as(p), dim=-1)
    vv = (d * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    hit = (det.abs() > 1e-15) & (uu >= -1e-9) & (vv >= -1e-9) & (uu + vv <= 1 + 1e-9) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    tmin = t.min(-1).values  # B x P, z of the hit since dirs have z = 1
    tmin[torch.isinf(tmin)] = math.nan
    return tmin.view(b, size, size)


def interior_mask(ref: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood is entirely covered (away from silhouettes)."""
    hit = (~torch.isnan(ref)).double().unsqueeze(1)
    return (-F.max_pool2d(-hit, 3, 1, 1)).squeeze(1) > 0.5


def plane_depth(renderer: Renderer, normal, offset: float, size: int) -> torch.Tensor:
    """Depth map (1 x S x S) of the plane n . P = offset seen by the camera."""
    K = camera.intrinsics(size, size, renderer.fov, dtype=torch.float64)
    uv = camera.pixel_grid(size, size, dtype=torch.float64)
    rays = torch.cat([uv, torch.ones(size, size, 1, dtype=torch.float64)], -1) @ torch.linalg.inv(K).T
    n = torch.tensor(normal, dtype=torch.float64)
    return (offset / (rays @ n)).unsqueeze(0)


def smooth_depth(b: int, size: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 1, 4, 4, generator=g, dtype=dtype)
    d = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=True)[:, 0]
    return 0.95 + 0.1 * (d - d.amin()) / (d.amax() - d.amin())


# --------------------------------------------------------------------------------- conventions
def test_intrinsics_match_original_convention():
    K = camera.intrinsics(64, 64, 10.0)
    f = 31.5 / math.tan(math.radians(5.0))
    assert torch.allclose(K, torch.tensor([[f, 0, 31.5], [0, f, 31.5], [0, 0, 1.0]]))


def test_rotation_is_rz_ry_rx():
    a = torch.tensor([[0.3, -0.5, 0.7]], dtype=torch.float64)
    rx, ry, rz = a[0]
    Rx = torch.tensor([[1, 0, 0], [0, rx.cos(), -rx.sin()], [0, rx.sin(), rx.cos()]], dtype=torch.float64)
    Ry = torch.tensor([[ry.cos(), 0, ry.sin()], [0, 1, 0], [-ry.sin(), 0, ry.cos()]], dtype=torch.float64)
    Rz = torch.tensor([[rz.cos(), -rz.sin(), 0], [rz.sin(), rz.cos(), 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(camera.euler_to_rotation_matrix(a)[0], Rz @ Ry @ Rx)


def test_lift_project_round_trip():
    r = Renderer(image_size=S)
    d = smooth_depth(2, S)
    pts = r.depth_to_points(d)
    uv = camera.project(pts, r.K(S, like=pts))
    assert torch.allclose(uv, camera.pixel_grid(S, S, dtype=d.dtype).expand_as(uv), atol=1e-9)
    assert torch.allclose(pts[..., 2], d)


def test_transform_inverse_round_trip():
    pts = torch.randn(3, 50, 3, dtype=torch.float64)
    view = torch.randn(3, 6, dtype=torch.float64)
    back = camera.inverse_transform_points(camera.transform_points(pts, view), view)
    assert torch.allclose(back, pts, atol=1e-12)


@pytest.mark.parametrize("tilt_deg", [0.0, 15.0, -30.0, 45.0])
def test_normals_of_tilted_planes(tilt_deg):
    r = Renderer(image_size=S)
    a = math.radians(tilt_deg)
    n = (math.sin(a) * 0.6, math.sin(a) * 0.8, math.cos(a))
    d = plane_depth(r, n, 1.0, S)
    normals = r.normals(d)[0, 1:-1, 1:-1]
    expected = torch.tensor(n, dtype=torch.float64)
    assert torch.allclose(normals, expected.expand_as(normals), atol=1e-6)
    assert torch.all(r.normals(d)[0, 0] == torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


# ------------------------------------------------------------------------------ exact ray cast
def _views():
    deg = math.pi / 180
    return {
        "identity": [0, 0, 0, 0, 0, 0],
        "yaw+30": [0, 30 * deg, 0, 0, 0, 0],
        "yaw-30": [0, -30 * deg, 0, 0, 0, 0],
        "all6": [12 * deg, -25 * deg, 8 * deg, 0.02, -0.015, 0.03],
    }


def _surfaces(r: Renderer):
    size = S
    u = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    sphere = 1.05 - 0.12 * torch.sqrt((1 - 0.8 * (xx**2 + yy**2)).clamp(min=0))
    step = torch.where(xx > 0.1, torch.full_like(xx, 0.93), torch.full_like(xx, 1.07))
    tilted = plane_depth(r, (math.sin(math.radians(20)), 0.0, math.cos(math.radians(20))), 1.0, size)[0]
    noisy = 0.92 + 0.16 * torch.rand(size, size, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return {
        "noisy": noisy,
        "plane": torch.full((size, size), 1.0, dtype=torch.float64),
        "tilted": tilted,
        "sphere_cap": sphere,
        "step": step,
    }


@pytest.mark.parametrize("surface", ["plane", "tilted", "sphere_cap", "step", "noisy"])
@pytest.mark.parametrize("view_name", ["identity", "yaw+30", "yaw-30", "all6"])
def test_warp_canon_depth_matches_ray_cast(surface, view_name):
    r = Renderer(image_size=S)
    d = _surfaces(r)[surface].unsqueeze(0)
    view = torch.tensor([_views()[view_name]], dtype=torch.float64)
    ref = ray_cast_depth(r, d, view, S)
    frags = r.rasterize_view(d, view)
    # Coverage agrees exactly except possibly on silhouette pixels.
    inner = interior_mask(ref)
    assert inner.sum() > 0.2 * S * S
    assert torch.all(frags.mask[inner])
    got = frags.zbuf[inner]
    assert torch.allclose(got, ref[inner], atol=1e-6), (got - ref[inner]).abs().max()
    warped = r.warp_canon_depth(d, view)
    assert torch.allclose(warped[inner], ref[inner].clamp(max=r.background_depth), atol=1e-6)
    # Pixels the ray cast misses are background.
    miss = torch.isnan(ref) & ~F.max_pool2d((~torch.isnan(ref)).double()[None], 3, 1, 1)[0].bool()
    assert torch.all(warped[miss] == r.background_depth)


def test_triangulation_is_the_originals():
    """The renderer's faces are the original's (same triangles, same order), and the ray-cast test
    above can tell the two diagonals apart: on a curved surface seen from a view with all six
    components non-zero, the other diagonal's mesh differs by far more than the 1e-6 tolerance."""
    assert torch.equal(grid_faces(5, 7), original_faces(5, 7))
    r = Renderer(image_size=S)
    d = _surfaces(r)["sphere_cap"].unsqueeze(0)
    view = torch.tensor([_views()["all6"]], dtype=torch.float64)
    ours = ray_cast_depth(r, d, view, S)
    other = ray_cast_depth(r, d, view, S, diagonal="tl-br")
    inner = interior_mask(ours) & interior_mask(other)
    assert (ours[inner] - other[inner]).abs().max() > 1e-5
    warped = r.warp_canon_depth(d, view)
    assert (warped[inner] - ours[inner]).abs().max() < 1e-6


def test_step_occlusion_nearest_wins():
    r = Renderer(image_size=S)
    d = _surfaces(r)["step"].unsqueeze(0)
    view = torch.tensor([[0.0, math.radians(30), 0, 0, 0, 0]], dtype=torch.float64)
    frags = r.rasterize_view(d, view)
    ref = ray_cast_depth(r, d, view, S)
    both = frags.mask & ~torch.isnan(ref)
    # Everywhere both agree there is a surface, the rasterizer returns the nearest one (no farther).
    assert torch.all(frags.zbuf[both] <= ref[both] + 1e-4)


def test_identity_view():
    r = Renderer(image_size=S)
    d = smooth_depth(3, S)
    zero = torch.zeros(3, 6, dtype=torch.float64)
    warped = r.warp_canon_depth(d, zero)
    assert torch.allclose(warped[:, 1:-1, 1:-1], d[:, 1:-1, 1:-1], atol=1e-9)
    grid = r.inverse_warp_grid(d, zero)
    lin = torch.linspace(-1, 1, S, dtype=torch.float64)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    assert torch.allclose(grid, torch.stack([xx, yy], -1).expand_as(grid), atol=1e-9)


def test_background_value_and_clamp():
    r = Renderer(image_size=S)
    d = torch.full((1, S, S), 1.0)
    far_away = torch.tensor([[0, 0, 0, 5.0, 0, 0]])  # moved out of the image
    out = r.warp_canon_depth(d, far_away)
    assert torch.allclose(out, torch.full_like(out, 1.2))
    assert r.background_depth == pytest.approx(1.2)
    near = r.warp_canon_depth(torch.full((1, S, S), 0.5), torch.zeros(1, 6))
    assert torch.allclose(near[:, 1:-1, 1:-1], torch.tensor(0.8))  # clamped at min_depth - margin


def test_inverse_warp_consistency():
    """Canonical points sampled through inverse_warp_grid(warp_canon_depth(d, v), v) and warped
    by v land on the camera rays of their pixels."""
    r = Renderer(image_size=32)
    d = smooth_depth(2, 32, seed=3)
    deg = math.pi / 180
    view = torch.tensor([[10 * deg, 25 * deg, -5 * deg, 0.01, -0.02, 0.02],
                         [-8 * deg, -35 * deg, 6 * deg, -0.02, 0.01, -0.01]], dtype=torch.float64)
    recon = r.warp_canon_depth(d, view)
    grid = r.inverse_warp_grid(recon, view)
    canon_pts = r.depth_to_points(d).permute(0, 3, 1, 2)
    sampled = F.grid_sample(canon_pts, grid, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    warped = camera.transform_points(sampled, view)
    uv = camera.project(warped, r.K(32, like=warped))
    target = camera.pixel_grid(32, 32, dtype=d.dtype).expand_as(uv)
    covered = (recon < r.max_depth + r.margin - 1e-6).double().unsqueeze(1)
    inner = (-F.max_pool2d(-covered, 5, 1, 2)).squeeze(1) > 0.5
    inner[:, :3] = inner[:, -3:] = False
    inner[:, :, :3] = inner[:, :, -3:] = False
    assert inner.sum() > 200
    err = (uv - target).norm(dim=-1)[inner]
    assert err.max() < 0.05, err.max()


# ---------------------------------------------------------------------------------- gradients
def test_gradcheck_rasterized_depth_wrt_vertices():
    # Two triangles of a slanted quad seen by a 5x5 camera; pixel centres away from edges.
    verts = torch.tensor([[[0.3, 0.2, 1.0], [4.7, 0.4, 1.1], [0.2, 4.6, 0.95], [4.8, 4.7, 1.05]]],
                         dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 3], [0, 3, 2]])

    def f(v):
        frags = rasterize(v, faces, (5, 5))
        return frags.zbuf, frags.bary_coords

    assert torch.autograd.gradcheck(f, (verts,), eps=1e-6, atol=1e-5)


def test_gradients_reach_depth_and_view():
    r = Renderer(image_size=S)
    d = smooth_depth(2, S).requires_grad_()
    view = torch.tensor([[0.1, 0.3, -0.05, 0.01, 0.02, 0.0]] * 2, dtype=torch.float64, requires_grad=True)
    loss = r.warp_canon_depth(d, view).pow(2).sum()
    loss.backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
    assert view.grad is not None and torch.all(view.grad[:, :5].abs().sum(0) > 0)
    assert torch.isfinite(d.grad).all() and torch.isfinite(view.grad).all()


# ---------------------------------------------------------------------------------- render_view
def test_render_view_constant_texture_on_plane():
    r = Renderer(image_size=S)
    d = torch.full((1, S, S), 1.0)
    tex = torch.full((1, 3, S, S), 0.7)
    view = torch.tensor([[0.0, math.radians(40), 0.0, 0.0, 0.0, 0.0]])
    img, mask = r.render_view(tex, d, view, background=-1.0, image_size=24, return_mask=True)
    assert img.shape == (1, 3, 24, 24)
    assert 0.2 * 24 * 24 < mask.sum() < 0.9 * 24 * 24
    assert torch.allclose(img[mask.expand_as(img)], torch.tensor(0.7))
    assert torch.all(img[~mask.expand_as(img)] == -1.0)


def test_render_view_identity_reproduces_checkerboard():
    r = Renderer(image_size=S)
    d = smooth_depth(1, S, dtype=torch.float32)
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    tex = ((yy // 2 + xx // 2) % 2).float().expand(1, 3, S, S)
    img = r.render_view(tex, d, torch.zeros(1, 6))
    assert torch.allclose(img, tex, atol=1e-5)


# ---------------------------------------------------------------------------- batch, device, dtype
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    r = Renderer(image_size=S)
    d = smooth_depth(2, S).to(dtype)
    v = torch.zeros(2, 6, dtype=dtype)
    assert r.warp_canon_depth(d, v).dtype == dtype
    assert r.inverse_warp_grid(d, v).dtype == dtype
    assert r.normals(d).dtype == dtype
    assert r.render_view(torch.rand(2, 3, S, S, dtype=dtype), d, v).dtype == dtype


def test_batch_elements_are_independent():
    r = Renderer(image_size=S)
    d = smooth_depth(3, S, seed=5)
    v = torch.tensor([[0.1, 0.4, 0.0, 0.0, 0.0, 0.0], [0.0, -0.5, 0.1, 0.01, 0, 0], [0.2, 0.0, 0.0, 0, 0, 0.05]],
                     dtype=torch.float64)
    tex = torch.rand(3, 3, S, S, dtype=torch.float64)
    batch = r.warp_canon_depth(d, v)
    batch_img = r.render_view(tex, d, v, image_size=20)
    for i in range(3):
        assert torch.equal(batch[i], r.warp_canon_depth(d[i:i + 1], v[i:i + 1])[0])
        assert torch.allclose(batch_img[i], r.render_view(tex[i:i + 1], d[i:i + 1], v[i:i + 1], image_size=20)[0])


def test_chunking_does_not_change_result():
    r = Renderer(image_size=S)
    d = _surfaces(r)["step"].unsqueeze(0).repeat(2, 1, 1)
    v = torch.tensor([[0.0, 0.5, 0.1, 0, 0, 0], [0.2, -0.4, 0, 0, 0, 0]], dtype=torch.float64)
    pts = camera.transform_points(r.depth_to_points(d).view(2, -1, 3), v)
    screen = torch.cat([camera.project(pts, r.K(S, like=pts)), pts[..., 2:]], -1)
    a = rasterize(screen, grid_faces(S, S), (S, S))
    b = rasterize(screen, grid_faces(S, S), (S, S), chunk_size=7)
    assert torch.equal(a.pix_to_face, b.pix_to_face)
    assert torch.equal(a.zbuf, b.zbuf)


def test_general_mesh_nearest_face_and_per_batch_faces():
    # Two overlapping screen-filling triangles at different depths; the nearer one wins.
    verts = torch.tensor([[[-5.0, -5, 2.0], [20, -5, 2.0], [-5, 20, 2.0],
                           [-5.0, -5, 1.0], [20, -5, 1.0], [-5, 20, 1.0]]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, (8, 8))
    assert torch.all(frags.pix_to_face[frags.mask] == 1)
    assert torch.allclose(frags.zbuf[frags.mask], torch.tensor(1.0))
    frags_b = rasterize(verts, faces.unsqueeze(0), (8, 8))
    assert torch.equal(frags.pix_to_face, frags_b.pix_to_face)


def test_bad_inputs_have_clear_errors():
    r = Renderer(image_size=S)
    with pytest.raises(ValueError, match="B x H x W"):
        r.warp_canon_depth(torch.ones(S, S), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="B x 6"):
        r.warp_canon_depth(torch.ones(1, S, S), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="backend"):
        Renderer(backend="opengl")
    with pytest.raises(ValueError, match="depth range"):
        Renderer(min_depth=1.2, max_depth=1.1)


@pytest.mark.skipif(p3d_available(), reason="PyTorch3D is installed")
def test_pytorch3d_backend_missing_gives_clear_error():
    with pytest.raises(ImportError, match="PyTorch3D"):
        Renderer(backend="pytorch3d")


@pytest.mark.skipif(not p3d_available(), reason="PyTorch3D not installed")
@pytest.mark.parametrize("view_name", ["identity", "yaw+30", "all6"])
def test_pytorch3d_backend_matches_builtin(view_name):
    """Same coverage (pixel centres on shared edges and vertices included: at the identity view every
    centre is a vertex), the same winning faces away from near-ties, and the same depth."""
    d = _surfaces(Renderer(image_size=S))["sphere_cap"].unsqueeze(0).float()
    v = torch.tensor([_views()[view_name]], dtype=torch.float32)
    a = Renderer(image_size=S).rasterize_view(d, v)
    b = Renderer(image_size=S, backend="pytorch3d").rasterize_view(d, v)
    assert torch.equal(a.mask, b.mask)
    if view_name != "identity":  # at the identity view every centre is a vertex of up to 6 tied faces
        assert (a.pix_to_face == b.pix_to_face).float().mean() > 0.9
    assert torch.allclose(a.zbuf, b.zbuf, atol=1e-5)
    ref = ray_cast_depth(Renderer(image_size=S), d.double(), v.double(), S)
    inner = interior_mask(ref)
    assert torch.allclose(b.zbuf[inner].double(), ref[inner], atol=1e-5)


# ----------------------------------------------------------------------------------- grid fast path
def _screen(r: Renderer, d: torch.Tensor, v: torch.Tensor, size) -> torch.Tensor:
    b, h, w = d.shape
    pts = camera.transform_points(r.depth_to_points(d), v, r.rot_center_depth)
    uv = camera.project(pts, r.K(*size, like=pts))
    return torch.cat([uv, pts[..., 2:]], -1)


@pytest.mark.parametrize("size", [(S, S), (40, 40), (23, 31), (8, 8)])
@pytest.mark.parametrize("surface", ["sphere_cap", "step", "noisy"])
def test_grid_rasterizer_equals_the_general_one(surface, size):
    """rasterize_grid (dense per-cell tests) gives exactly the fragments of rasterize with the grid faces,
    including slivers across depth jumps, upscaled and downscaled outputs and faces behind the camera."""
    from unsup3d.renderer import rasterize_grid

    r = Renderer(image_size=S)
    d = _surfaces(r)[surface].unsqueeze(0).repeat(4, 1, 1)
    deg = math.pi / 180
    v = torch.tensor([[0, 0, 0, 0, 0, 0], [12 * deg, -55 * deg, 8 * deg, 0.02, -0.015, 0.03],
                      [-20 * deg, 70 * deg, -10 * deg, -0.05, 0.05, 0.0], [0, 0, 0, 0, 0, -1.05]],
                     dtype=torch.float64)  # the last one puts part of the mesh behind the near plane
    sc = _screen(r, d, v, size)
    a = rasterize(sc.view(4, -1, 3), grid_faces(S, S), size)
    g = rasterize_grid(sc, size)
    assert torch.equal(a.pix_to_face, g.pix_to_face)
    assert torch.allclose(a.zbuf, g.zbuf, atol=1e-12) and torch.allclose(a.bary_coords, g.bary_coords, atol=1e-12)


def test_grid_rasterizer_gradients_equal_the_general_ones():
    from unsup3d.renderer import rasterize_grid

    r = Renderer(image_size=S)
    d = smooth_depth(2, S)
    v = torch.tensor([[0.1, 0.4, -0.05, 0.01, 0.02, 0.0], [-0.2, -0.3, 0.1, 0.0, -0.01, 0.02]], dtype=torch.float64)
    grads = []
    for grid in (False, True):
        sc = _screen(r, d, v, (S, S)).detach().requires_grad_()
        f = rasterize_grid(sc, (S, S)) if grid else rasterize(sc.view(2, -1, 3), grid_faces(S, S), (S, S))
        (f.zbuf.square().sum() + (f.bary_coords * torch.arange(3.0, dtype=torch.float64)).sum()).backward()
        grads.append(sc.grad)
        assert torch.isfinite(sc.grad).all()
    assert torch.allclose(grads[0], grads[1], atol=1e-10)


def test_grid_face_vertices_match_grid_faces():
    from unsup3d.renderer import grid_face_vertices

    faces = grid_faces(5, 7)
    assert torch.equal(grid_face_vertices(torch.arange(faces.shape[0]), 5, 7), faces)
