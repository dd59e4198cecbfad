"""Benchmark the export pipeline on CPU: a folder of photos through the model, meshes and every file.

    python scripts/bench_export.py [--images 64] [--batch-size 16] [--precision fp32|bf16|both]
                                   [--video-images 4] [--threads N] [--width 1.0]

A randomly initialised full-width model (``Unsup3D()``, 64x64; the weights do not change the cost)
exports a folder of ``--images`` 64x64 photos (``shared/photos`` when present, otherwise generated) at
``--batch-size``, without video, timed as a whole (load, model pass, meshes, every file); the model
pass alone is timed on the same batches in the same run, and its share is printed. Then
``--video-images`` photos are exported with the turntable and relighting videos at 256 px, and the
time per image that the videos add is printed. Targets (issue 12): <= 20 ms per image for the folder,
<= 0.5 s per image for the videos. Model construction and loading are excluded.

The last line is ``folder_ms_per_image=... model_share=... video_s_per_image=...``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_MS = 100.0
PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"


def make_images(folder: Path, n: int, size: int = 64) -> list[Path]:
    """``n`` PNGs in ``folder``: the shared 64x64 photos (cycled), or smooth random images without them."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    shared = sorted(PHOTOS.glob("*/*.png")) if PHOTOS.is_dir() else []
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"img_{i:03d}.png"
        if shared:
            shutil.copyfile(shared[i % len(shared)], p)
        else:
            low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC).save(p)
        out.append(p)
    return out


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64, help="images in the folder run")
    ap.add_argument("--batch-size", type=int, default=16, help="batch size of the folder run")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both",
                    help="the networks' precision (the export's --precision); both: one run each")
    ap.add_argument("--video-images", type=int, default=4, help="images exported with videos")
    ap.add_argument("--repeats", type=int, default=3, help="folder runs (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--width", type=float, default=1.0, help="network width (1.0 = the real model)")
    args = ap.parse_args(argv)

    import torch

    from unsup3d.export import ExportOptions, export_images, model_batch, prepare_input
    from unsup3d.model import Unsup3D

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Unsup3D(width=args.width, lam_perc=0.0).eval()
    size = model.core.image_size
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"export benchmark: {size}x{size}, width {args.width}, torch threads {torch.get_num_threads()}, "
          f"folder of {args.images} at batch {args.batch_size}; load average {load:.1f} on {os.cpu_count()} CPUs")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp / "images", max(args.images, args.video_images))[: args.images]
        batches = [model_batch([prepare_input(p, size).image for p in paths[s:s + args.batch_size]], "cpu")
                   for s in range(0, len(paths), args.batch_size)]
        for precision in precisions:
            opts = ExportOptions(progress=False, overwrite=True, batch_size=args.batch_size, precision=precision)
            export_images(model, paths[:2], tmp / "warm", opts)  # lazy imports, allocator, codecs
            folder = []
            for k in range(args.repeats):
                t0 = time.perf_counter()
                summary = export_images(model, paths, tmp / f"folder_{precision}_{k}", opts)
                folder.append(time.perf_counter() - t0)
                assert len(summary.ok) == len(paths), summary.report()

            def model_pass():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                            enabled=precision == "bf16"):
                    for batch in batches:
                        model(batch, reconstruct=False)

            model_pass()
            passes = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model_pass()
                passes.append(time.perf_counter() - t0)
            results[precision] = (statistics.median(folder) / len(paths), statistics.median(passes) / len(paths))
        video_s = float("nan")
        if args.video_images > 0:
            vpaths = paths[: args.video_images]
            plain = ExportOptions(progress=False, overwrite=True, batch_size=args.batch_size)
            video = ExportOptions(progress=False, overwrite=True, batch_size=args.batch_size, video=True)
            export_images(model, vpaths[:1], tmp / "warm_video", video)
            t0 = time.perf_counter()
            export_images(model, vpaths, tmp / "plain", plain)
            t1 = time.perf_counter()
            export_images(model, vpaths, tmp / "video", video)
            t2 = time.perf_counter()
            video_s = ((t2 - t1) - (t1 - t0)) / len(vpaths)

    print(f"{'precision':<10}{'ms / image (folder)':>22}{'model pass ms / image':>24}{'model share':>14}")
    for precision, (per_image, per_pass) in results.items():
        print(f"{precision:<10}{1000 * per_image:>22.1f}{1000 * per_pass:>24.1f}{per_pass / per_image:>14.2f}")
    print(f"turntable + shape turntable + relighting videos at 256 px, {args.video_images} images: "
          f"{video_s:.2f} s per image beyond the plain export")
    best = min(results.values())
    print(f"folder_ms_per_image={1000 * best[0]:.1f} model_share={best[1] / best[0]:.2f} "
          f"video_s_per_image={video_s:.2f} (targets <= 20 ms and <= 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
