"""Grid mesh construction and OBJ / GLB / PLY export round trips through trimesh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from unsup3d.files.mesh import (
    glb_bytes,
    grid_faces,
    grid_mesh,
    grid_uvs,
    grid_vertex_colors,
    obj_text,
    to_export_frame,
    write_glb,
    write_obj,
    write_ply,
)
from unsup3d.renderer import Renderer
from unsup3d.renderer import grid_faces as render_grid_faces

H, W = 16, 20


def _depth(h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    return (1.0 + 0.05 * rng.standard_normal((h, w))).astype(np.float32)


def _texture(h=H, w=W):
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([i * 255 // (h - 1), j * 255 // (w - 1), ((i * 7 + j * 13) % 256)], -1).astype(np.uint8)


def _load(path):
    return trimesh.load(path, force="mesh", process=False)


# ------------------------------------------------------------------------------------- geometry


def test_counts_and_dtypes():
    v, f, uv = grid_mesh(_depth())
    assert v.shape == (H * W, 3) and v.dtype == np.float32
    assert f.shape == (2 * (H - 1) * (W - 1), 3) and f.dtype == np.int64
    assert uv.shape == (H * W, 2) and uv.dtype == np.float32
    assert f.min() == 0 and f.max() == H * W - 1
    assert (uv > 0).all() and (uv < 1).all()


def test_crop_border_counts_and_uvs():
    b = 2
    v, f, uv = grid_mesh(_depth(), crop_border=b)
    h, w = H - 2 * b, W - 2 * b
    assert v.shape == (h * w, 3) and f.shape == (2 * (h - 1) * (w - 1), 3) and uv.shape == (h * w, 2)
    # UVs keep addressing the full (uncropped) texture at the same texels
    full = grid_uvs(H, W).reshape(H, W, 2)[b : H - b, b : W - b].reshape(-1, 2)
    assert np.allclose(uv, full)
    with pytest.raises(ValueError, match="crop_border"):
        grid_mesh(_depth(), crop_border=8)


def test_uvs_match_pixel_positions():
    uv = grid_uvs(H, W).reshape(H, W, 2)
    assert np.allclose(uv[0, 0], [0.5 / W, 1 - 0.5 / H])  # top-left pixel: small u, large v (v up)
    assert np.allclose(uv[-1, -1], [1 - 0.5 / W, 0.5 / H])
    assert (np.diff(uv[..., 0], axis=1) > 0).all() and (np.diff(uv[..., 1], axis=0) < 0).all()


def test_vertices_follow_camera_lift_and_export_frame():
    d = _depth()
    pts = Renderer(image_size=W, fov=10.0).depth_to_points(torch.from_numpy(d)[None])[0].reshape(-1, 3).numpy()
    v, _, _ = grid_mesh(d, fov=10.0, center=False)
    assert np.allclose(v, pts * np.array([1, -1, -1], np.float32), atol=1e-6)
    vc, _, _ = grid_mesh(torch.from_numpy(d)[None], fov=10.0, center=True)
    assert np.allclose(vc[:, :2].mean(0), 0, atol=1e-6)
    assert np.allclose(vc[:, 2], -(pts[:, 2] - 1.0), atol=1e-6)
    # the first row of the image is at the top (y up) and the first column on the left
    grid = vc.reshape(H, W, 3)
    assert (grid[0, :, 1] > grid[-1, :, 1]).all() and (grid[:, 0, 0] < grid[:, -1, 0]).all()
    # nearer pixels (smaller depth) come towards the viewer (+z)
    assert np.argmax(vc[:, 2]) == np.argmin(d)


def test_export_frame_is_a_rotation():
    p = np.random.default_rng(1).standard_normal((5, 3))
    q = to_export_frame(torch.from_numpy(p)[None])[0].numpy()
    assert np.allclose(q, p * [1, -1, -1], atol=1e-6)
    o = np.array([0.1, -0.2, 1.0])
    q = to_export_frame(torch.from_numpy(p)[None], torch.from_numpy(o))[0].numpy()
    assert np.allclose(q, (p - o) * [1, -1, -1], atol=1e-6)


def test_faces_point_to_viewer_for_flat_depth():
    v, f, _ = grid_mesh(np.ones((H, W), np.float32))
    n = trimesh.Trimesh(v, f, process=False).face_normals
    assert np.allclose(n, [0, 0, 1], atol=1e-5)
    assert np.allclose(v[:, 2], 0, atol=1e-6)  # centred on the rotation depth 1.0


def test_faces_consistently_oriented_on_bumpy_depth():
    v, f, _ = grid_mesh(_depth(seed=3))
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_winding_consistent
    assert (m.face_normals[:, 2] > 0).mean() > 0.95


def test_grid_faces_small():
    # the original's get_face_idx: (tl, bl, tr) of every cell, then (tr, bl, br) of every cell
    f = grid_faces(2, 3)
    assert f.tolist() == [[0, 3, 1], [1, 4, 2], [1, 3, 4], [2, 4, 5]]
    assert np.array_equal(grid_faces(5, 7), render_grid_faces(5, 7).numpy())


def test_vertex_colors_follow_grid():
    tex = _texture()
    cols = grid_vertex_colors(tex, crop_border=1)
    assert cols.shape == ((H - 2) * (W - 2), 3) and cols.dtype == np.uint8
    assert np.array_equal(cols.reshape(H - 2, W - 2, 3), tex[1:-1, 1:-1])
    chw = torch.from_numpy(tex).permute(2, 0, 1).float() / 255.0
    assert np.array_equal(grid_vertex_colors(chw), tex.reshape(-1, 3))


# ---------------------------------------------------------------------------------------- writers


def _check_textured(m, v, f, uv):
    assert m.vertices.shape == v.shape and m.faces.shape == f.shape
    assert np.array_equal(m.faces, f)
    assert np.allclose(m.vertices, v, atol=1e-5)
    assert np.allclose(m.visual.uv, uv, atol=1e-5)
    assert (m.visual.uv >= 0).all() and (m.visual.uv <= 1).all()


def _sampled_colors_match_texture(m, tex, b=0):
    """trimesh samples the texture at each vertex's UV: must give that vertex's own pixel."""
    cols = m.visual.to_color().vertex_colors[:, :3].astype(int)
    expect = tex[b : tex.shape[0] - b, b : tex.shape[1] - b].reshape(-1, 3).astype(int)
    assert np.abs(cols - expect).max() <= 2


def test_write_obj_roundtrip(tmp_path):
    v, f, uv = grid_mesh(_depth(), crop_border=2)
    tex = _texture()
    obj, mtl, png = write_obj(tmp_path / "out" / "face.obj", v, f, uv, tex)
    assert (obj.name, mtl.name, png.name) == ("face.obj", "face.mtl", "face.png")
    text = obj.read_text()
    assert "mtllib face.mtl" in text and "usemtl " in text
    assert text.count("\nv ") == len(v) and text.count("\nvt ") == len(v) and text.count("\nf ") == len(f)
    assert "\nf 1/1 " in text  # 1-based v/vt indices
    assert "map_Kd face.png" in mtl.read_text()
    m = _load(obj)
    _check_textured(m, v, f, uv)
    assert m.visual.material.image.size == (W, H)
    _sampled_colors_match_texture(m, tex, b=2)
    assert sorted(p.name for p in obj.parent.iterdir()) == ["face.mtl", "face.obj", "face.png"]


def _obj_text_savetxt(vertices, faces, uvs, mtl_name, material):
    """The OBJ text as first written with ``numpy.savetxt`` (the reference ``obj_text`` must match)."""
    import io

    def rows(prefix, arr, fmt):
        buf = io.StringIO()
        np.savetxt(buf, arr, fmt=f"{prefix} {fmt}")
        return buf.getvalue()

    f1 = faces.astype(np.int64) + 1
    return (
        f"# unsup3d grid mesh: {len(vertices)} vertices, {len(faces)} faces\nmtllib {mtl_name}\n"
        + rows("v", vertices, "%.6f %.6f %.6f")
        + rows("vt", uvs, "%.6f %.6f")
        + f"usemtl {material}\n"
        + rows("f", np.repeat(f1, 2, axis=1), "%d/%d %d/%d %d/%d")
    )


def test_obj_text_matches_savetxt():
    v, f, uv = grid_mesh(_depth(9, 7), crop_border=1)
    assert obj_text(v, f, uv, "a.mtl", "material_0") == _obj_text_savetxt(v, f, uv, "a.mtl", "material_0")
    assert obj_text(v, f, uv, "a.mtl") == _obj_text_savetxt(v, f, uv, "a.mtl", "material_0")
    # the cached uv/face lines are reused only for equal uvs and faces
    v2 = v * 2
    assert obj_text(v2, f, uv, "b.mtl", "m") == _obj_text_savetxt(v2, f, uv, "b.mtl", "m")
    f2, uv2 = f[:, ::-1].copy(), 1 - uv
    assert obj_text(v, f2, uv2, "a.mtl", "material_0") == _obj_text_savetxt(v, f2, uv2, "a.mtl", "material_0")
    # float64 / int32 inputs, negative zeros, large values and NaN format like numpy.savetxt
    v3 = v.astype(np.float64)
    v3[0] = (-0.0, 1e7, np.nan)
    f3 = f.astype(np.int32)
    assert obj_text(v3, f3, uv2, "c.mtl", "x") == _obj_text_savetxt(v3, f3, uv2, "c.mtl", "x")


def test_write_obj_texture_size(tmp_path):
    v, f, uv = grid_mesh(_depth())
    chw = torch.rand(3, H, W)
    write_obj(tmp_path / "m.obj", v, f, uv, chw, texture_size=64)
    m = _load(tmp_path / "m.obj")
    assert m.visual.material.image.size == (64, 64)
    write_obj(tmp_path / "r.obj", v, f, uv, chw, texture_size=(40, 32))
    assert _load(tmp_path / "r.obj").visual.material.image.size == (40, 32)


def test_write_glb_roundtrip(tmp_path):
    v, f, uv = grid_mesh(_depth(), crop_border=1)
    tex = _texture()
    path = write_glb(tmp_path / "face.glb", v, f, uv, tex)
    assert path.read_bytes()[:4] == b"glTF"
    m = _load(path)
    _check_textured(m, v, f, uv)
    assert m.visual.material.baseColorTexture.size == (W, H)
    _sampled_colors_match_texture(m, tex, b=1)
    write_glb(tmp_path / "big.glb", v, f, uv, tex, texture_size=128)
    assert _load(tmp_path / "big.glb").visual.material.baseColorTexture.size == (128, 128)


def test_glb_bytes_matches_write_glb(tmp_path):
    v, f, uv = grid_mesh(_depth())
    tex = _texture()
    write_glb(tmp_path / "ref.glb", v, f, uv, tex, 32)
    data = glb_bytes(v, f, uv, tex, 32)
    assert data == (tmp_path / "ref.glb").read_bytes()
    (tmp_path / "fast.glb").write_bytes(data)
    a, b = _load(tmp_path / "ref.glb"), _load(tmp_path / "fast.glb")
    for attr in ("vertices", "faces"):
        assert np.array_equal(getattr(a, attr), getattr(b, attr))
    assert np.array_equal(a.visual.uv, b.visual.uv)
    assert np.array_equal(np.asarray(a.visual.material.baseColorTexture),
                          np.asarray(b.visual.material.baseColorTexture))


def test_write_obj_shared_material_and_no_fsync(tmp_path, monkeypatch):
    v, f, uv = grid_mesh(_depth(), crop_border=2)
    tex = _texture()
    write_obj(tmp_path / "mesh.obj", v, f, uv, tex)
    synced = []
    monkeypatch.setattr("unsup3d.files.atomic.os.fsync", lambda fd: synced.append(fd))
    paths = write_obj(tmp_path / "posed.obj", v * 2, f, uv, None, material_file="mesh.mtl", durable=False)
    write_glb(tmp_path / "posed.glb", v, f, uv, tex, durable=False)
    write_ply(tmp_path / "posed.ply", v, f, grid_vertex_colors(tex, 2), durable=False)
    assert synced == []
    assert [p.name for p in paths] == ["posed.obj"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mesh.mtl", "mesh.obj", "mesh.png", "posed.glb", "posed.obj", "posed.ply"]
    assert "mtllib mesh.mtl" in (tmp_path / "posed.obj").read_text()
    m = _load(tmp_path / "posed.obj")
    _check_textured(m, v * 2, f, uv)
    _sampled_colors_match_texture(m, tex, b=2)


def test_write_ply_vertex_colors(tmp_path):
    v, f, _ = grid_mesh(_depth(), crop_border=2)
    cols = grid_vertex_colors(_texture(), crop_border=2)
    path = write_ply(tmp_path / "face.ply", v, f, cols)
    m = _load(path)
    assert m.vertices.shape == v.shape and np.array_equal(m.faces, f)
    assert np.array_equal(m.visual.vertex_colors[:, :3], cols)
    write_ply(tmp_path / "float.ply", v, f, cols.astype(np.float32) / 255.0)
    assert np.array_equal(_load(tmp_path / "float.ply").visual.vertex_colors[:, :3], cols)
    with pytest.raises(ValueError, match="vertex_colors"):
        write_ply(tmp_path / "bad.ply", v, f, cols[:-1])


def test_failed_write_keeps_existing_outputs(tmp_path, monkeypatch):
    v, f, uv = grid_mesh(_depth())
    tex = _texture()
    obj = tmp_path / "face.obj"
    write_obj(obj, v, f, uv, tex)
    write_glb(tmp_path / "face.glb", v, f, uv, tex)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    import unsup3d.files.atomic as io_mod

    real_replace = io_mod.os.replace

    def replace_failing_for_obj(src, dst):
        if str(dst).endswith(".obj"):  # the OBJ text is fully written + fsynced, then the move "fails"
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", replace_failing_for_obj)
    with pytest.raises(OSError, match="disk full"):
        write_obj(obj, v * 2, f, uv, tex)
    monkeypatch.undo()
    assert obj.read_bytes() == before["face.obj"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}  # texture/material were replaced

    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(trimesh.Trimesh, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        write_glb(tmp_path / "face.glb", v * 2, f, uv, tex)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, no temp leftovers


def test_bad_shapes_rejected(tmp_path):
    v, f, uv = grid_mesh(_depth())
    with pytest.raises(ValueError, match="uvs"):
        write_glb(tmp_path / "x.glb", v, f, uv[:-1], _texture())
    with pytest.raises(ValueError, match="out of range"):
        write_obj(tmp_path / "x.obj", v, f + len(v), uv, _texture())
    with pytest.raises(ValueError, match="H x W"):
        grid_mesh(np.ones((2, 3, 4, 5)))
    assert not any(tmp_path.iterdir())
