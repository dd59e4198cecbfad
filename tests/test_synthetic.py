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


# ----------------------------------------------------------------------------------------- variants
def test_head_variant_is_the_original_generator(params):
    from unsup3d.data.synthetic import variant_config

    cfg = variant_config("head", image_size=SIZE)
    again = sample_params(16, torch.Generator().manual_seed(0), cfg)
    for k, v in params.items():
        assert torch.equal(again[k], v), k
    assert torch.equal(render_samples(again, cfg)["image"], render_samples(params, SyntheticConfig(image_size=SIZE))["image"])


@pytest.mark.parametrize("name", ["face", "deep", "flat", "wide", "clutter"])
def test_variant_pose_light_relief_and_size_ranges(name):
    from unsup3d.data.synthetic import VARIANTS, variant_config
    from unsup3d.data.synthetic.params import foreground_height

    cfg = variant_config(name, image_size=SIZE)
    settings = VARIANTS[name]
    p = sample_params(3000, torch.Generator().manual_seed(2), cfg)
    deg = p["view"][:, :3].abs().amax(0) * 180 / math.pi
    for j, key in enumerate(("pitch_range", "yaw_range", "roll_range")):
        assert 0.95 * settings[key] <= deg[j] <= settings[key], (key, float(deg[j]))
    # light directions fill the cone up to its half-angle, and no further
    angle = torch.atan(p["light"][:, 2:].norm(dim=1)) * 180 / math.pi
    assert 0.97 * settings["light_max_angle"] <= angle.max() <= settings["light_max_angle"] + 1e-3
    lo, hi = settings["ambient_range"] if "ambient_range" in settings else cfg.ambient_range
    assert lo <= p["light"][:, 0].min() and p["light"][:, 0].max() <= hi
    # relief scaled as asked, the depth kept in range and centred
    rs = p["variant.relief_scale"][:, 0]
    assert settings["relief_scale"][0] <= rs.min() and rs.max() <= settings["relief_scale"][1]
    base = sample_params(3000, torch.Generator().manual_seed(2))
    assert torch.allclose(p["shape.relief"], base["shape.relief"] * p["variant.relief_scale"])
    # the foreground's height in the image, as asked
    height = foreground_height(p["shape.head_ay"][:, 0], cfg.foreground)
    assert torch.all(height >= settings["size_range"][0] - 1e-5) and torch.all(height <= settings["size_range"][1] + 1e-5)


def test_face_variant_renders_the_face_only(tmp_path):
    """Face-only variants: no hair, a smaller foreground whose depth ends in a step, ground truth at max depth
    around it; relief and backgrounds as named."""
    from unsup3d.data.synthetic import variant_config

    n = 64
    out = {}
    for name in ("head", "face", "flat", "deep", "clutter"):
        cfg = variant_config(name, image_size=SIZE)
        p = sample_params(n, torch.Generator().manual_seed(3), cfg)
        out[name] = (cfg, p, render_samples(p, cfg))
    cov = {k: float(v[2]["mask"].mean()) for k, v in out.items()}
    # the face-only foreground is about a third of the image, the whole head about 40 %
    assert 0.25 < cov["face"] < 0.36 and 0.33 < cov["head"] < 0.45, cov
    assert cov["clutter"] < cov["face"] < cov["flat"]  # size ranges 60-75 %, 70-80 %, 80-90 % of the image
    for name, (cfg, _, r) in out.items():
        fg, bg = r["mask"] > 0.99, r["mask"] < 0.01
        assert torch.all(r["depth"][bg] == cfg.max_depth) and r["depth"][fg].max() < cfg.max_depth - 0.01, name
        assert r["depth"].min() >= cfg.min_depth
    # relief (depth span of the canonical head): flat (0.5-0.7x) < face (0.6-0.9x) < head < deep (1.5-2x)
    def relief(name):
        r = out[name][2]
        head = r["canon_mask"] > 0.5
        return float(torch.stack([r["canon_depth"][i][head[i]].max() - r["canon_depth"][i][head[i]].min()
                                  for i in range(n)]).median())
    assert relief("flat") < relief("face") < relief("head") < relief("deep")
    assert 0.4 < relief("flat") / relief("head") < 0.75 and 1.4 < relief("deep") / relief("head") < 2.1


def test_backgrounds_and_albedo_details():
    from unsup3d.data.synthetic import background_image, canonical_albedo, variant_config

    p = sample_params(8, torch.Generator().manual_seed(4), variant_config("clutter"))

    def roughness(img):  # mean absolute difference of horizontal neighbours
        return float((img[..., 1:] - img[..., :-1]).abs().mean())

    smooth, blobs, noise = (background_image(p, 64, k) for k in ("smooth", "blobs", "noise"))
    assert roughness(smooth) < roughness(blobs) < roughness(noise)
    assert roughness(noise) > 3 * roughness(blobs)
    # the noise is the same at every size (a 128 px render area-averaged to 64 px is close to the 64 px one)
    assert (torch.nn.functional.avg_pool2d(background_image(p, 128, "noise"), 2) - noise).abs().mean() < 0.03
    plain, standard, detailed = (canonical_albedo(p, 64, detail=k) for k in ("plain", "standard", "detailed"))
    assert roughness(plain) < roughness(standard) < roughness(detailed)
    assert torch.equal(plain, plain.flip(-1)), "plain albedo has no asymmetric part"
    assert not torch.equal(detailed, detailed.flip(-1))
    assert torch.equal(canonical_albedo(p, 64, symmetric_only=True, detail="detailed"),
                       canonical_albedo(p, 64, symmetric_only=True, detail="detailed").flip(-1))


def test_variant_split_records_and_regenerates(tmp_path):
    from unsup3d.data.synthetic import generate_dataset, load_true_views, variant_config

    generate_dataset(tmp_path, 2, 0, 3, seed=5, cfg=variant_config("clutter", image_size=SIZE))
    cfg, records = load_split_params(tmp_path / "test")
    assert cfg.variant == "clutter" and cfg.foreground == "face" and cfg.background == "noise"
    assert {"relief_scale", "seed"} <= set(records[0]["variant"])
    for i in range(3):
        again = regenerate_sample(tmp_path / "test", i)
        img = np.asarray(Image.open(tmp_path / "test" / records[i]["image"]))
        assert np.abs(img.astype(int) - again["image"].astype(int)).max() <= 1
    views = load_true_views(tmp_path / "test")
    assert len(views) == 3 and all(len(v) == 6 for v in views.values())
    assert load_true_views(tmp_path / "nowhere") is None


def test_make_synthetic_variant_option(tmp_path, capsys):
    from unsup3d.data.synthetic.cli import main

    assert main(["--list-variants"]) == 0
    assert "clutter" in capsys.readouterr().out
    assert main(["--output", str(tmp_path / "f"), "--variant", "face", "--num-train", "1", "--num-val", "0",
                 "--num-test", "0", "--image-size", "16", "--quiet", "--yaw-range", "10"]) == 0
    cfg, _ = load_split_params(tmp_path / "f" / "train")
    assert cfg.variant == "face" and cfg.yaw_range == 10.0 and cfg.pitch_range == 15.0
    with pytest.raises(SystemExit):
        main(["--variant", "nope"])
