"""Image-folder datasets in the layout of the original release, with optional ground-truth depth.

Layout of one split folder (``<root>/train``, ``<root>/val`` or ``<root>/test``)::

    <split>/**/*.png|jpg|...                  images only (celeba, cat, syncar, folder)
    <split>/image/**/xxx_image.png            images
    <split>/depth/**/xxx_depth.png|.npy       paired ground-truth depth (synface, synthetic)

The depth file of an image is found by replacing the image folder name by the depth folder name
(``depth_dir_substitution``, default ``["image", "depth"]``) and the image file name part
``depth_filename_substitution`` (default ``["image", "depth"]``); a different extension
(``.png``, ``.npy``, ...) with the same stem is accepted too.

Depth encoding (as the original synface data): a gray PNG value ``v`` in ``[0, 1]`` (8-bit: value
/ 255, 16-bit: value / 65535), larger is nearer, decodes to
``depth = max_depth - (max_depth - min_depth) * v``; the background (``v = 0``) is at
``max_depth``. A ``.npy`` file holds the depth values themselves (``H x W`` float).

Samples are dicts ``{"image": 3 x H x W float32 in [0, 1], "depth": H x W float32 (only with
depth), "path": str}``; the default collate makes them batch-first
(``B x 3 x H x W``, ``B x H x W``, ``list[str]``).

Images are found and read by :mod:`unsup3d.files.images` (:func:`~unsup3d.files.images.find_images`,
:func:`~unsup3d.files.images.load_image`: EXIF orientation applied, transparency on white, the same
extensions and errors as export). Resizing uses PIL bilinear filtering (antialiased when downscaling, like the original
torchvision-on-PIL pipeline). Depth is resized the same way in float precision, so pixels on the
object's silhouette blend with the far background value, exactly like the original 8-bit pipeline;
evaluation erodes the foreground mask by one pixel to ignore them.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from unsup3d.files.depth_encoding import unit_to_depth
from unsup3d.files.images import IMAGE_EXTENSIONS, ImageLoadError, find_images, load_image

__all__ = [
    "DEPTH_EXTENSIONS",
    "CorruptImageWarning",
    "ImageFolderDataset",
    "UnreadableFileError",
    "crop_array",
    "find_depth_pairs",
    "load_depth",
    "normalize_crop",
]

DEPTH_EXTENSIONS = (".png", ".npy", ".tif", ".tiff", ".pgm", ".bmp")

Crop = int | Sequence[int] | None


class CorruptImageWarning(UserWarning):
    """A file could not be decoded and was skipped."""


class UnreadableFileError(OSError):
    """A depth file could not be decoded; ``path`` names it, ``reason`` says why (images raise
    :class:`unsup3d.files.images.ImageLoadError`, which has the same two attributes)."""

    def __init__(self, path: str | Path, err: BaseException):
        self.path, self.reason = Path(path), f"{type(err).__name__}: {err}"
        super().__init__(f"cannot read '{path}': {self.reason}")


def _depth_candidates(path: Path) -> list[Path]:
    """``path`` itself, then the same stem with every depth extension."""
    out = [path]
    out += [path.with_suffix(ext) for ext in DEPTH_EXTENSIONS if ext != path.suffix.lower()]
    return out


def find_depth_pairs(
    split_dir: str | Path,
    dir_substitution: Sequence[str] = ("image", "depth"),
    filename_substitution: Sequence[str] | None = ("image", "depth"),
) -> list[tuple[Path, Path]]:
    """Pair every image of ``<split_dir>/<image dir>`` with its depth file in ``<split_dir>/<depth dir>``.

    Args:
        split_dir: the split folder, e.g. ``data/synface/train``.
        dir_substitution: ``[image dir name, depth dir name]``.
        filename_substitution: ``[old, new]`` replaced in the image file name to get the depth file
            name (``None``: same name).

    Returns:
        Sorted list of ``(image path, depth path)``.

    Raises:
        FileNotFoundError: naming the missing folder, or the images whose depth file is missing.
    """
    split_dir = Path(split_dir)
    image_name, depth_name = _pair(dir_substitution, "depth_dir_substitution")
    image_dir, depth_dir = split_dir / image_name, split_dir / depth_name
    for d, what in ((image_dir, "images"), (depth_dir, "ground-truth depth maps")):
        if not d.is_dir():
            raise FileNotFoundError(
                f"folder '{d}' does not exist; a dataset with ground-truth depth expects {what} in "
                f"'{d}' (layout <split>/{image_name}/... and <split>/{depth_name}/..., see data/README.md)"
            )
    old_new = _pair(filename_substitution, "depth_filename_substitution") if filename_substitution else None
    pairs, missing = [], []
    for img in find_images(image_dir):
        rel = img.relative_to(image_dir)
        name = rel.name.replace(*old_new) if old_new else rel.name
        target = depth_dir / rel.parent / name
        found = next((c for c in _depth_candidates(target) if c.is_file()), None)
        if found is None:
            missing.append((img, target))
        else:
            pairs.append((img, found))
    if missing:
        shown = "\n".join(f"  {i} -> expected {t} (or .png/.npy)" for i, t in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{len(missing)} image(s) in '{image_dir}' have no depth file in '{depth_dir}':\n{shown}{more}"
        )
    return pairs


def _pair(value, name: str) -> tuple[str, str]:
    if value is None or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a pair [old, new], got {value!r}")
    return str(value[0]), str(value[1])


# ----------------------------------------------------------------------------- depth files


def load_depth(path: str | Path, min_depth: float, max_depth: float) -> np.ndarray:
    """Read a ground-truth depth map.

    ``.npy``: ``H x W`` depth values as stored. Images: first channel, 8-bit ``/255`` or 16-bit
    ``/65535``, decoded with :func:`unsup3d.files.depth_encoding.unit_to_depth` (larger is nearer).

    Returns:
        ``H x W`` float32 depth.

    Raises:
        OSError: if the file cannot be decoded.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise OSError(f"depth file '{path}' holds an array of shape {arr.shape}, expected H x W")
        return arr.astype(np.float32)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise OSError(f"cannot decode depth image '{path}'")
    if raw.ndim == 3:
        raw = raw[..., 0]
    if raw.dtype == np.uint8:
        v = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        v = raw.astype(np.float32) / 65535.0
    else:
        raise OSError(f"depth image '{path}' has unsupported pixel type {raw.dtype} (expected 8 or 16 bit)")
    return unit_to_depth(v, min_depth, max_depth).astype(np.float32)


# ----------------------------------------------------------------------------- transforms


def normalize_crop(crop: Crop) -> int | tuple[int, int, int, int] | None:
    """Validate a crop spec: ``None``, an int (centre crop size) or ``[y0, x0, h, w]``."""
    if crop is None:
        return None
    if isinstance(crop, bool):
        raise TypeError(f"crop must be null, an int or [y0, x0, h, w], got {crop!r}")
    if isinstance(crop, int):
        if crop <= 0:
            raise ValueError(f"centre crop size must be positive, got {crop}")
        return crop
    crop = tuple(int(c) for c in crop)
    if len(crop) != 4 or crop[2] <= 0 or crop[3] <= 0:
        raise ValueError(f"crop must be null, an int (centre crop) or [y0, x0, h, w], got {list(crop)}")
    return crop


def crop_box(height: int, width: int, crop) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` of a crop spec for an image of the given size (torchvision's centre rule)."""
    if crop is None:
        return 0, 0, height, width
    if isinstance(crop, int):
        return round((height - crop) / 2.0), round((width - crop) / 2.0), crop, crop
    return crop


def crop_array(arr: np.ndarray, box: tuple[int, int, int, int], fill: float = 0) -> np.ndarray:
    """Crop ``arr`` (``H x W`` or ``H x W x C``) to ``box = (y0, x0, h, w)``, padding with ``fill`` outside."""
    y0, x0, h, w = box
    height, width = arr.shape[:2]
    if y0 >= 0 and x0 >= 0 and y0 + h <= height and x0 + w <= width:
        return arr[y0 : y0 + h, x0 : x0 + w]
    out = np.full((h, w) + arr.shape[2:], fill, dtype=arr.dtype)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + h, height), min(x0 + w, width)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    # float32 H x W arrays become mode "F" images: resized in float precision
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))


# ----------------------------------------------------------------------------- dataset


class ImageFolderDataset(Dataset):
    """Images of one split folder, optionally paired with ground-truth depth.

    Args:
        split_dir: folder of images (searched recursively), or with ``has_depth`` the folder holding
            the image and depth sub-folders.
        image_size: output size ``S`` (square).
        crop: ``None``, an int (centre crop) or ``[y0, x0, h, w]`` (box crop), applied before resizing.
        flip: random horizontal flip with probability 0.5 (image and depth together).
        has_depth: load paired ground-truth depth.
        depth_dir_substitution, depth_filename_substitution: see :func:`find_depth_pairs`.
        min_depth, max_depth: depth decoding range.
        max_samples: keep only the first ``max_samples`` files (sorted order).
        seed: seed of the flip generator (combined with the worker seed in loader workers).

    Items: ``{"image": 3 x S x S float32 in [0, 1], "depth": S x S float32, "path": str}``.

    A file that cannot be decoded is skipped with a :class:`CorruptImageWarning` naming it, the next
    readable sample is returned instead, and :attr:`num_skipped` counts the unreadable files found,
    summed over loader workers (each worker process warns about and counts a bad file once; with
    several workers the same file may be found by more than one). A folder that disappears during a
    run is an error instead (:meth:`check_folders`).
    """

    def __init__(
        self,
        split_dir: str | Path,
        image_size: int = 64,
        crop: Crop = None,
        flip: bool = False,
        has_depth: bool = False,
        depth_dir_substitution: Sequence[str] = ("image", "depth"),
        depth_filename_substitution: Sequence[str] | None = ("image", "depth"),
        min_depth: float = 0.9,
        max_depth: float = 1.1,
        max_samples: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.split_dir = Path(split_dir)
        self.image_size = int(image_size)
        self.crop = normalize_crop(crop)
        self.flip = bool(flip)
        self.has_depth = bool(has_depth)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.seed = int(seed)
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"split folder '{self.split_dir}' does not exist (see data/README.md)")
        if self.has_depth:
            self.samples = find_depth_pairs(
                self.split_dir, depth_dir_substitution, depth_filename_substitution
            )
        else:
            self.samples = [(p, None) for p in find_images(self.split_dir)]
        if not self.samples:
            raise FileNotFoundError(
                f"no images found in '{self.split_dir}' (searched recursively for {', '.join(IMAGE_EXTENSIONS)})"
            )
        if max_samples is not None:
            self.samples = self.samples[: int(max_samples)]
        # Shared across DataLoader workers (fork or spawn) so the main process sees every skip.
        self._skip_counter = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad: set[int] = set()  # unreadable samples found by this process
        self._rng: torch.Generator | None = None
        self._rng_owner: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_skipped(self) -> int:
        """How many unreadable files were skipped so far (all workers together)."""
        return int(self._skip_counter.item())

    @property
    def paths(self) -> list[Path]:
        return [s[0] for s in self.samples]

    def _generator(self) -> torch.Generator:
        # One generator per process: seeded by the loader's per-worker seed (itself drawn from the
        # loader's seeded generator) in workers, by ``seed`` in the main process.
        info = get_worker_info()
        owner = (os.getpid(), info.id if info is not None else -1)
        if self._rng is None or self._rng_owner != owner:
            seed = (info.seed if info is not None else self.seed) % (2**63)
            self._rng = torch.Generator().manual_seed(seed)
            self._rng_owner = owner
        return self._rng

    def load(self, index: int, flip: bool = False) -> dict:
        """Load and transform sample ``index`` (no skipping).

        Raises:
            ImageLoadError: the image could not be used (the message names it and says why).
            UnreadableFileError: the depth file could not be decoded (likewise).
        """
        img_path, depth_path = self.samples[index]
        image = load_image(img_path)
        height, width = image.shape[:2]
        box = crop_box(height, width, self.crop)
        image = _resize(crop_array(image, box, 0), self.image_size)
        if flip:
            image = image[:, ::-1]
        out = {"image": torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0}
        if depth_path is not None:
            try:
                depth = load_depth(depth_path, self.min_depth, self.max_depth)
            except (OSError, ValueError, cv2.error) as err:
                raise UnreadableFileError(depth_path, err) from err
            if depth.shape != (height, width):
                # Depth maps of another resolution are scaled to the image before cropping.
                depth = np.asarray(
                    Image.fromarray(depth.astype(np.float32)).resize(
                        (width, height), Image.Resampling.BILINEAR
                    )
                )
            depth = _resize(crop_array(depth, box, self.max_depth), self.image_size)
            if flip:
                depth = depth[:, ::-1]
            out["depth"] = torch.from_numpy(np.array(depth, dtype=np.float32))
        out["path"] = str(img_path)
        return out

    def check_folders(self, index: int) -> None:
        """Raise :class:`FileNotFoundError` when the split folder, or a folder of sample ``index``, is gone
        (a dataset unmounted, moved or deleted during a run): an error, not one skip per file."""
        img_path, depth_path = self.samples[index]
        folders = [self.split_dir, img_path.parent] + ([depth_path.parent] if depth_path is not None else [])
        for folder in dict.fromkeys(folders):
            if not folder.is_dir():
                raise FileNotFoundError(
                    errno.ENOENT, f"dataset folder '{folder}' has disappeared since the run started (unmounted, "
                                  f"moved or deleted?); it held files of the {len(self)} samples listed in "
                                  f"'{self.split_dir}'")

    def __getitem__(self, index: int) -> dict:
        flip = self.flip and bool(torch.rand((), generator=self._generator()) < 0.5)
        n = len(self.samples)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad:
                continue
            try:
                return self.load(i, flip=flip)
            except (ImageLoadError, UnreadableFileError) as err:
                self.check_folders(i)
                self._bad.add(i)
                self._skip_counter += 1
                warnings.warn(
                    f"skipping unreadable file {err.path} ({err.reason}); {self.num_skipped} skipped so far",
                    CorruptImageWarning,
                    stacklevel=2,
                )
        raise RuntimeError(f"no readable sample left in '{self.split_dir}' ({n} tried)")
