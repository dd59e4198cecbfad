"""Benchmark the export pipeline on CPU: model pass + mesh build + file writes, no video.

    python scripts/bench_export.py [--repeats 15] [--images 64] [--batch-size 16] [--threads N]

A randomly initialised full-width model (``Unsup3D()``, 64x64; weights do not change the cost) exports
(1) single images at batch 1, timed end to end (load + model + mesh + writes; the median over
``--repeats`` images) with a per-stage breakdown, and (2) a folder of ``--images`` 64x64 photos
(``shared/photos`` when present, otherwise generated) at ``--batch-size``, reported as images/s. Model
construction and loading are excluded. Target: under 100 ms per image on a 2-core CPU.

Prints a table and a final line ``per_image_ms=... folder_images_per_s=... target_ms=100 PASS|FAIL``.
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

try:
    import unsup3d  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    ap.add_argument("--repeats", type=int, default=15, help="batch-1 images timed (median reported)")
    ap.add_argument("--images", type=int, default=64, help="images in the folder run")
    ap.add_argument("--batch-size", type=int, default=16, help="batch size of the folder run")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--width", type=float, default=1.0, help="network width (1.0 = the real model)")
    args = ap.parse_args(argv)

    import torch

    from unsup3d.export import ExportOptions, FactorArrays, export_factors, export_images, prepare_input
    from unsup3d.io import atomic_dir
    from unsup3d.model import Unsup3D

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Unsup3D(width=args.width, lam_perc=0.0).eval()
    size = int(model.hparams.image_size)
    opts = ExportOptions(progress=False, overwrite=True, batch_size=1)

    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tmp = Path(tmp)
        images = make_images(tmp / "images", max(args.images, args.repeats))
        out = tmp / "out"
        # warm-up (first calls pay for lazy imports, allocator growth, cv2/PIL plugin loading)
        for p in images[:2]:
            export_images(model, [p], out, opts)

        # (1) batch 1, end to end, and the stages separately on the same images
        cpu0 = time.process_time()
        total, t_load, t_model, t_mesh, t_write = [], [], [], [], []
        for k, p in enumerate(images[: args.repeats]):
            t0 = time.perf_counter()
            summary = export_images(model, [p], out / f"run{k}", opts)  # a fresh folder, as in real use
            total.append(time.perf_counter() - t0)
            assert not summary.failed, summary.report()

            t0 = time.perf_counter()
            prep = prepare_input(p, size)
            t1 = time.perf_counter()
            x = torch.from_numpy(np.array(prep.image)).permute(2, 0, 1)[None].contiguous().float().div(255)
            with torch.inference_mode():
                factors = model(x)
            t2 = time.perf_counter()
            batch = FactorArrays(factors, model, opts)  # mesh vertices (torch, batched) + numpy conversions
            t3 = time.perf_counter()
            with atomic_dir(out / f"stages{k}", durable=False) as d:  # as export_images does
                export_factors(factors, 0, d, opts, model, batch=batch)
            t4 = time.perf_counter()
            t_load.append(t1 - t0)
            t_model.append(t2 - t1)
            t_mesh.append(t3 - t2)
            t_write.append(t4 - t3)

        cpu_b1 = (time.process_time() - cpu0) / (2 * args.repeats)  # both passes did the same work

        # (2) a folder at the batch size
        folder_opts = ExportOptions(progress=False, overwrite=True, batch_size=args.batch_size)
        paths = images[: args.images]
        t0 = time.perf_counter()
        summary = export_images(model, paths, tmp / "folder_out", folder_opts)
        folder_s = time.perf_counter() - t0
        assert len(summary.ok) == len(paths), summary.report()

    per_image = _median_ms(total)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ips = len(paths) / folder_s
    print(f"export benchmark: {size}x{size}, width {args.width}, torch threads {torch.get_num_threads()}, "
          f"formats {','.join(opts.formats)}, no video; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'stage (batch 1, median)':<36}{'ms':>10}")
    for name, ts in (("load + crop + resize", t_load), ("model forward", t_model),
                     ("mesh vertices + numpy (FactorArrays)", t_mesh), ("export_factors (mesh + all files)", t_write),
                     ("end to end (export_images)", total)):
        print(f"{name:<36}{_median_ms(ts):>10.1f}")
    print(f"{'CPU time per image, batch 1 (all threads)':<36}{1000 * cpu_b1:>10.1f}")
    print(f"{f'folder of {len(paths)} (batch {args.batch_size})':<36}{folder_s * 1000:>10.1f}  "
          f"= {1000 * folder_s / len(paths):.1f} ms/image, {ips:.1f} images/s")
    ok = per_image < TARGET_MS
    print(f"per_image_ms={per_image:.1f} folder_images_per_s={ips:.1f} target_ms={TARGET_MS:.0f} "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
