"""Image files: finding them, loading them robustly, resizing to the model's input, face cropping.

The one image loader of the package: training and evaluation (:mod:`unsup3d.data.datasets`) and
export (:mod:`unsup3d.export`) all read photos with :func:`load_image` and find them with
:data:`IMAGE_EXTENSIONS` / :func:`find_images`.

* :func:`load_image` reads any image PIL can read into an ``H x W x 3`` RGB array, applying the EXIF
  orientation, compositing transparency on a background colour and converting gray / 16-bit / CMYK /
  palette images. Every failure is an :class:`ImageLoadError` whose message names the file and reason.
* :func:`find_images` lists the image files of a folder (recursively, sorted, hidden names skipped).
* :func:`resize_for_model` centre-crops to a square and resizes like the original demo.
* :func:`detect_face_crop` finds the largest frontal human face with OpenCV's bundled Haar cascade and
  crops a square around it with the margins the original demo used (which relied on MTCNN);
  :func:`face_crop_box` and :func:`center_square_box` are the boxes those crops cut.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "FACE_SCALE",
    "FACE_SHIFT",
    "IMAGE_EXTENSIONS",
    "FaceNotFoundError",
    "ImageLoadError",
    "center_crop_square",
    "center_square_box",
    "crop_face",
    "detect_face_box",
    "detect_face_crop",
    "face_crop_box",
    "find_images",
    "is_image_file",
    "load_image",
    "oriented_size",
    "resize_for_model",
]

#: File extensions of image files (lower case): what folders are searched for, by the datasets and by
#: export alike (a file named explicitly is always tried, whatever its extension).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico",
)

#: Default smallest accepted side length in pixels.
MIN_SIZE = 8
#: Default largest accepted image area in pixels (PIL's decompression-bomb limit, ~89 M pixels).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Face crop margins (see :func:`face_crop_box`): a square of ``FACE_SCALE`` times the detection's
#: larger side, its centre moved down by ``FACE_SHIFT`` times the detection's height.
FACE_SCALE = 1.1
FACE_SHIFT = 0.1


class ImageLoadError(ValueError):
    """An input image could not be used. ``path`` and ``reason`` are kept as attributes."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load image {self.path!r}: {reason}")


class FaceNotFoundError(ValueError):
    """No face was detected in an image. ``name`` identifies the image (usually its file name)."""

    def __init__(self, name: str = "image", reason: str = "no face detected"):
        self.name = str(name)
        self.reason = reason
        super().__init__(f"{reason} in {self.name!r}")


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the name ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The image files under ``folder``: searched recursively (following symbolic links), files and
    folders whose names start with a dot skipped, filtered by :data:`IMAGE_EXTENSIONS`, sorted.

    Raises:
        FileNotFoundError: ``folder`` is not a directory (the message names it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder '{folder}' does not exist or is not a directory")
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        paths.extend(Path(dirpath) / f for f in filenames if is_image_file(f) and not _hidden(f))
    return sorted(paths)


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make PIL raise on truncated files even if some other code enabled LOAD_TRUNCATED_IMAGES."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_path(path: Path) -> None:
    if not path.exists():
        raise ImageLoadError(path, "file not found")
    if path.is_dir():
        raise ImageLoadError(path, "is a folder, not an image file")


def _check_size(path: Path, size: tuple[int, int], min_size: int, max_pixels: int | None) -> None:
    w, h = size
    if min(w, h) < min_size:
        raise ImageLoadError(
            path, f"image is too small ({w}x{h} pixels; at least {min_size}x{min_size} needed)"
        )
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(
            path,
            f"image is too large ({w}x{h} = {w * h} pixels; limit {max_pixels}, decompression-bomb guard)",
        )


def _open_and_decode(
    path: Path, min_size: int, max_pixels: int | None, draft_size: int | None
) -> Image.Image:
    """Open, size-check, (cheaply downscale,) fully decode and EXIF-orient an image."""
    with _strict_truncation():
        img = _open(path)
        with img:
            _check_size(path, img.size, min_size, max_pixels)
            try:
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))  # DCT-domain downscale, both sides >= size
                img.load()
                out = ImageOps.exif_transpose(_reduce(img, draft_size))
                return img.copy() if out is img else out  # the opened image is closed on return
            except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, zlib errors...
                raise ImageLoadError(path, _corrupt(exc)) from None


def _corrupt(exc: BaseException) -> str:
    return f"file is truncated or corrupt ({type(exc).__name__}: {exc})"


def _open(path: Path) -> Image.Image:
    """``Image.open`` (reads the header only) with its failures turned into :class:`ImageLoadError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file (unrecognised format or corrupt header)") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"image is too large (decompression-bomb guard): {exc}") from None
    except PermissionError as exc:
        raise ImageLoadError(path, f"cannot read file: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is reported the same way
        raise ImageLoadError(path, _corrupt(exc)) from None


_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"})


def _reduce(img: Image.Image, draft_size: int | None) -> Image.Image:
    """Integer box-downscale so that the shorter side stays >= ``draft_size`` (no-op if not much larger)."""
    if draft_size is None:
        return img
    factor = min(img.size) // draft_size
    if factor < 2 or img.mode not in _REDUCIBLE_MODES:  # palette, 1-bit, 16-bit: keep full size
        return img
    return img.reduce(factor)


def _composite(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Flatten an image with alpha (RGBA, LA, PA, palette/gray/RGB with a transparency key) onto a colour."""
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _int_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16/32-bit integer or float gray data to 8 bits.

    ``I;16*`` modes are true 16-bit data: divide by 257 (maps 65535 to 255 exactly). Mode ``I`` (32-bit
    container, how some formats deliver 16-bit data) and ``F``: values that already fit in 0..255 are
    kept; values up to 65535 are treated as 16-bit (divide by 257); larger ranges are divided by their
    maximum. Floats with maximum <= 1 are treated as [0, 1] intensities.
    """
    arr = np.clip(arr.astype(np.float64), 0.0, None)
    peak = float(arr.max()) if arr.size else 0.0
    if mode.startswith("I;16"):
        scale = 1.0 / 257.0
    elif mode == "F" and peak <= 1.0:
        scale = 255.0
    elif peak <= 255.0:
        scale = 1.0
    elif peak <= 65535.0:
        scale = 1.0 / 257.0
    else:
        scale = 255.0 / peak
    return np.round(np.clip(arr * scale, 0.0, 255.0)).astype(np.uint8)


def _to_rgb_array(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Any decoded PIL image -> ``H x W x 3`` uint8 RGB."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return np.asarray(_composite(img, background))
    if mode.startswith("I") or mode == "F":
        gray = _int_to_uint8(np.asarray(img), mode)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"))


def load_image(
    path: str | os.PathLike,
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    min_size: int = MIN_SIZE,
    max_pixels: int | None = MAX_PIXELS,
    draft_size: int | None = None,
    as_float: bool = False,
) -> np.ndarray:
    """Load an image file as RGB.

    Handles: any format PIL reads (first frame of animations); EXIF orientation (applied, so the array
    is upright as viewers show it); transparency (RGBA, LA, palette with transparency) composited on
    ``background``; gray, 1-bit, CMYK, YCbCr, palette -> RGB; 16-bit gray (``I;16``: divided by 257;
    ``I``/``F``: see ``_int_to_uint8``: kept if within 0..255, /257 if within 16 bits, else by the max).

    Args:
        path: image file.
        background: RGB colour (0..255) behind transparent pixels. Default white.
        min_size: smallest accepted width/height (an image smaller than ``min_size x min_size`` in
            either side is refused).
        max_pixels: largest accepted width*height (None: no limit; PIL's own hard limit of twice its
            ``MAX_IMAGE_PIXELS`` still applies).
        draft_size: when given, very large images are downscaled cheaply while decoding (JPEG DCT
            scaling and/or an integer box ``reduce``), keeping the shorter side >= ``draft_size``.
            Use e.g. ``2 * model_size`` for plain resizing, or ~1024 before face detection.
        as_float: return float32 in [0, 1] instead of uint8.

    Returns:
        ``H x W x 3`` array, uint8 in 0..255 (or float32 in [0, 1] with ``as_float``), C-contiguous.

    Raises:
        ImageLoadError: missing file, folder, not an image, truncated/corrupt, too small, too large.
    """
    path = Path(path)
    _check_path(path)
    img = _open_and_decode(path, min_size, max_pixels, draft_size)
    try:
        arr = np.ascontiguousarray(_to_rgb_array(img, background), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - exotic modes PIL cannot convert
        raise ImageLoadError(path, f"unsupported image mode {img.mode!r} ({exc})") from None
    if as_float:
        return arr.astype(np.float32) / 255.0
    return arr


def oriented_size(path: str | os.PathLike, fallback: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of an image file as viewers show it (after EXIF orientation), from its
    header; ``fallback`` when the header cannot be read."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - sizes are informative only; load_image reports real failures
        return fallback
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def center_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the centred ``S x S`` square, ``S = min(height, width)``."""
    s = min(height, width)
    x0, y0 = (width - s) // 2, (height - s) // 2
    return x0, y0, x0 + s, y0 + s


def center_crop_square(img: np.ndarray) -> np.ndarray:
    """Centre crop ``H x W x C`` (or ``H x W``) to ``S x S`` with ``S = min(H, W)`` (:func:`center_square_box`)."""
    x0, y0, x1, y1 = center_square_box(*img.shape[:2])
    return img[y0:y1, x0:x1]


def resize_for_model(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an image to the model's ``size x size`` input like the original demo.

    Non-square images are first centre-cropped to a square (the shorter side; the model expects
    square, roughly centred crops, so stretching would distort the shape). While the square is more
    than twice the target, it is halved with ``INTER_AREA`` (anti-aliased); then a final
    ``INTER_LINEAR`` resize gives ``size x size`` (the original demo: bilinear, with a pre-shrink of
    big images to ``2 * size`` to avoid aliasing).

    Args:
        img: ``H x W x 3`` (or ``H x W``) uint8 or float32 array.
        size: target side length.

    Returns:
        ``size x size x 3`` array with the input's dtype.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    out = np.ascontiguousarray(center_crop_square(img))
    while out.shape[0] > 2 * size:
        half = out.shape[0] // 2
        out = cv2.resize(out, (half, half), interpolation=cv2.INTER_AREA)
    if out.shape[0] != size:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)
    return out


# ------------------------------------------------------------------------------------ face crop


_CASCADE = None


def _cascade():
    global _CASCADE
    if _CASCADE is None:
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load OpenCV's Haar face cascade from {path!r}")
        _CASCADE = cascade
    return _CASCADE


def _gray_uint8(img: np.ndarray) -> np.ndarray:
    arr = img
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2GRAY)
    return arr


def _detection_scale(h: int, w: int, min_side: int, max_side: int) -> float:
    """Factor bringing the image into a size range the cascade handles well and fast."""
    if max(h, w) > max_side:
        return max_side / max(h, w)
    if min(h, w) < min_side:
        return min_side / min(h, w)
    return 1.0


def detect_face_box(
    img: np.ndarray,
    *,
    min_side: int = 256,
    max_side: int = 1024,
    pad_frac: float = 0.25,
    min_neighbors: int = 5,
    scale_factor: float = 1.1,
) -> tuple[float, float, float, float] | None:
    """Largest frontal face box ``(x, y, w, h)`` in ``img``'s pixel coordinates, or None.

    The image is converted to gray, rescaled so its shorter side is >= ``min_side`` (small crops are
    upscaled; the cascade's 24 px window needs room) and its longer side <= ``max_side`` (speed), and
    edge-padded by ``pad_frac`` of its shorter side so that tightly cropped faces touching the border
    (like the 64x64 training crops) are still found.
    """
    gray = _gray_uint8(img)
    h, w = gray.shape
    s = _detection_scale(h, w, min_side, max_side)
    if s != 1.0:
        interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)
    pad = int(pad_frac * min(gray.shape))
    if pad > 0:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    min_face = max(24, int(0.08 * (min(gray.shape) - 2 * pad)))
    boxes = _cascade().detectMultiScale(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_face, min_face)
    )
    if len(boxes) == 0:
        return None
    x, y, bw, bh = max(boxes, key=lambda b: int(b[2]) * int(b[3]))
    return (float((x - pad) / s), float((y - pad) / s), float(bw / s), float(bh / s))


def face_crop_box(
    box: tuple[float, float, float, float], *, scale: float = FACE_SCALE, shift: float = FACE_SHIFT
) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the square crop around a face box (may extend past the image).

    Side ``S = round(scale * max(w, h))`` (at least 1); centre = box centre moved down by ``shift * h``
    (faces in the training crops sit slightly high: the forehead is cut, the chin kept).

    Args:
        box: ``(x, y, w, h)`` in pixels.
    """
    x, y, w, h = (float(t) for t in box)
    side = max(1, round(scale * max(w, h)))
    cx, cy = x + w / 2.0, y + h / 2.0 + shift * h
    x0, y0 = round(cx - side / 2.0), round(cy - side / 2.0)
    return x0, y0, x0 + side, y0 + side


def crop_face(
    img: np.ndarray, box: tuple[float, float, float, float], *, scale: float = FACE_SCALE,
    shift: float = FACE_SHIFT,
) -> np.ndarray:
    """Square crop around a face box (:func:`face_crop_box`), edge-replicating where it leaves the image.

    Args:
        img: ``H x W x C`` (or ``H x W``) array, any dtype.
        box: ``(x, y, w, h)`` in pixels.

    Returns:
        ``S x S x C`` crop (same dtype), ``S = round(scale * max(w, h))``.
    """
    x0, y0, x1, y1 = face_crop_box(box, scale=scale, shift=shift)
    H, W = img.shape[:2]
    inside = img[max(y0, 0) : min(y1, H), max(x0, 0) : min(x1, W)]
    if inside.size == 0:
        raise ValueError(f"face box {box} lies outside the {W}x{H} image")
    pads = [(max(0, -y0), max(0, y1 - H)), (max(0, -x0), max(0, x1 - W))] + [(0, 0)] * (img.ndim - 2)
    return np.pad(inside, pads, mode="edge")


def detect_face_crop(
    img: np.ndarray, name: str = "image", *, scale: float = FACE_SCALE, shift: float = FACE_SHIFT,
    **detect_kwargs,
) -> np.ndarray:
    """Detect the largest frontal face and return a square crop around it.

    Margins: square of side ``1.1 x`` the detection size, centre shifted down by ``0.1 x`` its
    height. The original demo used MTCNN boxes (side 1.1 x mean box size, shift 0.15 x half side);
    the defaults here were calibrated so that Haar boxes found in the (edge-padded) 64x64 training-style
    face crops of ``shared/photos/human_face`` reproduce those crops (median side ratio ~1.05, downward
    centre offset ~0.10 of the box height).

    Args:
        img: ``H x W x 3`` uint8 (or float in [0, 1]) RGB image.
        name: used in the error message (pass the file name).
        scale, shift: crop margins, see :func:`crop_face`.
        **detect_kwargs: see :func:`detect_face_box`.

    Returns:
        ``S x S x 3`` crop with the input's dtype (native resolution; resize with
        :func:`resize_for_model`).

    Raises:
        FaceNotFoundError: no face found (message names ``name``).
    """
    box = detect_face_box(img, **detect_kwargs)
    if box is None:
        raise FaceNotFoundError(name, "no human face detected (OpenCV Haar cascade)")
    return crop_face(img, box, scale=scale, shift=shift)
