"""Writing the synthetic dataset: the image and depth files of every split, and its ``params.json``.

Output layout (the synface layout read by :class:`~unsup3d.data.Unsup3DDataModule`)::

    <output>/<split>/image/000000_image.png   8-bit RGB
    <output>/<split>/depth/000000_depth.png   16-bit gray, v = (max_depth - depth) / (max_depth - min_depth)
    <output>/<split>/params.json              settings + per-sample parameters

The parameters of every sample are saved in ``<split>/params.json``, and :func:`regenerate_sample`
re-derives any sample from them.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from unsup3d.files.atomic import atomic_save_text
from unsup3d.files.depth_encoding import depth_to_uint16
from unsup3d.files.images import atomic_save_image

from .params import SyntheticConfig, params_from_records, params_to_records, sample_params, split_seed
from .render import make_renderer, render_samples

__all__ = ["generate_dataset", "generate_split", "image_to_uint8", "load_split_params", "load_true_views",
           "regenerate_sample"]

FORMAT_VERSION = 1


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """``3 x H x W`` in [0, 1] -> ``H x W x 3`` uint8 (round to nearest)."""
    return (image.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def _write(path_img: Path, path_depth: Path, img: np.ndarray, dep: np.ndarray) -> None:
    """One sample's two PNGs, each atomically (never half-written) but not fsynced one by one: the
    split's ``params.json``, written durably after all of them, marks a complete split."""
    atomic_save_image(path_img, img, compress_level=1, durable=False)
    atomic_save_image(path_depth, dep, compress_level=1, durable=False)  # uint16: 16-bit gray PNG


def _dump_meta(meta: dict) -> str:
    """JSON with one line per sample (readable, compact)."""
    head = json.dumps({k: v for k, v in meta.items() if k != "samples"}, indent=1)
    lines = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in meta["samples"])
    return head[:-2] + ',\n "samples": [\n' + lines + "\n ]\n}\n"




def generate_split(
    output: str | Path,
    split: str,
    num: int,
    seed: int = 0,
    cfg: SyntheticConfig | None = None,
    chunk_size: int = 256,
    progress: bool = False,
) -> Path:
    """Write ``num`` samples of ``split`` under ``<output>/<split>`` (see module docstring).

    Returns:
        The split folder.
    """
    cfg = cfg or SyntheticConfig()
    folder = Path(output) / split
    (folder / "image").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(split_seed(seed, split))
    params = sample_params(num, generator, cfg)
    records = params_to_records(params)
    renderer = make_renderer(cfg, cfg.image_size * cfg.supersample)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = []
        for start in range(0, num, chunk_size):
            idx = slice(start, min(start + chunk_size, num))
            out = render_samples({k: v[idx] for k, v in params.items()}, cfg, renderer)
            for j in range(out["image"].shape[0]):
                i = start + j
                name_img, name_dep = f"image/{i:06d}_image.png", f"depth/{i:06d}_depth.png"
                records[i].update(
                    index=i,
                    image=name_img,
                    depth=name_dep,
                    mask_coverage=round(float(out["mask"][j].mean()), 4),
                )
                img = image_to_uint8(out["image"][j])
                dep = depth_to_uint16(out["depth"][j], cfg.min_depth, cfg.max_depth)
                futures.append(pool.submit(_write, folder / name_img, folder / name_dep, img, dep))
            if progress:
                print(f"  {split}: {idx.stop}/{num}", flush=True)
        for f in futures:
            f.result()
    meta = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "seed": int(seed),
        "generator_seed": split_seed(seed, split),
        "num_samples": num,
        "settings": asdict(cfg),
        "conventions": {
            "view": "[rx, ry, rz, tx, ty, tz], radians, R = Rz @ Ry @ Rx about (0, 0, rot_center_depth)",
            "light": "shading = ambient + diffuse * max(0, n . normalize(dx, dy, 1))",
            "depth_png": "16-bit, v = value / 65535, depth = max_depth - (max_depth - min_depth) * v",
            "shape_albedo_units": "u = x / head_ax, v = (y - head_cy) / head_ay, x right, y down in [-1, 1]",
        },
        "samples": records,
    }
    atomic_save_text(folder / "params.json", _dump_meta(meta))
    return folder


def generate_dataset(
    output: str | Path,
    num_train: int = 1000,
    num_val: int = 100,
    num_test: int = 100,
    seed: int = 0,
    cfg: SyntheticConfig | None = None,
    chunk_size: int = 256,
    progress: bool = False,
) -> Path:
    """Write the train/val/test splits of the synthetic dataset under ``output``."""
    for split, n in (("train", num_train), ("val", num_val), ("test", num_test)):
        generate_split(output, split, n, seed, cfg, chunk_size, progress)
    return Path(output)


def load_split_params(split_dir: str | Path) -> tuple[SyntheticConfig, list[dict]]:
    """Settings and per-sample records saved by :func:`generate_split`."""
    meta = json.loads((Path(split_dir) / "params.json").read_text())
    settings = dict(meta["settings"])
    for k in ("ambient_range", "diffuse_range", "relief_scale", "size_range"):
        if settings.get(k) is not None:
            settings[k] = tuple(settings[k])
    return SyntheticConfig(**settings), meta["samples"]


def load_true_views(split_dir: str | Path) -> dict[str, list[float]] | None:
    """The true view of every image of a generated split: ``resolved image path -> [rx, ry, rz, tx, ty, tz]``
    (radians), from its ``params.json``; ``None`` where the split has no ``params.json`` (data that does not
    record its views)."""
    split_dir = Path(split_dir)
    if not (split_dir / "params.json").is_file():
        return None
    _, records = load_split_params(split_dir)
    return {str((split_dir / r["image"]).resolve()): r["view"] for r in records}


def regenerate_sample(split_dir: str | Path, index: int) -> dict:
    """Re-render sample ``index`` of a generated split from its saved parameters.

    Returns:
        ``{"image": H x W x 3 uint8, "depth": H x W uint16}``: the values written to its PNG files
        (up to float rounding of a different batch composition).
    """
    cfg, records = load_split_params(split_dir)
    out = render_samples(params_from_records([records[index]]), cfg)
    return {
        "image": image_to_uint8(out["image"][0]),
        "depth": depth_to_uint16(out["depth"][0], cfg.min_depth, cfg.max_depth),
    }
