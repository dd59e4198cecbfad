"""Image loading edge cases, model resizing and Haar face cropping on the shared photos."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from unsup3d.data.crops import (
    FaceNotFoundError,
    center_crop_square,
    crop_face,
    detect_face_box,
    detect_face_crop,
    resize_for_model,
)
from unsup3d.files.images import ImageLoadError, load_image

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"
needs_photos = pytest.mark.skipif(not (PHOTOS / "human_face").is_dir(), reason="shared/photos not available")


def _pattern(h: int, w: int) -> np.ndarray:
    """Deterministic RGB image with distinct rows/columns (to check orientation)."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([i * 255 // max(h - 1, 1), j * 255 // max(w - 1, 1), (i + j) % 256], -1).astype(np.uint8)


# ---------------------------------------------------------------------------------------- loading


def test_load_png_roundtrip(tmp_path):
    arr = _pattern(20, 30)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3) and out.flags.c_contiguous
    assert np.array_equal(out, arr)
    f = load_image(tmp_path / "a.png", as_float=True)
    assert f.dtype == np.float32 and np.allclose(f * 255.0, arr)


def test_missing_path(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found") as info:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(info.value) and info.value.reason == "file not found"


def test_folder_path(tmp_path):
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "fake.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match="not an image file") as info:
        load_image(p)
    assert "fake.jpg" in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    p = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        p, format=fmt
    )
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(p)


def test_truncated_refused_even_if_pil_flag_enabled(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    p = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:600])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_too_small(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), "red").save(p)
    with pytest.raises(ImageLoadError, match=r"too small \(1x1 pixels; at least 8x8"):
        load_image(p)
    assert load_image(p, min_size=1).shape == (1, 1, 3)


def test_too_many_pixels(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (400, 300)).save(p)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(p, max_pixels=100_000)


def test_rgba_composited_on_background(tmp_path):
    arr = np.zeros((10, 12, 4), np.uint8)
    arr[..., 0] = 200
    arr[:, :6, 3] = 255  # left half opaque red, right half fully transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(arr).save(p)
    out = load_image(p)
    assert out.shape == (10, 12, 3)
    assert (out[:, :6] == [200, 0, 0]).all()
    assert (out[:, 6:] == 255).all()  # white by default
    assert (load_image(p, background=(0, 10, 20))[:, 6:] == [0, 10, 20]).all()


def test_palette_with_transparency_and_la(tmp_path):
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    pal.paste(1, (0, 0, 5, 10))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png", background=(0, 255, 0))
    assert (out[:, :5] == [255, 0, 0]).all() and (out[:, 5:] == [0, 255, 0]).all()

    la = Image.merge("LA", [Image.new("L", (10, 10), 50), Image.new("L", (10, 10), 0)])
    la.save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png") == 255).all()


def test_grayscale_and_cmyk(tmp_path):
    Image.new("L", (9, 9), 77).save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (9, 9, 3) and (g == 77).all()

    Image.new("CMYK", (9, 9), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    c = load_image(tmp_path / "c.jpg")
    assert c.shape == (9, 9, 3)
    assert c[..., 0].mean() > 200 and c[..., 1].mean() < 60 and c[..., 2].mean() < 60  # red


def test_16bit_gray(tmp_path):
    arr = np.zeros((10, 10), np.uint16)
    arr[:, 5:] = 65535
    arr[:, :5] = 257 * 100
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)  # mode I;16
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (10, 10, 3)
    assert (out[:, 5:] == 255).all() and (out[:, :5] == 100).all()
    assert np.array_equal(load_image(p, draft_size=4), out)  # 16-bit data is never box-reduced


def test_32bit_int_mode_scaled(tmp_path):
    arr = np.zeros((10, 10), np.int32)
    arr[:, 5:] = 1000
    p = tmp_path / "i32.tif"
    Image.fromarray(arr, "I").save(p)
    out = load_image(p)
    assert (out[:, 5:] == 4).all()  # 16-bit range -> divided by 257 (1000 / 257 = 3.9)


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)  # landscape, left half black, right half white
    arr[:, 40:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.shape == (80, 40, 3)  # portrait once oriented
    assert out[:30].mean() < 30 and out[50:].mean() > 225  # black on top, white at the bottom


def test_big_image_loads_and_resizes_fast(tmp_path):
    small = Image.fromarray(_pattern(100, 100))
    big = small.resize((5000, 5000), Image.Resampling.NEAREST)
    p = tmp_path / "big.jpg"
    big.save(p, quality=85)
    t0 = time.perf_counter()
    full = load_image(p)
    out = resize_for_model(full, 64)
    elapsed = time.perf_counter() - t0
    assert full.shape == (5000, 5000, 3) and out.shape == (64, 64, 3)
    assert elapsed < 3.0, elapsed

    t0 = time.perf_counter()
    draft = load_image(p, draft_size=128)
    assert 128 <= min(draft.shape[:2]) < 256
    assert time.perf_counter() - t0 < 1.0
    # cheap decode gives nearly the same model input
    diff = np.abs(resize_for_model(draft, 64).astype(int) - out.astype(int)).mean()
    assert diff < 8.0, diff


def test_draft_png_reduce(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(_pattern(64, 64)).resize((1024, 640), Image.Resampling.NEAREST).save(p, compress_level=1)
    out = load_image(p, draft_size=100)
    assert out.shape == (107, 171, 3)  # reduce by 6 (rounding up): shorter side stays >= 100


# --------------------------------------------------------------------------------------- resizing


def test_center_crop_square():
    arr = _pattern(30, 50)
    sq = center_crop_square(arr)
    assert sq.shape == (30, 30, 3) and np.array_equal(sq, arr[:, 10:40])
    assert center_crop_square(_pattern(51, 20)).shape == (20, 20, 3)


@pytest.mark.parametrize("shape", [(64, 64), (300, 200), (1000, 1000), (37, 90)])
def test_resize_for_model_shapes(shape):
    out = resize_for_model(_pattern(*shape), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    f = resize_for_model(_pattern(*shape).astype(np.float32) / 255.0, 32)
    assert f.shape == (32, 32, 3) and f.dtype == np.float32


def test_resize_identity_and_antialiasing():
    arr = _pattern(64, 64)
    assert np.array_equal(resize_for_model(arr, 64), arr)
    # a 1-px checkerboard must average to grey when shrunk a lot (no aliasing)
    checker = ((np.indices((512, 512)).sum(0) % 2) * 255).astype(np.uint8)
    out = resize_for_model(np.repeat(checker[..., None], 3, -1), 64)
    assert abs(out.astype(float).mean() - 127.5) < 2 and out.std() < 2


# ------------------------------------------------------------------------------------- face crop


def test_crop_face_geometry_and_padding():
    img = _pattern(100, 120)
    crop = crop_face(img, (40, 30, 20, 20), scale=1.0, shift=0.0)
    assert np.array_equal(crop, img[30:50, 40:60])
    shifted = crop_face(img, (40, 30, 20, 20), scale=1.5, shift=0.1)
    assert shifted.shape == (30, 30, 3)
    assert np.array_equal(shifted, img[27:57, 35:65])  # centre (50, 42), side 30
    edge = crop_face(img, (-10, -10, 30, 30), scale=1.0, shift=0.0)
    assert edge.shape == (30, 30, 3)
    assert np.array_equal(edge[:10, :10], np.broadcast_to(img[0, 0], (10, 10, 3)))
    assert np.array_equal(edge[10:, 10:], img[:20, :20])


@needs_photos
@pytest.mark.parametrize("name", ["001_face.png", "005_face.png", "010_face.png"])
def test_detects_faces_in_shared_photos(name):
    img = load_image(PHOTOS / "human_face" / name)
    crop = detect_face_crop(img, name)
    assert crop.shape[0] == crop.shape[1] and crop.shape[2] == 3
    assert 0.8 * 64 < crop.shape[0] < 1.4 * 64  # the photos are already face crops


@needs_photos
def test_face_in_a_larger_scene_is_found_and_framed():
    face = np.asarray(Image.open(PHOTOS / "human_face" / "001_face.png").convert("RGB").resize((256, 256)))
    scene = np.full((600, 800, 3), 90, np.uint8)
    scene[:] = np.linspace(60, 160, 800, dtype=np.uint8)[None, :, None]
    top, left = 150, 420
    scene[top : top + 256, left : left + 256] = face
    x, y, w, h = detect_face_box(scene)
    cx, cy = x + w / 2, y + h / 2
    assert left < cx < left + 256 and top < cy < top + 256
    crop = detect_face_crop(scene, "scene")
    assert 200 < crop.shape[0] < 330
    # the crop reproduces the original framing closely
    ref = resize_for_model(face, 64).astype(float)
    got = resize_for_model(crop, 64).astype(float)
    assert np.abs(got - ref).mean() < 30


@needs_photos
def test_no_face_raises_with_name():
    flat = np.full((256, 256, 3), 128, np.uint8)
    with pytest.raises(FaceNotFoundError, match="flat.png"):
        detect_face_crop(flat, "flat.png")
    gradient = _pattern(300, 400)
    with pytest.raises(FaceNotFoundError, match="no human face"):
        detect_face_crop(gradient, "gradient.jpg")
    cartoon = load_image(PHOTOS / "cat_face" / "030_abstract.png")
    with pytest.raises(FaceNotFoundError, match="030_abstract"):
        detect_face_crop(cartoon, "030_abstract.png")
