#!/usr/bin/env python
"""Build square CelebA face crops in the train/val/test layout the datamodule reads.

CelebA cannot be downloaded by script (it is distributed through Google Drive / Baidu after
accepting its terms): get it from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, then run e.g.

    python scripts/prepare_celeba.py --images CelebA/img_celeba \\
        --partition CelebA/Eval/list_eval_partition.txt \\
        --landmarks CelebA/Anno/list_landmarks_celeba.txt --output data/celeba_cropped --size 128

Face boxes come from one of (first given wins):
  --crop-boxes FILE  the original release's box list (``celeba_crop_bbox.txt`` read by its
                     data/celeba_crop.py: rows ``name split x0 y0 w h``; reproduces its crops)
  --landmarks FILE   the 5 official landmarks (list_landmarks_celeba.txt for img_celeba,
                     list_landmarks_align_celeba.txt for img_align_celeba): a square box centred
                     between the eyes and the mouth, side = --scale x eye-to-mouth distance
  --bbox FILE        the official boxes (list_bbox_celeba.txt, img_celeba only): a square box
                     around the box centre, side = --bbox-scale x max(w, h)

The partition (list_eval_partition.txt: ``name 0|1|2`` for train/val/test) decides the split.
Crops that leave the image are padded by replicating the border (as the original script does),
then resized with area averaging to --size (128 in the original; the model resizes to 64).
Output: ``<output>/{train,val,test}/<name>.png``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

SPLITS = {"0": "train", "1": "val", "2": "test"}


def read_annotation(path: str | Path) -> dict[str, list[str]]:
    """Rows of a CelebA annotation file keyed by image name.

    Accepts the official formats (first line the count, second the column header, then rows) and
    header-less files (list_eval_partition.txt, the original release's box list).
    """
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"annotation file '{path}' is empty")
    if len(lines[0]) == 1 and lines[0][0].isdigit():
        lines = lines[2:]  # count, then header
    rows = {}
    for ln in lines:
        if len(ln) < 2:
            raise ValueError(f"annotation file '{path}': malformed row {' '.join(ln)!r}")
        rows[ln[0]] = ln[1:]
    return rows


def box_from_landmarks(lm: np.ndarray, scale: float = 2.6, shift: float = 0.1) -> tuple[int, int, int, int]:
    """Square ``(x0, y0, w, h)`` from 5 landmarks ``[le, re, nose, lm, rm] x (x, y)``.

    Centre: midway between the eye centre and the mouth centre, moved up by ``shift`` x the
    eye-to-mouth distance; side: ``scale`` x that distance (at least ``scale`` x 0.9 x eye distance,
    which keeps profile faces from shrinking).
    """
    eyes, mouth = lm[:2].mean(0), lm[3:5].mean(0)
    d = max(float(np.linalg.norm(mouth - eyes)), 0.9 * float(np.linalg.norm(lm[1] - lm[0])), 1.0)
    centre = (eyes + mouth) / 2 - np.array([0.0, shift * d])
    side = round(float(scale * d))
    return round(float(centre[0]) - side / 2), round(float(centre[1]) - side / 2), side, side


def box_from_bbox(x0: float, y0: float, w: float, h: float, scale: float = 1.0) -> tuple[int, int, int, int]:
    """Square box around the centre of an official CelebA box, side ``scale * max(w, h)``."""
    side = round(float(scale * max(w, h)))
    cx, cy = x0 + w / 2, y0 + h / 2
    return round(float(cx) - side / 2), round(float(cy) - side / 2), side, side


def crop_square(im: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box = (x0, y0, w, h)`` from ``im`` with border replication outside, resize to ``size``."""
    x0, y0, w, h = box
    pad = max(0, -x0, -y0, x0 + w - im.shape[1], y0 + h - im.shape[0])
    if pad:
        im = cv2.copyMakeBorder(im, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = im[y0 : y0 + h, x0 : x0 + w]
    interp = cv2.INTER_AREA if w > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def _job(args) -> str | None:
    src, dst, box, size = args
    im = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if im is None:
        return f"cannot read '{src}'"
    if box[2] < 10 or box[3] < 10:
        return f"box {box} of '{src}' is too small"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dst), crop_square(im, box, size)):
        return f"cannot write '{dst}'"
    return None


def build_jobs(args) -> list[tuple]:
    images = Path(args.images)
    if not images.is_dir():
        raise FileNotFoundError(
            f"CelebA image folder '{images}' does not exist (img_celeba or img_align_celeba)"
        )
    boxes, splits = {}, {}
    if args.crop_boxes:
        for name, row in read_annotation(args.crop_boxes).items():
            splits[name] = row[0]
            x0, y0, w, h = (int(float(v)) for v in row[1:5])
            boxes[name] = (x0, y0, w, h)
    else:
        if not args.partition:
            raise ValueError("--partition (list_eval_partition.txt) is needed with --landmarks or --bbox")
        splits = {name: row[0] for name, row in read_annotation(args.partition).items()}
        if args.landmarks:
            for name, row in read_annotation(args.landmarks).items():
                lm = np.asarray([float(v) for v in row[:10]]).reshape(5, 2)
                boxes[name] = box_from_landmarks(lm, args.scale, args.shift)
        elif args.bbox:
            for name, row in read_annotation(args.bbox).items():
                boxes[name] = box_from_bbox(*(float(v) for v in row[:4]), scale=args.bbox_scale)
        else:
            raise ValueError("give one of --crop-boxes, --landmarks or --bbox")
    out = Path(args.output)
    jobs = []
    for name in sorted(boxes):
        split = SPLITS.get(splits.get(name, ""))
        if split is None:
            continue
        jobs.append((images / name, out / split / (Path(name).stem + ".png"), boxes[name], args.size))
    if args.limit:
        jobs = jobs[: args.limit]
    if not jobs:
        raise ValueError("no image has both a box and a partition entry: check the annotation files")
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="img_celeba or img_align_celeba folder")
    p.add_argument("--partition", help="list_eval_partition.txt")
    p.add_argument("--landmarks", help="list_landmarks_celeba.txt or list_landmarks_align_celeba.txt")
    p.add_argument("--bbox", help="list_bbox_celeba.txt")
    p.add_argument("--crop-boxes", help="the original release's celeba_crop_bbox.txt")
    p.add_argument("--output", default="data/celeba_cropped")
    p.add_argument("--size", type=int, default=128, help="output size in pixels (64 or 128)")
    p.add_argument("--scale", type=float, default=2.6, help="box side / eye-to-mouth distance")
    p.add_argument("--shift", type=float, default=0.1, help="upward centre shift / eye-to-mouth distance")
    p.add_argument("--bbox-scale", type=float, default=1.0, help="box side / max(w, h) of the official box")
    p.add_argument("--limit", type=int, default=0, help="process only the first N images (quick test)")
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args(argv)
    try:
        jobs = build_jobs(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failed = 0
    chunks = max(1, len(jobs) // (max(args.workers, 1) * 16))
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = pool.map(_job, jobs, chunksize=chunks)
            failed = _report(results, len(jobs))
    else:
        failed = _report(map(_job, jobs), len(jobs))
    print(f"wrote {len(jobs) - failed} crops to {args.output} ({failed} skipped)")
    return 0 if failed < len(jobs) else 1


def _report(results, total: int) -> int:
    failed = 0
    for i, err in enumerate(results, 1):
        if err:
            failed += 1
            print(f"warning: skipped: {err}", file=sys.stderr)
        if i % 5000 == 0:
            print(f"{i}/{total}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
