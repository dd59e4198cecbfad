"""The procedural synthetic dataset: determinism, symmetry, ranges, coverage, variety, re-derivation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unsup3d.data import load_depth
from unsup3d.data.synthetic import (
    SyntheticConfig,
    canonical_albedo,
    canonical_shape,
    generate_dataset,
    load_split_params,
    params_from_records,
    params_to_records,
    regenerate_sample,
    render_samples,
    sample_params,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(out, num_train=12, num_val=4, num_test=4, seed=7, cfg=SyntheticConfig(image_size=SIZE))
    return out


@pytest.fixture(scope="module")
def params():
    return sample_params(16, torch.Generator().manual_seed(0))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(dataset):
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        images = sorted((dataset / split / "image").glob("*_image.png"))
        depths = sorted((dataset / split / "depth").glob("*_depth.png"))
        assert len(images) == len(depths) == n
        meta = json.loads((dataset / split / "params.json").read_text())
        assert meta["num_samples"] == n and len(meta["samples"]) == n
        rec = meta["samples"][0]
        assert set(rec) >= {"view", "light", "shape", "albedo", "background", "image", "depth"}
        with Image.open(images[0]) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)
        with Image.open(depths[0]) as im:
            assert im.size == (SIZE, SIZE) and np.asarray(im).dtype == np.uint16


def test_same_seed_identical_files(dataset, tmp_path):
    generate_dataset(
        tmp_path,
        num_train=12,
        num_val=4,
        num_test=4,
        seed=7,
        cfg=SyntheticConfig(image_size=SIZE),
        chunk_size=5,
    )  # a different chunking must not change anything
    assert _files(tmp_path) == _files(dataset)


def test_other_seed_differs(dataset, tmp_path):
    generate_dataset(
        tmp_path, num_train=2, num_val=0, num_test=0, seed=8, cfg=SyntheticConfig(image_size=SIZE)
    )
    a = (dataset / "train/image/000000_image.png").read_bytes()
    assert (tmp_path / "train/image/000000_image.png").read_bytes() != a


def test_splits_differ(dataset):
    tr = np.asarray(Image.open(dataset / "train/image/000000_image.png"))
    te = np.asarray(Image.open(dataset / "test/image/000000_image.png"))
    assert not np.array_equal(tr, te)


def test_canonical_shape_symmetric_and_in_range(params):
    depth, mask = canonical_shape(params, 48)
    assert depth.shape == mask.shape == (16, 48, 48)
    assert torch.equal(depth, depth.flip(-1)), "canonical depth must be exactly mirror-symmetric"
    assert torch.equal(mask, mask.flip(-1))
    assert depth.min() >= 0.9 and depth.max() <= 1.1
    head = mask > 0.5
    assert depth[head].max() < 1.07 and depth[head].min() > 0.91
    assert torch.allclose(depth[:, 0, 0], torch.full((16,), 1.1)), "corners are background (far)"
    # real variation between samples: the shapes are not all the same
    flat = (depth - depth.mean((1, 2), keepdim=True)).flatten(1)
    assert torch.cdist(flat, flat)[~torch.eye(16, dtype=torch.bool)].min() > 1e-3
    # the nose is the nearest part of the face, on the symmetry axis below the centre
    for d, m in zip(depth, head):
        _, x = divmod(int(torch.where(m, d, torch.tensor(9.0)).argmin()), 48)
        assert x in (23, 24)


def test_albedo_symmetric_part_and_asymmetric_mark(params):
    sym = canonical_albedo(params, 48, symmetric_only=True)
    full = canonical_albedo(params, 48)
    assert sym.shape == (16, 3, 48, 48) and 0 <= full.min() and full.max() <= 1
    assert torch.equal(sym, sym.flip(-1))
    assert not torch.equal(full, full.flip(-1)), "the asymmetric mark/stain must break the symmetry"
    assert (full - sym).abs().amax((1, 2, 3)).min() > 0.05  # every sample has a visible mark


def test_render_ranges_and_coverage(params):
    cfg = SyntheticConfig(image_size=SIZE)
    out = render_samples(params, cfg)
    assert out["image"].shape == (16, 3, SIZE, SIZE) and out["depth"].shape == (16, SIZE, SIZE)
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert out["depth"].min() >= cfg.min_depth and out["depth"].max() <= cfg.max_depth
    coverage = out["mask"].mean((1, 2))
    assert coverage.min() > 0.15 and coverage.max() < 0.8
    fg = out["mask"] > 0.99
    bg = out["mask"] < 0.01
    assert torch.all(out["depth"][bg] == cfg.max_depth)
    assert out["depth"][fg].max() < cfg.max_depth - 0.005
    # no two samples alike
    flat = out["image"].flatten(1)
    dist = torch.cdist(flat, flat)[~torch.eye(16, dtype=torch.bool)]
    assert dist.min() > 1.0


def test_viewpoint_and_light_ranges():
    p = sample_params(2000, torch.Generator().manual_seed(1))
    yaw = p["view"][:, 1].abs().max() * 180 / math.pi
    assert 45 <= yaw <= 60
    assert p["view"][:, [0, 2]].abs().max() * 180 / math.pi < yaw
    assert p["view"][:, 3:5].abs().max() <= 0.1 and torch.all(p["view"][:, 5] == 0)
    light = p["light"]
    assert light[:, :2].min() >= 0 and light[:, :2].max() <= 1 and light[:, 2:].abs().max() <= 1


def test_records_round_trip(params):
    back = params_from_records(json.loads(json.dumps(params_to_records(params))))
    assert set(back) == set(params)
    for k in params:
        assert torch.equal(back[k], params[k]), k


def test_regenerate_matches_files(dataset):
    split = dataset / "val"
    cfg, records = load_split_params(split)
    assert cfg.image_size == SIZE
    for i in range(len(records)):
        again = regenerate_sample(split, i)
        img = np.asarray(Image.open(split / records[i]["image"]))
        dep = np.asarray(Image.open(split / records[i]["depth"])).astype(np.int64)
        assert np.abs(img.astype(int) - again["image"].astype(int)).max() <= 1
        assert np.abs(dep - again["depth"].astype(np.int64)).max() <= 2


def test_depth_files_decode_to_range(dataset):
    d = load_depth(dataset / "train/depth/000000_depth.png", 0.9, 1.1)
    assert d.shape == (SIZE, SIZE) and d.min() >= 0.9 - 1e-6 and d.max() <= 1.1 + 1e-6
    assert np.isclose(d.max(), 1.1) and d.min() < 1.0


def test_make_synthetic_script(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts/make_synthetic.py"),
        "--output",
        str(tmp_path / "s"),
        "--num-train",
        "3",
        "--num-val",
        "1",
        "--num-test",
        "1",
        "--image-size",
        "16",
        "--seed",
        "1",
        "--quiet",
    ]
    subprocess.run(cmd, check=True, cwd=tmp_path)
    assert len(list((tmp_path / "s/train/image").glob("*.png"))) == 3
    assert (tmp_path / "s/test/params.json").is_file()
