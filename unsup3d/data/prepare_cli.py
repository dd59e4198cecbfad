"""``unsup3d-prepare``: a folder of one's own photos made into a training set (:mod:`unsup3d.data.prepare`).

    unsup3d-prepare ~/Pictures/faces data/my_faces                      # largest face, 64 px
    unsup3d-prepare ~/Pictures/cats data/my_cats --crop center --size 128
    unsup3d-prepare renders/ data/my_cars --crop box=8,14,100,100
    unsup3d-train experiment=folder_cpu dataset.root=data/my_faces
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .prepare import (
    MANIFEST,
    NotEnoughPhotosError,
    OutputRootError,
    PrepareOptions,
    parse_crop,
    prepare_folder,
)

__all__ = ["build_parser", "main"]


def _crop(text: str) -> tuple[str, tuple[int, int, int, int] | None]:
    try:
        return parse_crop(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected three fractions TRAIN,VAL,TEST (e.g. 0.8,0.1,0.1), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unsup3d-prepare",
        description="Make a folder of photos (searched recursively, every format unsup3d-export reads) into a "
                    "training set: OUTPUT_ROOT/{train,val,test}/ of square crops, near-duplicates dropped, a "
                    "seeded split, unreadable and face-less files named in the summary and in "
                    f"OUTPUT_ROOT/{MANIFEST}. Train on it with: unsup3d-train experiment=folder_cpu "
                    "dataset.root=OUTPUT_ROOT",
        epilog="The folder is built beside OUTPUT_ROOT and renamed into place when complete; running the command "
               "again rebuilds it (or says it is up to date). A non-empty OUTPUT_ROOT that unsup3d-prepare did not "
               "write is never replaced. Exit status: 0 when the splits were written, 1 when too few photos were "
               "usable, 2 for a bad option or folder.",
    )
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of photos (searched recursively)")
    p.add_argument("output_root", metavar="OUTPUT_ROOT", help="dataset folder to create (train/, val/, test/)")
    p.add_argument("--crop", type=_crop, default=("face", None), metavar="face|center|box=x,y,w,h",
                   help="face: around the largest human face (OpenCV Haar cascade; photos without one are left "
                        "out), the default; center: the centre square (animals, objects); box=x,y,w,h: the square "
                        "of side max(w,h) on that box, in the photos' pixels")
    p.add_argument("--size", type=int, default=64, metavar="N", help="side of the square crops in pixels (64)")
    p.add_argument("--split", type=_fractions, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST",
                   help="fractions of the splits (default 0.8,0.1,0.1; val and test get at least one photo each)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--keep-duplicates", action="store_true", help="keep near-duplicate photos")
    p.add_argument("--duplicate-bits", type=int, default=6, metavar="N",
                   help="near-duplicates differ in at most N of the 64 bits of their crops' difference hash (6)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see ``--help``)."""
    args = build_parser().parse_args(argv)
    (crop, box) = args.crop
    try:
        options = PrepareOptions(size=args.size, crop=crop, box=box, split=args.split, seed=args.seed,
                                 dedupe=not args.keep_duplicates, duplicate_bits=args.duplicate_bits)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = prepare_folder(args.input_dir, args.output_root, options, progress=not args.no_progress)
    except (FileNotFoundError, OutputRootError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NotEnoughPhotosError as exc:  # nothing was written
        left_out = exc.summary.left_out_report()
        print(f"{left_out}\nerror: {exc}" if left_out else f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # no image files
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.report())
    print(f"train on it: unsup3d-train experiment=folder_cpu dataset.root={args.output_root}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
