"""The export CLI and library (`unsup3d.export`) with a tiny randomly initialised model, on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unsup3d.export import (
    ExportOptions,
    InputError,
    assign_output_names,
    collect_inputs,
    export_images,
    main,
    prepare_image,
)
from unsup3d.files.depth_encoding import depth_to_uint16
from unsup3d.model import Unsup3D

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "photos"
KEYS = REPO.parent / "shared" / "reference" / "original_checkpoint_keys.json"
needs_photos = pytest.mark.skipif(not (PHOTOS / "human_face").is_dir(), reason="shared/photos not available")

S = 64
MAP_FILES = ("depth.png", "depth.npy", "normal.png", "albedo.png", "shading.png", "canonical_image.png",
             "input.png", "params.json")
MESH_FILES = ("mesh.obj", "mesh.mtl", "mesh.png", "mesh.glb")


def _photo(kind: str, name: str) -> Path:
    return PHOTOS / kind / name


def _pattern(h: int, w: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([i * 255 // max(h - 1, 1), j * 255 // max(w - 1, 1), (i + j) % 256], -1).astype(np.uint8)


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args] + ["--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_temp_left(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def _load_mesh(path: Path):
    import trimesh

    loaded = trimesh.load(path, process=False, maintain_order=True)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


# ------------------------------------------------------------------------------------------ main run
@needs_photos
def test_export_shared_photos(tiny, tmp_path, capsys):
    model, ckpt = tiny
    photos = [_photo("human_face", "001_face.png"), _photo("human_face", "002_face.png"),
              _photo("cat_face", "001_cat.png"), _photo("cat_face", "002_cat.png")]
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "-c", ckpt, "-o", out, *photos, "--formats", "obj,glb,ply",
                             "--texture-size", 96, "--posed", "--batch-size", 3)
    assert code == 0, err
    assert "4 ok, 0 failed" in stdout
    nv, nf = S * S, 2 * (S - 1) * (S - 1)
    for photo in photos:
        d = out / photo.stem
        names = {p.name for p in d.iterdir()}
        assert set(MAP_FILES + MESH_FILES + ("mesh.ply", "mesh_posed.obj", "mesh_posed.glb", "mesh_posed.ply")) <= names
        for fmt in ("mesh.obj", "mesh.glb", "mesh_posed.obj", "mesh_posed.glb"):
            mesh = _load_mesh(d / fmt)
            assert mesh.vertices.shape == (nv, 3) and mesh.faces.shape == (nf, 3), fmt
            uv = np.asarray(mesh.visual.uv)
            assert uv.shape == (nv, 2) and uv.min() >= 0 and uv.max() <= 1, fmt
            tex = mesh.visual.material.image if hasattr(mesh.visual.material, "image") else \
                mesh.visual.material.baseColorTexture
            assert tex.size == (96, 96), fmt
        ply = _load_mesh(d / "mesh.ply")
        assert ply.vertices.shape == (nv, 3) and ply.visual.vertex_colors.shape[0] == nv
        with Image.open(d / "mesh.png") as im:
            assert im.size == (96, 96)
        # the canonical mesh is upright (first image row on top) and its faces point at the viewer (+z)
        canon = _load_mesh(d / "mesh.obj")
        v = np.asarray(canon.vertices).reshape(S, S, 3)
        assert v[0, :, 1].mean() > v[-1, :, 1].mean() and v[:, -1, 0].mean() > v[:, 0, 0].mean()
        area_normal = (canon.face_normals * canon.area_faces[:, None]).sum(0)  # projected areas
        assert area_normal[2] > 5 * np.abs(area_normal[:2]).max()
        # depth.npy is the model's canonical depth for the crop it saw
        depth = np.load(d / "depth.npy")
        x = torch.from_numpy(np.array(prepare_image(photo, S))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            ref = model(x).canon_depth[0].numpy()
        assert depth.dtype == np.float32 and depth.shape == (S, S)
        np.testing.assert_allclose(depth, ref, atol=1e-5)
        with Image.open(d / "depth.png") as im:
            assert im.mode.startswith("I") and im.size == (S, S)
            assert np.array_equal(np.asarray(im).astype(np.uint16), depth_to_uint16(depth, 0.9, 1.1))
        with Image.open(d / "input.png") as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), prepare_image(photo, S))
        params = json.loads((d / "params.json").read_text())
        assert set(params["view"]) >= {"rx_deg", "ry_deg", "rz_deg", "rx_rad", "tx", "ty", "tz"}
        assert len(params["light"]["direction"]) == 3 and params["checkpoint"] == str(ckpt.resolve())
        assert params["camera"]["fov_deg"] == 10.0 and params["mesh"]["vertices"] == nv
        assert params["input"]["path"] == str(photo.resolve()) and params["options"]["posed"] is True
        assert set(params["files"]) == names
    assert _no_temp_left(out)


@needs_photos
def test_albedo_texture_and_crop_border(tiny, tmp_path, capsys):
    _, ckpt = tiny
    out = tmp_path / "out"
    code, _, err = _run(capsys, "-c", ckpt, "-o", out, _photo("human_face", "003_face.png"),
                        "--texture", "albedo", "--crop-border", 2, "--formats", "obj")
    assert code == 0, err
    d = out / "003_face"
    assert not (d / "mesh.glb").exists() and (d / "mesh.obj").exists()
    mesh = _load_mesh(d / "mesh.obj")
    h = S - 4
    assert mesh.vertices.shape == (h * h, 3) and mesh.faces.shape == (2 * (h - 1) ** 2, 3)
    with Image.open(d / "mesh.png") as a, Image.open(d / "albedo.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------------------- checkpoints
def test_original_format_checkpoint(tmp_path, capsys):
    shapes = json.loads(KEYS.read_text()) if KEYS.is_file() else {
        n: {k: list(t.shape) for k, t in sd.items()} for n, sd in Unsup3D(lam_perc=0).original_state_dicts().items()
    }
    g = torch.Generator().manual_seed(0)
    ckpt = {
        net: {k: (torch.ones(s) if k.endswith("weight") else torch.zeros(s)) if len(s) == 1
              else torch.randn(s, generator=g) * 0.05 for k, s in keys.items()}
        for net, keys in shapes.items()
    }
    path = tmp_path / "checkpoint030.pth"
    torch.save(ckpt, path)
    img = tmp_path / "face.png"
    Image.fromarray(_pattern(80, 100)).save(img)
    code, _, err = _run(capsys, "--checkpoint", path, "--output", tmp_path / "out", img, "--formats", "glb")
    assert code == 0, err
    assert np.isfinite(np.load(tmp_path / "out" / "face" / "depth.npy")).all()
    assert _load_mesh(tmp_path / "out" / "face" / "mesh.glb").vertices.shape == (64 * 64, 3)


def test_bad_checkpoints(tiny, tmp_path, capsys):
    model, _ = tiny
    img = tmp_path / "a.png"
    Image.fromarray(_pattern(64, 64)).save(img)
    fake = tmp_path / "fake.ckpt"
    fake.write_text("not a checkpoint")
    code, _, err = _run(capsys, "-c", fake, "-o", tmp_path / "o1", img)
    assert code == 2 and "not a readable PyTorch checkpoint" in err and "fake.ckpt" in err
    code, _, err = _run(capsys, "-c", tmp_path / "missing.ckpt", "-o", tmp_path / "o1", img)
    assert code == 2 and "checkpoint not found" in err
    # a checkpoint holding arbitrary objects is refused unless trusted
    import argparse

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "extra": argparse.Namespace(a=1)}, pickled)
    code, _, err = _run(capsys, "-c", pickled, "-o", tmp_path / "o2", img)
    assert code == 2 and "--trust-checkpoint" in err and not (tmp_path / "o2" / "a").exists()
    code, _, err = _run(capsys, "-c", pickled, "-o", tmp_path / "o2", img, "--trust-checkpoint", "--formats", "ply")
    assert code == 0, err


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_each_reported_and_good_ones_succeed(tiny, tmp_path, capsys):
    _, ckpt = tiny
    src = tmp_path / "in"
    src.mkdir()
    (src / "text.jpg").write_text("this is not an image\n")
    buf = src / "full.png"
    Image.fromarray(_pattern(64, 64)).save(buf)
    (src / "truncated.png").write_bytes(buf.read_bytes()[: len(buf.read_bytes()) // 2])
    buf.unlink()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(src / "one_pixel.png")
    Image.fromarray(np.zeros((50, 50), np.uint8)).resize((5000, 5000)).save(src / "huge.jpg", quality=50)
    rgba = np.dstack([_pattern(70, 70), np.full((70, 70), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(src / "gray16.png")
    good = src / "good.png"
    Image.fromarray(_pattern(90, 64)).save(good)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "-c", ckpt, "-o", out, src, tmp_path / "missing.png", "--formats", "obj")
    assert code == 1
    report = stdout + err
    assert "4 ok, 4 failed" in report
    assert "text.jpg" in report and "not an image file" in report
    assert "truncated.png" in report and "truncated or corrupt" in report
    assert "one_pixel.png" in report and "too small (1x1" in report
    assert "missing.png" in report and "input not found" in report
    for name in ("good", "huge", "rgba", "gray16"):
        assert (out / name / "params.json").is_file(), name
    for name in ("text", "truncated", "one_pixel"):
        assert not (out / name).exists()
    with Image.open(out / "rgba" / "input.png") as im:  # composited on white: 50% of the pattern + 50% white
        assert np.asarray(im).min() >= 126
    assert _no_temp_left(out)


def test_unwritable_output_folder(tiny, tmp_path, capsys):
    _, ckpt = tiny
    img = tmp_path / "a.png"
    Image.fromarray(_pattern(64, 64)).save(img)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = _run(capsys, "-c", ckpt, "-o", blocker / "out", img)
    assert code == 2 and "cannot create output folder" in err
    code, _, err = _run(capsys, "-c", ckpt, "-o", blocker, img)
    assert code == 2 and "is not a folder" in err
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            code, _, err = _run(capsys, "-c", ckpt, "-o", locked, img)
            assert code == 2 and "not writable" in err
        finally:
            locked.chmod(0o700)


@needs_photos
def test_detect_face_reports_missing_face_and_continues(tiny, tmp_path, capsys):
    _, ckpt = tiny
    flat = tmp_path / "no_face.png"
    Image.fromarray(_pattern(200, 300)).save(flat)
    face = _photo("human_face", "001_face.png")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "-c", ckpt, "-o", out, flat, face, "--detect-face", "--formats", "obj")
    assert code == 1
    assert "no_face.png" in err and "no human face detected" in err and "1 ok, 1 failed" in stdout + err
    params = json.loads((out / "001_face" / "params.json").read_text())
    assert params["input"]["face_detection"] is True and len(params["input"]["face_box"]) == 4
    assert not (out / "no_face").exists()


# ------------------------------------------------------------------------------------ batch behaviour
def test_skip_existing_overwrite_and_name_clashes(tiny, tmp_path, capsys):
    _, ckpt = tiny
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(_pattern(64, 64)).save(tmp_path / sub / "same.png")
    out = tmp_path / "out"
    args = ["-c", ckpt, "-o", out, tmp_path / "a" / "same.png", tmp_path / "b" / "same.png", "--formats", "obj"]
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    p1, p2 = out / "same" / "params.json", out / "same_2" / "params.json"
    assert json.loads(p2.read_text())["input"]["path"] == str((tmp_path / "b" / "same.png").resolve())
    before = p1.stat().st_mtime_ns
    code, stdout, err = _run(capsys, *args)
    assert code == 0 and "0 ok, 0 failed, 2 skipped" in stdout and "--overwrite" in err
    assert p1.stat().st_mtime_ns == before
    code, stdout, _ = _run(capsys, *args, "--overwrite")
    assert code == 0 and "2 ok" in stdout and p1.stat().st_mtime_ns != before
    assert _no_temp_left(out)


def test_interrupt_leaves_no_half_folder(tiny, tmp_path, capsys, monkeypatch):
    _, ckpt = tiny
    img = tmp_path / "a.png"
    Image.fromarray(_pattern(64, 64)).save(img)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("unsup3d.export.item.depth_to_uint16", boom)  # after the meshes were written
    out = tmp_path / "out"
    code, _, err = _run(capsys, "-c", ckpt, "-o", out, img)
    assert code == 130 and "interrupted" in err
    assert list(out.iterdir()) == []


def test_collect_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for p in ("d/x.png", "d/sub/y.JPG", "d/notes.txt", "d/.hidden/z.png", "w.webp"):
        (tmp_path / p).write_bytes(b"")
    got = collect_inputs([tmp_path / "d"])
    assert [p.name for p in got] == ["y.JPG", "x.png"] or [p.name for p in got] == ["x.png", "y.JPG"]
    assert {p.name for p in collect_inputs([str(tmp_path / "**" / "*.png")])} == {"x.png"}
    # explicit files are kept whatever their extension; repeats are dropped
    got = collect_inputs([tmp_path / "d" / "notes.txt", tmp_path / "w.webp", tmp_path / "w.webp"])
    assert [p.name for p in got] == ["notes.txt", "w.webp"]
    with pytest.raises(InputError, match="input not found"):
        collect_inputs([tmp_path / "nope.png"])
    errors: list = []
    assert collect_inputs([tmp_path / "nope.png", str(tmp_path / "*.gif"), tmp_path / "w.webp"], errors)
    assert [e[0] for e in errors] == [str(tmp_path / "nope.png"), str(tmp_path / "*.gif")]
    assert "no image files match" in errors[1][1]
    # the output folder is never picked up by folder expansion
    assert collect_inputs([tmp_path / "d"], exclude=tmp_path / "d" / "sub")[0].name == "x.png"
    names = assign_output_names([Path("a/face.png"), Path("b/face.jpg"), Path("face_2.png"), Path("..png")])
    assert names == ["face", "face_3", "face_2", "image"]


def test_options_validation():
    with pytest.raises(ValueError, match="unknown mesh format"):
        ExportOptions(formats=("obj", "fbx"))
    assert ExportOptions(gif=True).video is True
    with pytest.raises(ValueError, match="unknown video"):
        ExportOptions(videos=("turntable", "spin"))
    assert ExportOptions(videos=("relight", "relight")).to_json()["videos"] == ["relight"]


# ------------------------------------------------------------------------------------------- videos
def test_videos_mp4_and_gif(tiny, tmp_path, capsys):
    import imageio.v3 as iio

    _, ckpt = tiny
    img = tmp_path / "a.png"
    Image.fromarray(_pattern(64, 64)).save(img)
    args = ["-c", ckpt, img, "--formats", "glb", "--num-frames", 3, "--output-size", 32]
    code, _, err = _run(capsys, *args, "-o", tmp_path / "mp4", "--video")
    assert code == 0, err
    for name in ("turntable", "turntable_shape", "relight"):
        frames = iio.imread(tmp_path / "mp4" / "a" / f"{name}.mp4")
        assert frames.shape == (3, 32, 32, 3), name
    code, _, err = _run(capsys, *args, "-o", tmp_path / "gif", "--gif")
    assert code == 0, err
    for name in ("turntable", "turntable_shape", "relight"):
        with Image.open(tmp_path / "gif" / "a" / f"{name}.gif") as im:
            assert im.n_frames == 3 and im.size == (32, 32)
    params = json.loads((tmp_path / "gif" / "a" / "params.json").read_text())
    assert "relight.gif" in params["files"]
    # only the videos asked for
    model, _ = tiny
    summary = export_images(model, [img], tmp_path / "one", ExportOptions(
        formats=("glb",), video=True, videos=("turntable",), num_frames=2, output_size=16, progress=False))
    assert [r.status for r in summary.results] == ["ok"]
    assert sorted(p.name for p in (tmp_path / "one" / "a").glob("*.mp4")) == ["turntable.mp4"]


def test_wandb_offline(tiny, tmp_path, capsys, monkeypatch):
    _, ckpt = tiny
    for k in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    img = tmp_path / "a.png"
    Image.fromarray(_pattern(64, 64)).save(img)
    code, _, err = _run(capsys, "-c", ckpt, "-o", tmp_path / "out", img, "--wandb", "--formats", "glb")
    assert code == 0, err
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and "warning" not in err.lower()
    media = runs[0] / "files" / "media"
    assert list(media.rglob("*.glb")) and len(list(media.rglob("*.png"))) >= 6


def test_script_help():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "export.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "--checkpoint" in proc.stdout and "--detect-face" in proc.stdout


def test_posed_vertices_follow_the_view(tiny):
    from unsup3d.files.mesh import grid_mesh, grid_vertices

    model, _ = tiny
    r = model.core.renderer
    depth = torch.from_numpy(np.random.default_rng(1).uniform(0.95, 1.05, (1, S, S)).astype(np.float32))

    def posed(view):
        return grid_vertices(r, depth, torch.tensor([view], dtype=torch.float32))[0].numpy()

    still = posed([0.0] * 6)
    plain, _, _ = grid_mesh(depth[0], 10.0, center=False)
    np.testing.assert_allclose(still, plain + np.float32([0, 0, 1]), atol=1e-5)
    # a pure rotation turns the mesh about the rotation centre (the origin of the posed frame)
    turned = posed([0.1, 0.5, -0.2, 0, 0, 0])
    np.testing.assert_allclose(np.linalg.norm(turned, axis=1), np.linalg.norm(still, axis=1), atol=1e-5)
    assert np.abs(turned - still).max() > 0.01
    moved = posed([0, 0, 0, 0.05, 0.02, 0])
    np.testing.assert_allclose(moved - still, np.broadcast_to([0.05, -0.02, 0], still.shape), atol=1e-5)
    # the posed vertices are the renderer's own warped points, in the export axes
    view = torch.tensor([[0.1, 0.5, -0.2, 0.03, -0.01, 0.0]])
    pts = r.view_points(depth, view)[0].reshape(-1, 3).numpy()
    np.testing.assert_allclose(posed(view[0].tolist()), (pts - [0, 0, 1]) * [1, -1, -1], atol=1e-6)


def test_exported_faces_are_the_rasterized_faces(tiny, tmp_path):
    """The OBJ's faces are exactly the renderer's grid faces (the original's triangulation), in order;
    with a crop border, they are the same triangulation of the trimmed grid."""
    from unsup3d.renderer import grid_faces

    model, _ = tiny
    photo = tmp_path / "face.png"
    Image.fromarray(_pattern(S, S)).save(photo)
    for border in (0, 2):
        out = tmp_path / f"b{border}"
        summary = export_images(model, [photo], out, ExportOptions(progress=False, crop_border=border,
                                                                   formats=("obj",)))
        assert not summary.failed, summary.report()
        obj = next(out.rglob("mesh.obj"))
        faces = [[int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
                 for line in obj.read_text().splitlines() if line.startswith("f ")]
        n = S - 2 * border
        assert np.array_equal(np.array(faces), grid_faces(n, n).numpy())
        if border == 0:
            assert np.array_equal(np.array(faces), grid_faces(S, S).numpy())


def test_bf16_export_is_close_to_fp32(tiny, tmp_path):
    """--precision bf16 runs the networks under bf16 autocast; depth and meshes stay fp32 and close."""
    model, _ = tiny
    photo = tmp_path / "face.png"
    Image.fromarray(_pattern(S, S)).save(photo)
    depths = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        summary = export_images(model, [photo], out, ExportOptions(progress=False, precision=precision))
        assert not summary.failed, summary.report()
        depth = np.load(next(out.rglob("depth.npy")))
        assert depth.dtype == np.float32
        depths[precision] = depth
    diff = np.abs(depths["fp32"] - depths["bf16"]).max()
    assert 0 < diff < 0.02, diff
    with pytest.raises(ValueError, match="precision"):
        ExportOptions(precision="fp8")
