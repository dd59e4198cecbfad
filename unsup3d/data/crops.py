"""Photos made into the model's input: a square crop (centred, or around the largest face), resized to
``S x S``, with the crop recorded in the photo's pixels; and the batch the model takes.

Every place that feeds photos to a model crops them here: the export and the demo
(:func:`prepare_input`), ``unsup3d-prepare``'s training crops (:mod:`unsup3d.data.prepare`).

* :func:`center_crop_square` / :func:`center_square_box`: the centred square; :func:`resize_for_model`:
  the original demo's resize.
* :func:`detect_face_box` finds the largest frontal human face with OpenCV's bundled Haar cascade, each
  thread with a detector of its own (:func:`face_detector`); :func:`crop_face` / :func:`face_crop_box` cut a
  square around it with the margins the original demo used (which relied on MTCNN),
  :func:`detect_face_crop` does both.
* :func:`prepare_input` loads a photo (:func:`unsup3d.files.images.load_image`) and does all of it;
  :func:`model_batch` stacks prepared photos into the model's input tensor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from unsup3d.files.images import MAX_PIXELS, load_image, oriented_size

__all__ = [
    "FACE_SCALE",
    "FACE_SHIFT",
    "FaceNotFoundError",
    "PreparedInput",
    "center_crop_square",
    "center_square_box",
    "crop_face",
    "detect_face_box",
    "detect_face_crop",
    "face_crop_box",
    "face_detector",
    "model_batch",
    "prepare_image",
    "prepare_input",
    "resize_for_model",
]

#: Face crop margins (see :func:`face_crop_box`): a square of ``FACE_SCALE`` times the detection's
#: larger side, its centre moved down by ``FACE_SHIFT`` times the detection's height.
FACE_SCALE = 1.1
FACE_SHIFT = 0.1


class FaceNotFoundError(ValueError):
    """No face was detected in an image. ``name`` identifies the image (usually its file name)."""

    def __init__(self, name: str = "image", reason: str = "no face detected"):
        self.name = str(name)
        self.reason = reason
        super().__init__(f"{reason} in {self.name!r}")


# ---------------------------------------------------------------------------------------- centre crop


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


_DETECTORS = threading.local()


def face_detector() -> cv2.CascadeClassifier:
    """The calling thread's face detector: OpenCV's bundled frontal-face Haar cascade, loaded on the
    thread's first use. OpenCV's ``CascadeClassifier`` is not safe to use from two threads at once, and the
    demo reconstructs photos side by side: each thread gets a detector of its own.

    Raises:
        RuntimeError: OpenCV's cascade file cannot be loaded.
    """
    cascade = getattr(_DETECTORS, "cascade", None)
    if cascade is None:
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load OpenCV's Haar face cascade from {path!r}")
        _DETECTORS.cascade = cascade
    return cascade


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
    boxes = face_detector().detectMultiScale(
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


# ------------------------------------------------------------------------------------ a photo


@dataclass
class PreparedInput:
    """One photo ready for the model.

    Attributes:
        image: ``S x S x 3`` uint8 RGB, the model's input.
        source_size: ``(width, height)`` of the photo as viewers show it (after EXIF orientation).
        crop_box: ``(x0, y0, x1, y1)`` of the square that was resized to ``S x S``, in ``source_size``
            pixels (may extend past the photo where a face crop was edge-padded).
        face_box: ``(x, y, w, h)`` of the detected face (source pixels), or None.
    """

    image: np.ndarray
    source_size: tuple[int, int]
    crop_box: tuple[float, float, float, float]
    face_box: tuple[float, float, float, float] | None = None

    def record(self, path: str | os.PathLike, name: str) -> dict[str, Any]:
        """The ``input`` entry of ``params.json``: the photo's absolute path, its output name, sizes and boxes."""
        return {
            "path": str(Path(path).resolve()),
            "name": name,
            "source_size": list(self.source_size),
            "crop_box": list(self.crop_box),
            "face_detection": self.face_box is not None,
            "face_box": list(self.face_box) if self.face_box is not None else None,
        }


def prepare_input(
    path: str | os.PathLike,
    size: int,
    detect_face: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int | None = MAX_PIXELS,
) -> PreparedInput:
    """Load a photo and turn it into the model's ``size x size`` input.

    Without ``detect_face``: centre square crop, then the demo's resize (halving with area averaging
    while more than twice the target, then bilinear); huge JPEGs are downscaled while decoding. With
    ``detect_face``: the largest frontal face (OpenCV Haar cascade, on a copy whose shorter side is at
    most ~1024 px) is cropped with the original demo's margins (a square of about 1.1x the detection,
    shifted down, edge-replicated where it leaves the photo) before resizing. A photo of more than
    ``max_pixels`` pixels is refused from its header, before it is decoded.

    Raises:
        unsup3d.files.images.ImageLoadError: unreadable, not an image, truncated, too small or too large.
        FaceNotFoundError: ``detect_face`` and no face was found.
    """
    path = Path(path)
    img = load_image(path, background=background, max_pixels=max_pixels,
                     draft_size=1024 if detect_face else 2 * size)
    h, w = img.shape[:2]
    src = oriented_size(path, (w, h))
    scale = src[0] / w
    face = None
    if detect_face:
        box = detect_face_box(img)
        if box is None:
            raise FaceNotFoundError(str(path), "no human face detected (OpenCV Haar cascade)")
        square = crop_face(img, box, scale=FACE_SCALE, shift=FACE_SHIFT)
        crop = face_crop_box(box, scale=FACE_SCALE, shift=FACE_SHIFT)  # the square crop_face cut
        face = tuple(float(v * scale) for v in box)
    else:
        square = center_crop_square(img)
        crop = center_square_box(h, w)  # the square center_crop_square cut
    image = resize_for_model(square, size)
    return PreparedInput(
        image=np.ascontiguousarray(image, dtype=np.uint8),
        source_size=src,
        crop_box=tuple(float(v * scale) for v in crop),
        face_box=face,
    )


def prepare_image(
    path: str | os.PathLike, size: int, detect_face: bool = False, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """The model input of a photo: ``size x size x 3`` uint8 RGB (see :func:`prepare_input`)."""
    return prepare_input(path, size, detect_face, background).image


def model_batch(images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """The model's input batch of prepared photos.

    Args:
        images: ``B`` arrays ``S x S x 3`` uint8 RGB (:attr:`PreparedInput.image`).
        device: where the batch goes.

    Returns:
        ``B x 3 x S x S`` float32 in ``[0, 1]``, contiguous (a permuted, channels-last input sends the
        convolutions down a slower path at small batch sizes).
    """
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return batch.to(device=device, dtype=torch.float32).div_(255.0)
