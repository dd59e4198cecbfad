"""The web demo (`unsup3d.demo`) with a tiny random model, on CPU: the reconstruct function, the page's API
from gradio_client against a served page, and the page in a real headless Chromium.

The gradio tests skip without the ``demo`` extra; the browser test skips without Chromium (Debian's
``chromium`` package; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unsup3d.data.crops import FaceNotFoundError
from unsup3d.demo import (
    Scene,
    demo_export_options,
    posed_view,
    prune_results,
    reconstruct,
    relit_view,
)
from unsup3d.demo.cli import main as demo_main
from unsup3d.export import prepare_image
from unsup3d.files.images import ImageLoadError
from unsup3d.visualize import render_views, to_uint8

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "unsup3d" / "demo" / "examples"
PHOTOS = REPO.parent / "shared" / "photos"
needs_photos = pytest.mark.skipif(not (PHOTOS / "human_face").is_dir(), reason="shared/photos not available")

S = 64
MAPS = ("input.png", "albedo.png", "depth.png", "normal.png", "shading.png", "canonical_image.png")
ZIPPED = {"mesh.obj", "mesh.mtl", "mesh.png", "mesh.glb", "depth.npy", "params.json", *MAPS}
# small videos and views: the tests check the wiring, not the pictures
OPTIONS = dict(num_frames=3, output_size=64)


def _options():
    return demo_export_options(**OPTIONS)


def _load_mesh(path: Path):
    import trimesh

    loaded = trimesh.load(path, process=False, maintain_order=True)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width x height`` and whose data is a few bytes: a decompression bomb's
    shape without its cost (refused from the header, before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    """name -> a file the demo must refuse, with the loader's reason as the name."""
    files = {}
    files["not an image file"] = tmp_path / "notes.png"
    files["not an image file"].write_text("this is text, not a photo")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good)
    files["truncated or corrupt"] = tmp_path / "truncated.png"
    files["truncated or corrupt"].write_bytes(good.read_bytes()[:-40])
    files["too small"] = tmp_path / "one_pixel.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(files["too small"])
    files["too large"] = _png_header_only(tmp_path / "huge.png", 10_000, 10_000)
    return files


# ------------------------------------------------------------------------------------- reconstruct
@needs_photos
@pytest.mark.parametrize("photo, detect_face", [("human_face/001_face.png", True), ("cat_face/001_cat.png", False)])
def test_reconstruct_shared_photos(tiny, tmp_path, photo, detect_face):
    model, _ = tiny
    path = PHOTOS / photo
    rec = reconstruct(model, path, tmp_path, detect_face=detect_face, options=_options(), checkpoint="tiny.ckpt")
    assert rec.folder.parent == tmp_path and rec.name.startswith(path.stem + "-")
    names = {p.name for p in rec.folder.iterdir()}
    assert ZIPPED | {"turntable.mp4", rec.zip.name} == names  # only the turntable video
    assert set(rec.maps) == {m[:-4] for m in MAPS} and all(p.is_file() for p in rec.maps.values())
    assert set(rec.videos) == {"turntable"}
    mesh = _load_mesh(rec.glb)
    assert mesh.vertices.shape == (S * S, 3) and mesh.faces.shape == (2 * (S - 1) ** 2, 3)
    with zipfile.ZipFile(rec.zip) as zf:
        assert {n.split("/", 1)[1] for n in zf.namelist()} == ZIPPED
        assert {n.split("/", 1)[0] for n in zf.namelist()} == {rec.name}
        assert zf.read(f"{rec.name}/mesh.obj") == (rec.folder / "mesh.obj").read_bytes()
    # the model's own depth for the crop it saw
    crop = np.array(prepare_image(path, S, detect_face=detect_face))  # writable
    with torch.no_grad():
        ref = model(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)
    np.testing.assert_allclose(np.load(rec.folder / "depth.npy"), ref.canon_depth[0].numpy(), atol=1e-5)
    assert torch.allclose(rec.scene.canon_depth, ref.canon_depth, atol=1e-5)
    assert rec.params["input"]["face_detection"] is detect_face and rec.params["checkpoint"] == "tiny.ckpt"
    assert rec.params["input"]["original_name"] == path.name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_relit_and_posed_views_start_from_the_prediction(tiny):
    model, _ = tiny
    r = model.core.renderer
    torch.manual_seed(3)
    with torch.no_grad():
        factors = model(torch.rand(1, 3, S, S))
    scene = Scene.from_factors(factors)
    assert np.isclose(scene.yaw_deg, np.degrees(float(factors.view[0, 1])))
    # the predicted light relights the albedo into the model's canonical image (then rendered frontally)
    frontal = render_views(r, scene.texture, scene.canon_depth, torch.zeros(1, 6), image_size=96)[0, 0]
    own = relit_view(r, scene, *scene.light, image_size=96)
    assert own.shape == (96, 96, 3) and own.dtype == np.uint8
    assert np.abs(own.astype(int) - to_uint8(frontal).astype(int)).max() <= 1
    assert np.abs(relit_view(r, scene, 0.9, -0.9, 96).astype(int) - own).max() > 10
    # the predicted yaw is the input's pose: the model's own rendering of its canonical image
    posed = posed_view(r, scene, scene.yaw_deg, image_size=S)
    ref = r.render_view(scene.texture, scene.canon_depth, factors.view.float())
    assert np.abs(posed.astype(int) - to_uint8(ref[0]).astype(int)).max() <= 1
    assert np.abs(posed_view(r, scene, scene.yaw_deg + 40, S).astype(int) - posed).max() > 10


def test_reconstruct_refuses_bad_input_and_writes_nothing(tiny, tmp_path, bad_files):
    model, _ = tiny
    work = tmp_path / "work"
    for reason, path in bad_files.items():
        with pytest.raises(ImageLoadError, match=reason) as info:
            reconstruct(model, path, work, options=_options())
        assert info.value.path == str(path)
    abstract = EXAMPLES / "001_cat.png"  # a cat: no human face for the Haar cascade
    with pytest.raises(FaceNotFoundError, match="no human face"):
        reconstruct(model, abstract, work, detect_face=True, options=_options())
    assert not work.exists() or not list(work.iterdir())


def test_prune_results_keeps_the_newest(tmp_path):
    import os

    for i in range(5):
        (tmp_path / f"r{i}").mkdir()
        os.utime(tmp_path / f"r{i}", (1000 + i, 1000 + i))
    (tmp_path / ".r9.tmp-x").mkdir()  # being written: left alone
    removed = prune_results(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["r0", "r1", "r2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r9.tmp-x", "r3", "r4"]


def test_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--help"])
    assert exit_info.value.code == 0 and "--detect-face" in capsys.readouterr().out
    assert demo_main(["-c", str(tmp_path / "missing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo_main(["-c", "x.ckpt", "--port", "70000"])
    assert "port number" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ served page
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    """The demo page served on a free local port with a 1 MB upload limit; yields its URL."""
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    pytest.importorskip("gradio_client", reason="the demo extra is not installed (pip install -e '.[demo]')")
    from unsup3d.demo.app import build_app, launch

    model, ckpt = tiny
    work = tmp_path_factory.mktemp("demo-work")
    demo = build_app(model, work, options=_options(), checkpoint=str(ckpt), view_size=64, keep=50)
    _, url, share_url = launch(demo, work, port=_free_port(), max_file_size="1mb", block=False, quiet=True)
    assert share_url is None and url.startswith("http://127.0.0.1:")  # local only, no share link
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def _predict(client, photo: Path, crop_face: bool = False):
    from gradio_client import handle_file

    return client.predict(handle_file(str(photo)), crop_face, api_name="/reconstruct")


def test_api_reconstruct(client):
    from unsup3d.demo.app import API_OUTPUTS

    out = dict(zip(API_OUTPUTS, _predict(client, EXAMPLES / "002_face.png"), strict=True))
    mesh = _load_mesh(Path(out["glb"]))
    assert mesh.vertices.shape == (S * S, 3)
    with Image.open(out["depth"]) as im:
        assert im.size == (S, S) and im.mode.startswith("I")  # the 16-bit depth PNG
    for key in ("input", "albedo", "normal", "shading", "relit", "posed"):
        with Image.open(out[key]) as im:
            assert im.size[0] == im.size[1] == S, key
    assert Path(out["viewer"]).read_bytes() == Path(out["glb"]).read_bytes()
    with zipfile.ZipFile(out["zip"]) as zf:
        assert {n.split("/", 1)[1] for n in zf.namelist()} == ZIPPED
    assert Path(out["turntable"]).suffix == ".mp4" and Path(out["turntable"]).stat().st_size > 0
    assert out["info"]["photo"] == "002_face.png" and -90 <= out["yaw_deg"] <= 90
    assert abs(out["yaw_deg"] - out["info"]["yaw_deg"]) < 0.1


def test_api_errors_and_the_server_keeps_serving(client, bad_files, tmp_path):
    from gradio_client.exceptions import AppError

    for reason, path in bad_files.items():
        with pytest.raises(AppError, match=reason):
            _predict(client, path)
    with pytest.raises(AppError, match="No face was found"):
        _predict(client, EXAMPLES / "001_cat.png", crop_face=True)
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(AppError, match="Invalid file type"):
        _predict(client, text)
    big = tmp_path / "big.png"  # over the 1 MB upload limit: refused by the client, and by the server
    big.write_bytes(b"\x89PNG" + bytes(1_500_000))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _predict(client, big)
    import httpx

    upload = client.src.rstrip("/") + "/gradio_api/upload"
    assert httpx.post(upload, files={"files": ("big.png", big.read_bytes(), "image/png")}).status_code == 413
    assert httpx.post(upload, files={"files": ("small.png", bytes(1000), "image/png")}).status_code == 200
    out = _predict(client, EXAMPLES / "003_face.png")
    assert Path(out[9]).is_file()  # the GLB: still serving


def test_four_concurrent_requests_are_all_served(client):
    photos = [EXAMPLES / n for n in ("001_face.png", "002_face.png", "003_face.png", "016_paint.png")]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: _predict(client, p), photos))
    assert [r[11]["photo"] for r in results] == [p.name for p in photos]
    assert len({r[9] for r in results}) == 4 and all(Path(r[9]).is_file() for r in results)


def test_page_in_headless_chromium(server, tmp_path):
    pytest.importorskip("playwright", reason="playwright is not installed (the demo extra)")
    from unsup3d.demo.browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium; .ci/run installs it)")
    shot = tmp_path / "demo.png"
    check = check_page(server, EXAMPLES / "001_face.png", shot, timeout_s=90)
    assert check.canvas_drawn, "the 3D viewer's canvas stayed blank"
    assert check.depth_src.startswith(server) and "depth" in check.depth_src
    assert check.relit_changed and check.posed_changed, "the sliders did not re-render the views"
    assert check.requests and check.external == [], f"the page contacted other hosts: {check.external}"
    assert "ui-sans-serif" in check.fonts or "system-ui" in check.fonts, check.fonts
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and im.size[1] >= 800


def test_the_demo_removes_its_uploads_and_results_when_it_stops(tiny, tmp_path):
    """unsup3d-demo in its own process, the system's temporary folder pointed at an empty one: a photo is
    uploaded and reconstructed (its upload and the result sit there while serving); after SIGTERM the
    command exits 0 and the folder is empty again (Gradio left the uploads in <tmp>/gradio before)."""
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    pytest.importorskip("gradio_client", reason="the demo extra is not installed (pip install -e '.[demo]')")
    from gradio_client import Client, handle_file

    exe = Path(sys.executable).parent / "unsup3d-demo"
    if not exe.exists():
        pytest.skip("unsup3d-demo is not installed beside the interpreter")
    _, ckpt = tiny
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(tmp), GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "--checkpoint", str(ckpt), "--port", str(port), "--num-frames", "2",
                             "--view-size", "64"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo did not start serving"
                time.sleep(0.5)
        out = Client(url, verbose=False).predict(handle_file(str(EXAMPLES / "002_face.png")), False,
                                                 api_name="/reconstruct")
        assert Path(out[9]).suffix == ".glb"
        serving = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
        assert any(p.endswith("/002_face.png") and "uploads" in p for p in serving), serving
        assert any(p.endswith("mesh.glb") for p in serving), serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")) == []


def test_wandb_logs_each_reconstruction(tiny, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    from unsup3d.demo.app import build_app
    from unsup3d.export import ExportWandbLogger

    for k in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    model, _ = tiny
    logger = ExportWandbLogger("unsup3d-demo", config={"job": "demo"})
    demo = build_app(model, tmp_path / "work", options=_options(), logger=logger, view_size=64)
    (event,) = [d for d in demo.fns.values() if d.api_name == "reconstruct"]
    event.fn(str(EXAMPLES / "001_face.png"), False)  # the page's handler, as the server calls it
    logger.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    assert list(media.rglob("*.glb")) and len(list(media.rglob("*.png"))) >= 6 and list(media.rglob("*.mp4"))
