"""CelebA crop script on fake CelebA files; download/unpack safety checks, all offline."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unsup3d.data.download import RESOURCES, DownloadError, check_archive, download_file, fetch, safe_extract

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


celeba = _load_script("prepare_celeba")


# ----------------------------------------------------------------------------- CelebA crops

NAMES = [f"{i:06d}.jpg" for i in range(1, 7)]
PARTITION = {n: str(i % 3) for i, n in enumerate(NAMES)}  # 0 train, 1 val, 2 test


def fake_celeba(root: Path) -> dict[str, np.ndarray]:
    """Six 'in-the-wild' images with a bright square 'face' and official-format annotation files."""
    (root / "img_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    landmarks = {}
    for i, name in enumerate(NAMES):
        h, w = 90 + 5 * i, 120
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        cx, cy = 40 + 5 * i, 45
        img[cy - 20 : cy + 20, cx - 20 : cx + 20] = 220
        Image.fromarray(img).save(root / "img_celeba" / name, quality=95)
        # eyes 10 px above the centre, mouth 10 px below: eye-to-mouth distance 20
        landmarks[name] = np.array(
            [[cx - 8, cy - 10], [cx + 8, cy - 10], [cx, cy], [cx - 6, cy + 10], [cx + 6, cy + 10]]
        )
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in PARTITION.items()))
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    rows = [f"{n} " + " ".join(str(int(v)) for v in lm.flatten()) for n, lm in landmarks.items()]
    (root / "list_landmarks_celeba.txt").write_text(f"{len(rows)}\n{header}\n" + "\n".join(rows) + "\n")
    rows = [f"{n} {int(lm[2, 0]) - 20} {int(lm[2, 1]) - 20} 40 40" for n, lm in landmarks.items()]
    (root / "list_bbox_celeba.txt").write_text(
        f"{len(rows)}\nimage_id x_1 y_1 width height\n" + "\n".join(rows)
    )
    rows = [
        f"{n} {PARTITION[n]} {int(lm[2, 0]) - 20} {int(lm[2, 1]) - 20} 40 40" for n, lm in landmarks.items()
    ]
    (root / "celeba_crop_bbox.txt").write_text("\n".join(rows) + "\n")
    return landmarks


def _run_celeba(root, *args):
    return celeba.main(["--images", str(root / "img_celeba"), "--workers", "1", *args])


@pytest.mark.parametrize("source", ["landmarks", "bbox", "crop-boxes"])
def test_prepare_celeba_layout_and_crops(tmp_path, source):
    fake_celeba(tmp_path)
    out = tmp_path / "celeba_cropped"
    files = {
        "landmarks": "list_landmarks_celeba.txt",
        "bbox": "list_bbox_celeba.txt",
        "crop-boxes": "celeba_crop_bbox.txt",
    }
    args = [f"--{source}", str(tmp_path / files[source]), "--output", str(out), "--size", "32"]
    if source != "crop-boxes":
        args += ["--partition", str(tmp_path / "list_eval_partition.txt")]
    if source == "landmarks":
        args += ["--scale", "2.0", "--shift", "0"]  # box side 40 = the bright square
    assert _run_celeba(tmp_path, *args) == 0
    for split, idx in (("train", (0, 3)), ("val", (1, 4)), ("test", (2, 5))):
        got = sorted(p.name for p in (out / split).iterdir())
        assert got == [Path(NAMES[i]).stem + ".png" for i in idx]
    for p in out.rglob("*.png"):
        crop = np.asarray(Image.open(p))
        assert crop.shape == (32, 32, 3)
        assert crop[4:-4, 4:-4].mean() > 200, f"{p.name}: the crop should be on the bright face square"


def test_prepare_celeba_pads_outside_and_limit(tmp_path):
    fake_celeba(tmp_path)
    (tmp_path / "box.txt").write_text("000001.jpg 0 -30 -30 80 80\n000002.jpg 1 10 10 40 40\n")
    out = tmp_path / "o"
    assert (
        _run_celeba(
            tmp_path,
            "--crop-boxes",
            str(tmp_path / "box.txt"),
            "--output",
            str(out),
            "--size",
            "16",
            "--limit",
            "1",
        )
        == 0
    )
    assert [p.name for p in out.rglob("*.png")] == ["000001.png"]


def test_prepare_celeba_errors(tmp_path, capsys):
    fake_celeba(tmp_path)
    assert (
        celeba.main(
            [
                "--images",
                str(tmp_path / "missing"),
                "--bbox",
                str(tmp_path / "list_bbox_celeba.txt"),
                "--partition",
                str(tmp_path / "list_eval_partition.txt"),
            ]
        )
        == 1
    )
    assert "missing" in capsys.readouterr().err
    assert _run_celeba(tmp_path, "--landmarks", str(tmp_path / "list_landmarks_celeba.txt")) == 1
    assert "--partition" in capsys.readouterr().err


def test_read_annotation_formats(tmp_path):
    fake_celeba(tmp_path)
    lm = celeba.read_annotation(tmp_path / "list_landmarks_celeba.txt")
    part = celeba.read_annotation(tmp_path / "list_eval_partition.txt")
    assert list(lm) == NAMES and len(lm[NAMES[0]]) == 10
    assert part[NAMES[1]] == ["1"]


def test_box_from_landmarks_is_square_and_centred():
    lm = np.array([[40, 40], [60, 40], [50, 50], [42, 60], [58, 60]], float)
    x0, y0, w, h = celeba.box_from_landmarks(lm, scale=2.0, shift=0.0)
    assert w == h == 40 and (x0 + w / 2, y0 + h / 2) == (50, 50)


# ----------------------------------------------------------------------------- archives


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_safe_extract_zip(tmp_path):
    arc = _zip(tmp_path / "synface.zip", {"synface/train/image/a_image.png": b"x", "synface/val/": b""})
    safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out/synface/train/image/a_image.png").read_bytes() == b"x"


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_zip_slip_refused(tmp_path, bad):
    arc = _zip(tmp_path / "a.zip", {"ok.txt": b"1", bad: b"2"})
    with pytest.raises(DownloadError, match="outside the target folder"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()


def test_zip_symlink_refused(tmp_path):
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16  # symlink
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="link or special file"):
        safe_extract(arc, tmp_path / "out")


def test_tar_checks(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("syncar/test/a.png")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    safe_extract(good, tmp_path / "out")
    assert (tmp_path / "out/syncar/test/a.png").read_bytes() == b"abc"
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        info = tarfile.TarInfo("x")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(info)
    with pytest.raises(DownloadError, match="link or special file"):
        check_archive(bad)


def test_corrupt_and_small_archives(tmp_path):
    arc = _zip(tmp_path / "a.zip", {"a/" + "f" * 10: b"hello world" * 100})
    data = bytearray(arc.read_bytes())
    i = data.index(b"hello world")
    data[i : i + 5] = b"HELLO"  # break the CRC
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="corrupt"):
        check_archive(tmp_path / "bad.zip")
    (tmp_path / "junk.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="neither a zip nor a tar"):
        check_archive(tmp_path / "junk.zip")
    with pytest.raises(DownloadError, match="expected at least"):
        check_archive(arc, min_size=10**7)
    with pytest.raises(DownloadError, match="SHA-256"):
        check_archive(arc, sha256="0" * 64)


def test_offline_fails_fast_with_instructions(tmp_path):
    # port 9 (discard) on localhost: connection refused immediately, as when offline
    with pytest.raises(
        DownloadError, match=r"could not download http://127\.0\.0\.1:9/synface\.zip.*--archive"
    ):
        download_file("http://127.0.0.1:9/synface.zip", tmp_path / "synface.zip", timeout=5)
    assert not list(tmp_path.iterdir()), "no partial file is left behind"


@pytest.fixture
def http_server(tmp_path):
    (tmp_path / "srv").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "srv", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_unpacks(http_server, tmp_path, monkeypatch):
    srv, url = http_server
    payload = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _zip(srv / "cat_combined.zip", {"cat_combined/train/a.png": payload, "cat_combined/test/b.png": b"b"})
    monkeypatch.setitem(
        RESOURCES,
        "cat",
        RESOURCES["cat"].__class__(f"{url}/cat_combined.zip", "cat_combined", "data", "test", min_size=100),
    )
    out = fetch("cat", tmp_path / "data", timeout=5)
    assert out == tmp_path / "data/cat_combined" and (out / "train/a.png").read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cat_combined"]  # no temp files left
    # already there: skipped; a 404 is a clear error
    assert fetch("cat", tmp_path / "data") == out
    with pytest.raises(DownloadError, match="could not download"):
        fetch("cat", tmp_path / "other", url=f"{url}/missing.zip", timeout=5)


def test_download_script_cli(tmp_path):
    arc = _zip(tmp_path / "syncar.zip", {"syncar/train/x.png": b"x"})
    cmd = [
        sys.executable,
        str(ROOT / "scripts/download_data.py"),
        "syncar",
        "--archive",
        str(arc),
        "--output",
        str(tmp_path / "data"),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    assert (tmp_path / "data/syncar/train/x.png").is_file()
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts/download_data.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "robots.ox.ac.uk" in res.stdout and "pretrained_celeba" in res.stdout
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/download_data.py"),
            "synface",
            "--url",
            "http://127.0.0.1:9/synface.zip",
            "--output",
            str(tmp_path / "d2"),
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 1 and "could not download" in res.stderr and "--archive" in res.stderr
