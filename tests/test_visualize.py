"""Visualisation tests: grids, factor panels, symmetry line, turntables, relighting."""

import numpy as np
import pytest
import torch

from unsup3d.model import Unsup3D
from unsup3d.visualize import (
    confidence_to_image,
    depth_to_image,
    factor_panels,
    frames_to_grids,
    make_grid,
    normal_shaded,
    normal_to_image,
    relight_frames,
    relight_images,
    render_views,
    symmetry_line,
    to_uint8,
    turntable_frames,
    yaw_views,
)

S = 32
B = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Unsup3D(image_size=S, width=0.125, lam_perc=0)
    return m.eval()


@pytest.fixture(scope="module")
def factors(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.rand(B, 3, S, S))


def _grid_size(n, h, w, nrow=None, padding=2):
    import math

    cols = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    return rows * (h + padding) + padding, cols * (w + padding) + padding


def test_make_grid_layout():
    imgs = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 2, 4, 6) + 1
    g = make_grid(imgs, padding=2, pad_value=-1)
    # 5 images -> 3 per row, 2 rows
    assert g.shape == (2, 2 * 6 + 2, 3 * 8 + 2)
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = r * 6 + 2, c * 8 + 2
        assert torch.all(g[:, y:y + 4, x:x + 6] == i + 1)
    assert torch.all(g[:, :2] == -1) and torch.all(g[:, :, :2] == -1)
    assert torch.all(g[:, 8:14, 18:24] == -1)  # the empty sixth cell is padding
    g2 = make_grid(imgs, nrow=5, padding=0)
    assert g2.shape == (2, 4, 30)
    assert torch.equal(g2[:, :, 6:12], imgs[1])
    assert make_grid(imgs[0]).shape == (2, 8, 10)


def test_to_uint8():
    x = torch.tensor([0.0, 0.5, 1.0, 2.0, -1.0]).view(1, 1, 5).expand(3, 1, 5)
    a = to_uint8(x)
    assert a.dtype == np.uint8 and a.shape == (1, 5, 3)
    assert a[0, :, 0].tolist() == [0, 128, 255, 255, 0]
    assert to_uint8(torch.rand(2, 3, 4, 5)).shape == (2, 4, 5, 3)


def test_maps_ranges():
    d = torch.tensor([[[0.9, 1.0, 1.1, 1.3]]])
    img = depth_to_image(d, 0.9, 1.1)
    assert img.shape == (1, 1, 1, 4)
    assert torch.allclose(img.flatten(), torch.tensor([1.0, 0.5, 0.0, 0.0]))  # nearer is brighter
    # the same rule as the depth PNGs
    from unsup3d.files.depth_encoding import depth_to_uint16

    assert np.array_equal(np.round(img.flatten().numpy() * 65535).astype(np.uint16), depth_to_uint16(d[0, 0], 0.9, 1.1))
    n = torch.nn.functional.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    ni = normal_to_image(n)
    assert ni.shape == (2, 3, 4, 5) and ni.min() >= 0 and ni.max() <= 1
    c = confidence_to_image(torch.tensor([0.0, 1.0, 3.0]))
    assert torch.allclose(c, torch.tensor([1.0, 0.5, 0.25]))


def test_factor_panels_shapes(model, factors):
    panels = factor_panels(model, factors, max_items=16)
    h, w = _grid_size(B, S, S)
    hq, wq = _grid_size(B, S // 4, S // 4)
    expected = {
        "input": 3, "input_symline": 3, "canon_albedo": 3, "canon_image": 3, "canon_depth": 1,
        "canon_normal": 3, "canon_diffuse_shading": 1, "recon_image": 3, "recon_image_flip": 3,
        "conf_map_l1": 1, "conf_map_l1_flip": 1, "conf_map_percl": 1, "conf_map_percl_flip": 1,
        "recon_depth": 1, "recon_normal": 3,
    }
    assert set(panels) == set(expected)
    for name, c in expected.items():
        size = (hq, wq) if "percl" in name else (h, w)
        assert panels[name].shape == (c, *size), name
        assert panels[name].min() >= 0 and panels[name].max() <= 1, name
    # max_items limits the grid
    small = factor_panels(model, factors, max_items=1)
    assert small["input"].shape == (3, S + 4, S + 4)


def test_factor_panels_without_flip_and_confidence():
    m = Unsup3D(image_size=S, width=0.125, lam_perc=0, use_flip=False, use_conf_map=False).eval()
    with torch.no_grad():
        f = m(torch.rand(2, 3, S, S))
    panels = factor_panels(m, f)
    assert "recon_image_flip" not in panels
    assert not any(k.startswith("conf_map") for k in panels)


def test_symmetry_line_identity_view(model):
    torch.manual_seed(2)
    x = torch.rand(2, 3, S, S)
    original = model.core.netV.forward
    model.core.netV.forward = lambda inp: torch.zeros(inp.shape[0], 6, dtype=inp.dtype, device=inp.device)
    try:
        with torch.no_grad():
            f = model(x)
    finally:
        model.core.netV.forward = original
    assert torch.all(f.view == 0)
    out = symmetry_line(model, f)
    assert out.shape == (2, 3, S, S)
    cols = [S // 2 - 1, S // 2]
    mask = f.recon_mask[:, :, :, cols]
    green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    expected_line = (0.5 * green + 0.5 * x[:, :, :, cols]) * mask + x[:, :, :, cols] * (1 - mask)
    assert mask.mean() > 0.9
    assert torch.allclose(out[:, :, :, cols], expected_line, atol=1e-5)
    other = [c for c in range(S) if c not in cols]
    assert torch.allclose(out[:, :, :, other], x[:, :, :, other], atol=1e-5)


def test_yaw_views():
    v = yaw_views(5, max_yaw_deg=90, pitch_deg=-6)
    assert v.shape == (5, 6)
    assert torch.allclose(v[:, 1], torch.linspace(-np.pi / 2, np.pi / 2, 5))
    assert torch.allclose(v[:, 0], torch.full((5,), -6 * np.pi / 180))
    assert torch.all(v[:, 2:] == 0)
    assert torch.all(yaw_views(1)[0, 1:] == 0)


def test_turntable_frames(model, factors):
    tex = (factors.canon_image / 2 + 0.5).clamp(0, 1)
    frames = turntable_frames(model.core.renderer, tex, factors.canon_depth, num_frames=5, pitch_deg=0.0,
                              max_batch=4)
    assert frames.shape == (5, B, 3, S, S)
    ref = model.core.renderer.render_view(tex, factors.canon_depth, torch.zeros(B, 6))
    assert torch.allclose(frames[2], ref, atol=1e-6)
    assert not torch.allclose(frames[0], ref)
    big = turntable_frames(model.core.renderer, tex, factors.canon_depth, num_frames=3, image_size=48, background=1.0)
    assert big.shape == (3, B, 3, 48, 48)
    grids = frames_to_grids(big)
    assert grids.shape == (3, 3, *_grid_size(B, 48, 48))


def test_relight_and_shape_textures(model, factors):
    r = model.core.renderer
    frames = relight_frames(r, factors.canon_albedo, factors.canon_depth, factors.light_ambient,
                            factors.light_diffuse, num_frames=6)
    assert frames.shape == (6, B, 3, S, S)
    assert frames.min() >= 0 and frames.max() <= 1
    assert not torch.allclose(frames[0], frames[3])
    viewed = relight_frames(r, factors.canon_albedo, factors.canon_depth, factors.light_ambient,
                            factors.light_diffuse, num_frames=2, view=factors.view, image_size=40)
    assert viewed.shape == (2, B, 3, 40, 40) and viewed.min() >= 0 and viewed.max() <= 1
    # a fronto-parallel plane lit frontally: the model's shading formula
    depth = torch.ones(1, S, S)
    albedo = torch.zeros(1, 3, S, S)
    flat = relight_frames(r, albedo, depth, torch.tensor([0.2]), torch.tensor([0.6]), num_frames=1, radius=0.0)
    assert torch.allclose(flat, torch.full_like(flat, 0.5 * 0.8), atol=1e-5)
    shape = normal_shaded(r, factors.canon_depth)
    assert shape.shape == (B, 3, S, S) and shape.min() >= 0 and shape.max() <= 1
    assert normal_shaded(r, factors.canon_depth, mode="normal").shape == (B, 3, S, S)


def test_render_views_per_item_and_shared(model, factors):
    tex = (factors.canon_image / 2 + 0.5).clamp(0, 1)
    shared = yaw_views(3, pitch_deg=0.0)  # T x 6, the same for every item
    per_item = shared.unsqueeze(1).repeat(1, B, 1)  # T x B x 6
    per_item[:, 1, 1] += 0.3  # item 1 turned further
    a = render_views(model.core.renderer, tex, factors.canon_depth, shared, max_batch=2)
    b = render_views(model.core.renderer, tex, factors.canon_depth, per_item, image_size=S)
    assert a.shape == b.shape == (3, B, 3, S, S)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6) and not torch.allclose(a[:, 1], b[:, 1])
    ref = model.core.renderer.render_view(tex[1:2], factors.canon_depth[1:2], per_item[2, 1:2])
    assert torch.allclose(b[2, 1:2], ref, atol=1e-6)
    with pytest.raises(ValueError, match="views"):
        render_views(model.core.renderer, tex, factors.canon_depth, torch.zeros(3, 2, 6))


def test_relight_images_with_the_models_light_is_its_canonical_image(model, factors):
    r = model.core.renderer
    d = factors.light_direction
    own = d[:, :2] / d[:, 2:]  # (dx, dy) of the unit direction (dx, dy, 1) / norm
    frames = relight_images(r, factors.canon_albedo, factors.canon_depth, factors.light_ambient,
                            factors.light_diffuse, own.unsqueeze(0))  # 1 x B x 2
    assert frames.shape == (1, B, 3, S, S)
    assert torch.allclose(frames[0], (factors.canon_image / 2 + 0.5).clamp(0, 1), atol=1e-5)
    # one light for all items, rendered: the light changes the image; frame 0 of the circle is (radius, 0)
    lit = relight_images(r, factors.canon_albedo, factors.canon_depth, factors.light_ambient,
                         factors.light_diffuse, torch.tensor([[0.8, 0.0], [-0.8, 0.0]]), image_size=40)
    assert lit.shape == (2, B, 3, 40, 40) and not torch.allclose(lit[0], lit[1])
    circle = relight_frames(r, factors.canon_albedo, factors.canon_depth, factors.light_ambient,
                            factors.light_diffuse, num_frames=2, radius=0.8, image_size=40)
    assert torch.allclose(circle[0], lit[0], atol=1e-6)
    with pytest.raises(ValueError, match="light_dxdy"):
        relight_images(r, factors.canon_albedo, factors.canon_depth, factors.light_ambient,
                       factors.light_diffuse, torch.zeros(2, 3))


def test_factor_panels_show_the_background_layer():
    """With the static background layer: the canonical alpha (1 channel) and the background (3) as panels."""
    m = Unsup3D(image_size=S, width=0.125, lam_perc=0, background_size=4).eval()
    with torch.no_grad():
        f = m(torch.rand(2, 3, S, S))
        panels = factor_panels(m, f)
    h, w = _grid_size(2, S, S)
    assert panels["canon_alpha"].shape == (1, h, w) and panels["background"].shape == (3, h, w)
    alpha = f.canon_alpha[0, 0].clamp(0, 1)
    assert torch.allclose(panels["canon_alpha"][0, 2:2 + S, 2:2 + S], alpha)  # the first tile, after the padding
