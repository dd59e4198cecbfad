"""``unsup3d-make-synthetic``: generate the procedural synthetic face dataset (no download needed).

    unsup3d-make-synthetic --output data/synthetic --num-train 10000 --num-val 500 --num-test 1000 \\
        --image-size 64 --seed 0 [--variant head|face|deep|flat|wide|clutter]

``--variant`` picks one of the named variants (``--list-variants`` prints them with their settings);
``--yaw-range``, ``--pitch-range`` and ``--roll-range`` override the variant's pose ranges.

Writes the synface layout ``<output>/{train,val,test}/{image,depth}/`` plus ``<output>/<split>/params.json``
(see :mod:`unsup3d.data.synthetic` and data/README.md). ``scripts/make_synthetic.py`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .params import VARIANTS, variant_config
from .write import generate_dataset

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unsup3d-make-synthetic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="data/synthetic", help="output folder (default: data/synthetic)")
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supersample", type=int, default=2, help="render at this factor, then area-average")
    parser.add_argument("--variant", default="head", choices=list(VARIANTS),
                        help="named data variant (default: head, the whole-head faces); see --list-variants")
    parser.add_argument("--list-variants", action="store_true", help="print the variants' settings and exit")
    parser.add_argument("--yaw-range", type=float, default=None,
                        help="yaw drawn from +-this many degrees (default: the variant's; head: 50)")
    parser.add_argument("--pitch-range", type=float, default=None, help="default: the variant's (head: 20)")
    parser.add_argument("--roll-range", type=float, default=None, help="default: the variant's (head: 10)")
    parser.add_argument("--chunk-size", type=int, default=256, help="samples rendered at a time")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a bad option)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_variants:
        for name, settings in VARIANTS.items():
            print(f"{name:8s} " + (", ".join(f"{k}={v}" for k, v in settings.items()) or "(the defaults)"))
        return 0
    for name in ("num_train", "num_val", "num_test"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.image_size < 8 or args.supersample < 1:
        parser.error("--image-size must be >= 8 and --supersample >= 1")
    poses = {k: getattr(args, k) for k in ("yaw_range", "pitch_range", "roll_range") if getattr(args, k) is not None}
    cfg = variant_config(args.variant, image_size=args.image_size, supersample=args.supersample, **poses)
    start = time.time()
    out = generate_dataset(
        args.output,
        args.num_train,
        args.num_val,
        args.num_test,
        args.seed,
        cfg,
        args.chunk_size,
        progress=not args.quiet,
    )
    total = args.num_train + args.num_val + args.num_test
    if not args.quiet:
        dt = time.time() - start
        print(f"wrote {total} samples to {out} in {dt:.1f}s ({total / max(dt, 1e-9) * 60:.0f} per minute)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
