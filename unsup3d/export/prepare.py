"""Photo preparation: one photo loaded (:func:`unsup3d.images.load_image`) and cropped to the model's
``S x S`` input, around the largest detected face or centred, with the crop recorded in source pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsup3d.images import (
    FACE_SCALE,
    FACE_SHIFT,
    MAX_PIXELS,
    FaceNotFoundError,
    center_crop_square,
    center_square_box,
    crop_face,
    detect_face_box,
    face_crop_box,
    load_image,
    oriented_size,
    resize_for_model,
)

__all__ = ["PreparedInput", "model_batch", "prepare_image", "prepare_input"]


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
        unsup3d.images.ImageLoadError: unreadable, not an image, truncated, too small or too large.
        unsup3d.images.FaceNotFoundError: ``detect_face`` and no face was found.
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
