"""Image files: finding them, reading them robustly, writing them atomically.

The one image loader of the package: training and evaluation (:mod:`unsup3d.data.datasets`), the
model-input crops (:mod:`unsup3d.data.crops`) and export all read photos with :func:`load_image` and
find them with :data:`IMAGE_EXTENSIONS` / :func:`find_images`; every image file the package writes goes
through :func:`atomic_save_image`.

* :func:`load_image` reads any image PIL can read into an ``H x W x 3`` RGB array, applying the EXIF
  orientation, compositing transparency on a background colour and converting gray / 16-bit / CMYK /
  palette images. Every failure is an :class:`ImageLoadError` whose message names the file and reason.
* :func:`find_images` lists the image files of a folder (recursively, sorted, hidden names skipped).
* :func:`to_pil` turns arrays and tensors into PIL images; :func:`atomic_save_image` encodes one in
  memory and writes it with :func:`unsup3d.files.atomic.atomic_save_bytes`.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from unsup3d.files.atomic import as_numpy, atomic_save_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MIN_SIZE",
    "ImageLoadError",
    "atomic_save_image",
    "find_images",
    "is_image_file",
    "load_image",
    "oriented_size",
    "to_pil",
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


class ImageLoadError(ValueError):
    """An input image could not be used. ``path`` and ``reason`` are kept as attributes."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load image {self.path!r}: {reason}")


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


# ---------------------------------------------------------------------------------------- writing


def _format_for(path: Path, format: str | None) -> str:
    if format is not None:
        return format.upper()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot infer an image format from {str(path)!r}; pass format=")
    return fmt


def to_pil(image: Any):
    """Convert an image to PIL.

    Accepted inputs: a PIL image (returned as is); a numpy array ``H x W`` (gray), ``H x W x 3`` (RGB)
    or ``H x W x 4`` (RGBA) of dtype ``uint8``; ``H x W`` ``uint16`` (16-bit gray, mode ``I;16``);
    float arrays in ``[0, 1]`` (clipped, scaled to 8 bit). Torch tensors are converted with ``.numpy()``
    and ``3 x H x W`` / ``1 x H x W`` channel-first inputs are transposed.
    """
    if isinstance(image, Image.Image):
        return image
    arr = as_numpy(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError("16-bit images are only supported for single-channel (gray) arrays")
        return Image.fromarray(np.ascontiguousarray(arr, dtype="<u2"))  # mode I;16
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_:
        arr = np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(arr))


def atomic_save_image(
    path: str | os.PathLike, image: Any, format: str | None = None, *, durable: bool = True, **save_kwargs
) -> Path:
    """Save an image atomically with PIL.

    Args:
        path: target file; the format is inferred from the suffix unless ``format`` is given.
        image: see :func:`to_pil` (uint8 gray/RGB/RGBA, uint16 gray -> 16-bit PNG, float in [0, 1]).
        format: PIL format name (``"PNG"``, ``"JPEG"``...).
        durable: see :func:`unsup3d.files.atomic.atomic_write`.
        **save_kwargs: passed to ``PIL.Image.save`` (e.g. ``quality=95``).

    Returns:
        The path.
    """
    path = Path(path)
    fmt = _format_for(path, format)
    pil = to_pil(image)
    if fmt == "JPEG" and pil.mode not in ("RGB", "L", "CMYK"):
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **save_kwargs)  # encode fully before touching the file system
    return atomic_save_bytes(path, buf.getvalue(), durable=durable)
