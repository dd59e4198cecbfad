"""A folder of one's own photos made into a training set (``unsup3d-prepare INPUT_DIR OUTPUT_ROOT``).

Every image under ``INPUT_DIR`` (searched recursively with :func:`unsup3d.files.images.find_images`: the
formats ``unsup3d-export`` reads, hidden names skipped) is loaded (:func:`unsup3d.files.images.load_image`:
EXIF orientation, transparency, 16-bit) and cropped to a ``size x size`` square:

* ``face`` (the default, for human faces): around the largest face the project's detector finds (OpenCV
  Haar cascade, :func:`unsup3d.data.crops.detect_face_box`) with the margins of ``unsup3d-export
  --detect-face`` (:func:`unsup3d.data.crops.prepare_input`); photos without a face are left out and listed;
* ``center``: the centre square (objects, animals: anything the face detector does not know);
* ``box=x,y,w,h``: the square of side ``max(w, h)`` centred on that box, in the photo's pixels as viewers
  show it, edge-replicated where it leaves the photo (a fixed framing, like the original's syncar crop).

Near-duplicates are dropped (the same photo twice, re-encoded or resized: a 64-bit difference hash of
the crop within :attr:`PrepareOptions.duplicate_bits` bits and 8x8 colour thumbnails within
:data:`THUMB_TOLERANCE`; the first in path order is kept). The kept crops are split into
``train``/``val``/``test`` by a seeded order (the SHA-256 of the seed and each photo's relative path,
so the same seed and photos give the same split, and adding photos moves few others).

``OUTPUT_ROOT/{train,val,test}/<relative path>.png`` is the layout ``dataset=folder`` (and
``experiment=folder_cpu``) reads; ``OUTPUT_ROOT/prepare.json`` records the options, the split of every
photo and every file left out with the reason. The whole folder is built next to ``OUTPUT_ROOT`` and
renamed into place when complete (:func:`unsup3d.files.atomic.atomic_dir`), so an interrupted run leaves the
previous result intact; running it again rebuilds it, or says it is up to date when neither the photos
nor the options changed. A non-empty ``OUTPUT_ROOT`` that this command did not write is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from unsup3d.files.atomic import atomic_dir, atomic_save_json
from unsup3d.files.images import IMAGE_EXTENSIONS, ImageLoadError, atomic_save_image, find_images, load_image

from .crops import FaceNotFoundError, crop_face, prepare_input, resize_for_model

__all__ = [
    "CROPS",
    "MANIFEST",
    "SPLITS",
    "THUMB_TOLERANCE",
    "DuplicateIndex",
    "NotEnoughPhotosError",
    "OutputRootError",
    "PrepareOptions",
    "PrepareSummary",
    "crop_photo",
    "fingerprint",
    "parse_crop",
    "prepare_folder",
    "split_counts",
]

CROPS = ("face", "center", "box")
SPLITS = ("train", "val", "test")
#: The record of a prepared folder (also how a re-run recognises a folder it may replace).
MANIFEST = "prepare.json"
_TOOL = "unsup3d-prepare"
#: Largest mean absolute difference (0..255) of two crops' 8x8 colour thumbnails that still counts as
#: a near-duplicate (the hash compares structure only: flat images of different colours share it).
THUMB_TOLERANCE = 6.0


class OutputRootError(ValueError):
    """The output folder cannot be used (not a folder, or a non-empty folder this command did not write)."""


class NotEnoughPhotosError(ValueError):
    """Too few photos were usable to fill the splits; nothing was written. ``summary`` says what was left
    out and why (:meth:`PrepareSummary.left_out_report`)."""

    def __init__(self, message: str, summary: PrepareSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class PrepareOptions:
    """How photos become crops.

    Attributes:
        size: side of the square crops in pixels.
        crop: ``face``, ``center`` or ``box`` (see the module docstring).
        box: ``(x, y, w, h)`` in pixels for ``crop="box"``.
        split: fractions of ``train``, ``val``, ``test`` (normalised to sum 1).
        seed: the split's seed.
        dedupe: drop near-duplicates.
        duplicate_bits: largest Hamming distance of two 64-bit difference hashes of near-duplicates.
    """

    size: int = 64
    crop: str = "face"
    box: tuple[int, int, int, int] | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    dedupe: bool = True
    duplicate_bits: int = 6

    def __post_init__(self) -> None:
        if int(self.size) < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if (self.crop == "box") != (self.box is not None):
            raise ValueError("a box (x, y, w, h) is given exactly when crop is 'box'")
        if self.box is not None and (len(self.box) != 4 or min(self.box[2:]) < 1):
            raise ValueError(f"box must be x, y, w, h with a positive width and height, got {self.box}")
        if len(self.split) != 3 or min(self.split) < 0 or sum(self.split) <= 0 or self.split[0] <= 0:
            raise ValueError(f"split must be three fractions train, val, test >= 0 with train > 0, got {self.split}")
        if not 0 <= int(self.duplicate_bits) < 32:
            raise ValueError(f"duplicate_bits must be in 0..31, got {self.duplicate_bits}")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        total = sum(self.split)
        out["split"] = [round(f / total, 6) for f in self.split]
        out["box"] = list(self.box) if self.box is not None else None
        return out


def parse_crop(text: str) -> tuple[str, tuple[int, int, int, int] | None]:
    """``face``, ``center`` or ``box=x,y,w,h`` -> ``(crop, box)``.

    Raises:
        ValueError: anything else (the message shows the accepted forms).
    """
    text = text.strip().lower()
    if text in ("face", "center", "centre"):
        return ("center" if text == "centre" else text), None
    m = re.fullmatch(r"box\s*[=:]\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(\d+)\s*,\s*(\d+)", text)
    if m is None or min(int(m.group(3)), int(m.group(4))) < 1:
        raise ValueError(f"expected face, center or box=x,y,w,h (pixels, positive w and h), got {text!r}")
    return "box", tuple(int(v) for v in m.groups())


def crop_photo(path: str | os.PathLike, options: PrepareOptions) -> np.ndarray:
    """Load one photo and cut its ``size x size`` crop as ``options`` says.

    Returns:
        ``size x size x 3`` uint8 RGB.

    Raises:
        unsup3d.files.images.ImageLoadError: unreadable, not an image, truncated, too small or too large.
        unsup3d.data.crops.FaceNotFoundError: ``crop="face"`` and no face was found.
        ValueError: ``crop="box"`` and the box lies outside the photo.
    """
    size = int(options.size)
    if options.crop in ("face", "center"):
        return prepare_input(path, size, detect_face=options.crop == "face").image
    img = load_image(path)  # full resolution: the box is in the photo's pixels
    x, y, w, h = options.box
    try:
        square = crop_face(img, (x, y, w, h), scale=1.0, shift=0.0)  # the square of side max(w, h) on the box
    except ValueError:
        raise ValueError(f"the box {x},{y},{w},{h} lies outside the {img.shape[1]}x{img.shape[0]} photo") from None
    return np.ascontiguousarray(resize_for_model(square, size), dtype=np.uint8)


def fingerprint(image: np.ndarray) -> tuple[int, np.ndarray]:
    """The near-duplicate fingerprint of a crop.

    Args:
        image: ``H x W x 3`` uint8 RGB.

    Returns:
        ``(hash, thumb)``: the 64-bit difference hash (gray 9x8, one bit per horizontal neighbour pair:
        brighter to the right), and the ``8 x 8 x 3`` float32 colour thumbnail.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    value = int(np.packbits(bits).view(">u8")[0])
    thumb = cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32)
    return value, thumb


class DuplicateIndex:
    """Near-duplicate lookup among fingerprints (:func:`fingerprint`) in about constant time per photo.

    The 64 hash bits are cut into ``max_bits + 1`` chunks; two hashes within ``max_bits`` bits agree on
    at least one chunk, so only the photos sharing a chunk are compared.

    Args:
        max_bits: largest Hamming distance of near-duplicates.
        thumb_tolerance: largest mean absolute thumbnail difference (0..255) of near-duplicates.
    """

    def __init__(self, max_bits: int = 6, thumb_tolerance: float = THUMB_TOLERANCE) -> None:
        self.max_bits, self.thumb_tolerance = int(max_bits), float(thumb_tolerance)
        k = self.max_bits + 1
        edges = [round(64 * j / k) for j in range(k + 1)]
        self._masks = [((1 << (hi - lo)) - 1) << lo for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
        self._buckets: list[dict[int, list[int]]] = [{} for _ in self._masks]
        self._items: list[tuple[int, np.ndarray, Any]] = []

    def find(self, value: int, thumb: np.ndarray) -> Any | None:
        """The key of an indexed near-duplicate of ``(value, thumb)``, or None."""
        seen: set[int] = set()
        for mask, buckets in zip(self._masks, self._buckets):
            for i in buckets.get(value & mask, ()):
                if i in seen:
                    continue
                seen.add(i)
                other, other_thumb, key = self._items[i]
                if (bin(value ^ other).count("1") <= self.max_bits
                        and float(np.abs(thumb - other_thumb).mean()) <= self.thumb_tolerance):
                    return key
        return None

    def add(self, value: int, thumb: np.ndarray, key: Any) -> None:
        """Index a fingerprint under ``key`` (what :meth:`find` returns for its near-duplicates)."""
        i = len(self._items)
        self._items.append((value, thumb, key))
        for mask, buckets in zip(self._masks, self._buckets):
            buckets.setdefault(value & mask, []).append(i)


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """``(train, val, test)`` counts of ``n`` photos for ``fractions`` (any positive scale).

    ``val`` and ``test`` are rounded, but every split with a positive fraction gets at least one photo
    when ``n`` allows it; ``train`` takes the rest.

    Raises:
        ValueError: fewer photos than splits with a positive fraction.
    """
    total = float(sum(fractions))
    wanted = [f > 0 for f in fractions]
    if n < sum(wanted):
        names = ", ".join(s for s, w in zip(SPLITS, wanted) if w)
        raise ValueError(f"{n} usable photo(s) cannot fill the {sum(wanted)} splits {names}: at least "
                         f"{sum(wanted)} are needed")
    val, test = (max(1, round(n * f / total)) if f > 0 else 0 for f in fractions[1:])
    while n - val - test < 1:  # train keeps at least one photo
        if val >= test and val > 1:
            val -= 1
        else:
            test -= 1
    return n - val - test, val, test


def _split_rank(seed: int, relative: str) -> str:
    return hashlib.sha256(f"{seed}/{relative}".encode()).hexdigest()


def _output_names(relatives: list[str]) -> dict[str, str]:
    """Source path (relative, POSIX) -> output path (relative, ``.png``): the same path with the
    extension replaced, or ``<stem>_<ext>.png`` where two sources would share a name."""
    plain = {rel: str(Path(rel).with_suffix(".png").as_posix()) for rel in relatives}
    counts: dict[str, int] = {}
    for out in plain.values():
        counts[out] = counts.get(out, 0) + 1
    names = {}
    for rel, out in plain.items():
        if counts[out] > 1:
            p = Path(rel)
            out = str(p.with_name(f"{p.stem}_{p.suffix.lstrip('.').lower()}.png").as_posix())
        names[rel] = out
    return names


@dataclass
class PrepareSummary:
    """What :func:`prepare_folder` did.

    Attributes:
        input_dir, output_root: the folders.
        options: the options.
        splits: split -> ``[(output path, source path), ...]`` (relative, POSIX).
        unreadable: ``[(source path, reason)]`` of files that could not be decoded.
        no_face: source paths without a detected face (``crop="face"``).
        failed: ``[(source path, reason)]`` of photos whose crop failed otherwise (a box outside them).
        duplicates: ``[(source path, kept source path)]`` of dropped near-duplicates.
        up_to_date: nothing was written: the folder already held this result.
    """

    input_dir: Path
    output_root: Path
    options: PrepareOptions
    splits: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    up_to_date: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(self.splits.get(s, [])) for s in SPLITS}

    @property
    def num_prepared(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": _TOOL,
            "input_dir": str(self.input_dir),
            "options": self.options.to_json(),
            "counts": self.counts,
            "splits": {s: [{"file": out, "source": src} for out, src in self.splits.get(s, [])] for s in SPLITS},
            "unreadable": [{"source": p, "reason": r} for p, r in self.unreadable],
            "no_face": self.no_face,
            "failed": [{"source": p, "reason": r} for p, r in self.failed],
            "duplicates": [{"source": p, "duplicate_of": k} for p, k in self.duplicates],
        }

    def report(self, max_listed: int = 20) -> str:
        """The summary printed at the end: counts, then every file left out (up to ``max_listed`` of each
        kind; all of them are in ``prepare.json``)."""
        o = self.options
        c = self.counts
        crop = f"box {','.join(map(str, o.box))}" if o.crop == "box" else o.crop
        head = (f"{'up to date' if self.up_to_date else 'prepared'}: {self.num_prepared} crops of "
                f"{o.size}x{o.size} ({crop}) in '{self.output_root}': train {c['train']}, val {c['val']}, "
                f"test {c['test']} (seed {o.seed})")
        return "\n".join([head, self.left_out_report(max_listed)]).rstrip("\n")

    def left_out_report(self, max_listed: int = 20) -> str:
        """The files left out, by reason (up to ``max_listed`` of each; all of them in ``prepare.json``)."""
        lines: list[str] = []

        def listing(title: str, items: list[str]) -> None:
            if not items:
                return
            lines.append(f"{len(items)} {title}:")
            lines.extend(f"  {item}" for item in items[:max_listed])
            if len(items) > max_listed:
                lines.append(f"  ... and {len(items) - max_listed} more (all in {self.output_root / MANIFEST})")

        listing("near-duplicate(s) dropped", [f"{p} (same as {k})" for p, k in self.duplicates])
        listing("unreadable file(s) left out", [f"{p}: {r}" for p, r in self.unreadable])
        listing("photo(s) without a face left out", self.no_face)
        listing("photo(s) that could not be cropped", [f"{p}: {r}" for p, r in self.failed])
        return "\n".join(lines)


def _inputs_digest(input_dir: Path, paths: list[Path]) -> str:
    """Changes when a photo is added, removed, renamed or modified."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(input_dir).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_manifest(output_root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((output_root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == _TOOL else None


def _check_output_root(output_root: Path, input_dir: Path) -> dict[str, Any] | None:
    """The manifest of a folder this command wrote earlier (None for a new or empty folder).

    Raises:
        OutputRootError: a file, the input folder itself or a folder holding it, or a non-empty folder
            without our manifest.
    """
    if output_root.resolve() == input_dir.resolve():
        raise OutputRootError(f"the output folder '{output_root}' is the input folder; choose another one")
    if output_root.resolve() in input_dir.resolve().parents:
        raise OutputRootError(f"the input folder '{input_dir}' lies inside the output folder '{output_root}', "
                              "which is replaced as a whole; choose an output folder outside it")
    if output_root.exists() and not output_root.is_dir():
        raise OutputRootError(f"the output '{output_root}' exists and is not a folder")
    if not output_root.is_dir() or not any(output_root.iterdir()):
        return None
    manifest = _read_manifest(output_root)
    if manifest is None:
        raise OutputRootError(
            f"the output folder '{output_root}' is not empty and was not written by {_TOOL} (no {MANIFEST}); "
            "choose a new or empty folder (it is replaced as a whole)")
    return manifest


def prepare_folder(
    input_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    options: PrepareOptions | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Turn the photos under ``input_dir`` into ``output_root/{train,val,test}/`` crops (module docstring).

    Args:
        input_dir: the photos (searched recursively; ``output_root`` is left out if it lies inside).
        output_root: the dataset folder to create or replace (only one this function wrote, or an empty one).
        options: see :class:`PrepareOptions`.
        progress: a progress bar on stderr.

    Returns:
        The :class:`PrepareSummary` (also in ``output_root/prepare.json``).

    Raises:
        FileNotFoundError: ``input_dir`` is not a folder.
        OutputRootError: ``output_root`` cannot be used.
        ValueError: no image files, or too few usable photos to fill the splits (nothing is written).
    """
    options = options or PrepareOptions()
    input_dir, output_root = Path(input_dir), Path(output_root)
    paths = find_images(input_dir)
    inside = output_root.resolve()
    paths = [p for p in paths if inside not in p.resolve().parents]
    previous = _check_output_root(output_root, input_dir)
    if not paths:
        raise ValueError(f"no image files in '{input_dir}' (searched recursively for {' '.join(IMAGE_EXTENSIONS)})")
    digest = _inputs_digest(input_dir, paths)
    if (previous is not None and previous.get("inputs_digest") == digest
            and previous.get("options") == options.to_json()):
        return _summary_from_manifest(previous, input_dir, output_root, options)

    summary = PrepareSummary(input_dir=input_dir, output_root=output_root, options=options)
    relatives = [p.relative_to(input_dir).as_posix() for p in paths]
    names = _output_names(relatives)
    index = DuplicateIndex(options.duplicate_bits)
    kept: list[str] = []
    with atomic_dir(output_root, overwrite=True) as tmp:
        pool = tmp / ".crops"
        for path, rel in tqdm(list(zip(paths, relatives)), desc="preparing", unit="photo", disable=not progress,
                              file=sys.stderr):
            try:
                crop = crop_photo(path, options)
            except ImageLoadError as exc:
                summary.unreadable.append((rel, exc.reason))
                continue
            except FaceNotFoundError:
                summary.no_face.append(rel)
                continue
            except ValueError as exc:
                summary.failed.append((rel, str(exc)))
                continue
            if options.dedupe:
                value, thumb = fingerprint(crop)
                same = index.find(value, thumb)
                if same is not None:
                    summary.duplicates.append((rel, same))
                    continue
                index.add(value, thumb, rel)
            atomic_save_image(pool / f"{len(kept)}.png", crop, durable=False)
            kept.append(rel)
        try:
            counts = split_counts(len(kept), options.split)
        except ValueError as exc:  # nothing is written: the temporary folder is removed
            raise NotEnoughPhotosError(f"{exc} ({len(paths)} image file(s) in '{input_dir}')", summary) from None
        order = sorted(range(len(kept)), key=lambda i: _split_rank(options.seed, kept[i]))
        bounds = np.cumsum([0, counts[2], counts[1], counts[0]])  # test, val, train in rank order
        for split, lo, hi in zip(("test", "val", "train"), bounds[:-1], bounds[1:]):
            chosen = sorted(order[lo:hi], key=lambda i: kept[i])
            summary.splits[split] = [(names[kept[i]], kept[i]) for i in chosen]
            for i in chosen:
                dest = tmp / split / names[kept[i]]
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(pool / f"{i}.png", dest)
        pool.rmdir()
        atomic_save_json(tmp / MANIFEST, {**summary.to_json(), "inputs_digest": digest}, durable=False)
    return summary


def _summary_from_manifest(manifest: dict[str, Any], input_dir: Path, output_root: Path,
                           options: PrepareOptions) -> PrepareSummary:
    return PrepareSummary(
        input_dir=input_dir, output_root=output_root, options=options,
        splits={s: [(e["file"], e["source"]) for e in manifest["splits"].get(s, [])] for s in SPLITS},
        unreadable=[(e["source"], e["reason"]) for e in manifest.get("unreadable", [])],
        no_face=list(manifest.get("no_face", [])),
        failed=[(e["source"], e["reason"]) for e in manifest.get("failed", [])],
        duplicates=[(e["source"], e["duplicate_of"]) for e in manifest.get("duplicates", [])],
        up_to_date=True,
    )
