"""Datamodule and datasets on small generated folders: shapes, ranges, flips, crops, depth, errors."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from unsup3d.config import CONFIG_DIR, compose_config
from unsup3d.data import CorruptImageWarning, ImageFolderDataset, Unsup3DDataModule, load_depth
from unsup3d.data.datasets import crop_array
from unsup3d.data.workers import main_exiting_event
from unsup3d.files.depth_encoding import depth_to_unit, unit_to_depth


def _rgb(rng, h=24, w=28):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_image_folder(root: Path, counts=(10, 4, 3), seed=0) -> Path:
    """``root/{train,val,test}`` with PNG and JPEG images, some in nested folders."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), counts):
        for i in range(n):
            sub = root / split / ("nested/deeper" if i % 3 == 0 else "")
            sub.mkdir(parents=True, exist_ok=True)
            ext = ".jpg" if i % 2 else ".png"
            Image.fromarray(_rgb(rng)).save(sub / f"{i:03d}{ext}")
        (root / split / "notes.txt").write_text("not an image")
    return root


def make_paired_folder(root: Path, counts=(8, 3, 3), size=20, fmt="png16") -> Path:
    """synface layout whose left half is bright and near, right half dark and far (flip check)."""
    for split, n in zip(("train", "val", "test"), counts):
        (root / split / "image").mkdir(parents=True)
        (root / split / "depth").mkdir(parents=True)
        for i in range(n):
            img = np.zeros((size, size, 3), np.uint8)
            img[:, : size // 2] = 200
            img[:, size // 2 :] = 30
            depth = np.full((size, size), 1.1, np.float32)
            depth[:, : size // 2] = 0.95
            depth[:, size // 2 :] = 1.05
            Image.fromarray(img).save(root / split / "image" / f"{i:04d}_image.png")
            v = depth_to_unit(depth, 0.9, 1.1)
            dpath = root / split / "depth" / f"{i:04d}_depth"
            if fmt == "png16":
                cv2.imwrite(str(dpath.with_suffix(".png")), (v * 65535 + 0.5).astype(np.uint16))
            elif fmt == "png8":
                cv2.imwrite(str(dpath.with_suffix(".png")), (v * 255 + 0.5).astype(np.uint8))
            else:
                np.save(dpath.with_suffix(".npy"), depth)
    return root


def dm_kwargs(root, **kw):
    return {
        "root": root,
        "image_size": 16,
        "batch_size": 4,
        "num_workers": 0,
        "pin_memory": False,
        "seed": 0,
        **kw,
    }


# ----------------------------------------------------------------------------- batches


def test_image_batches_shapes_and_ranges(tmp_path):
    dm = Unsup3DDataModule(**dm_kwargs(make_image_folder(tmp_path / "d")))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 10 and len(dm.datasets["val"]) == 4
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "path"}
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert len(batch["path"]) == 4 and all(isinstance(p, str) for p in batch["path"])
    # recursive search found the nested files, the text file is ignored
    assert any("nested/deeper" in str(p) for p in dm.datasets["train"].paths)
    assert not any(str(p).endswith(".txt") for p in dm.datasets["train"].paths)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 3
    assert sum(b["image"].shape[0] for b in dm.test_dataloader()) == 3  # no drop_last on eval


@pytest.mark.parametrize("fmt", ["png16", "png8", "npy"])
def test_paired_depth_decoding(tmp_path, fmt):
    dm = Unsup3DDataModule(
        **dm_kwargs(make_paired_folder(tmp_path / "d", fmt=fmt), has_depth=True, image_size=20)
    )
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["depth"].shape == (3, 20, 20) and batch["depth"].dtype == torch.float32
    tol = 0.2 / 255 if fmt == "png8" else 1e-4
    assert torch.allclose(batch["depth"][:, :, :10], torch.tensor(0.95), atol=tol)
    assert torch.allclose(batch["depth"][:, :, 10:], torch.tensor(1.05), atol=tol)
    assert all("_image.png" in p for p in batch["path"])


def test_depth_rule_matches_original():
    # original: gt in [0, 1] -> (1 - gt) * 2 - 1 -> (1 + d) / 2 * max + (1 - d) / 2 * min
    v = np.linspace(0, 1, 11)
    d = (1 - v) * 2 - 1
    original = (1 + d) / 2 * 1.1 + (1 - d) / 2 * 0.9
    assert np.allclose(unit_to_depth(v, 0.9, 1.1), original)
    assert np.allclose(depth_to_unit(original, 0.9, 1.1), v)
    assert unit_to_depth(np.array(0.0), 0.9, 1.1) == pytest.approx(1.1)  # background is far


def test_load_depth_bit_depths(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.array([[0, 255]], np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.array([[0, 65535]], np.uint16))
    np.save(tmp_path / "c.npy", np.array([[1.0, 0.95]], np.float32))
    for name in ("a.png", "b.png"):
        assert np.allclose(load_depth(tmp_path / name, 0.9, 1.1), [[1.1, 0.9]])
    assert np.allclose(load_depth(tmp_path / "c.npy", 0.9, 1.1), [[1.0, 0.95]])


def test_flip_applies_to_image_and_depth_together(tmp_path):
    dm = Unsup3DDataModule(
        **dm_kwargs(
            make_paired_folder(tmp_path / "d", counts=(16, 3, 3)),
            has_depth=True,
            image_size=20,
            batch_size=16,
        )
    )
    batch = next(iter(dm.train_dataloader()))
    img_left_bright = batch["image"][:, 0, :, :10].mean((1, 2)) > batch["image"][:, 0, :, 10:].mean((1, 2))
    depth_left_near = batch["depth"][:, :, :10].mean((1, 2)) < batch["depth"][:, :, 10:].mean((1, 2))
    assert torch.equal(img_left_bright, depth_left_near), "image and depth must flip together"
    assert 0 < int((~img_left_bright).sum()) < 16, "some but not all training samples are flipped"
    # validation and test never flip
    val = next(iter(dm.val_dataloader()))
    assert bool((val["image"][:, 0, :, :10].mean((1, 2)) > val["image"][:, 0, :, 10:].mean((1, 2))).all())


def test_no_flip_when_disabled(tmp_path):
    dm = Unsup3DDataModule(
        **dm_kwargs(
            make_paired_folder(tmp_path / "d", counts=(16, 3, 3)),
            has_depth=True,
            image_size=20,
            batch_size=16,
            train_flip=False,
        )
    )
    batch = next(iter(dm.train_dataloader()))
    assert bool((batch["image"][:, 0, :, :10].mean((1, 2)) > batch["image"][:, 0, :, 10:].mean((1, 2))).all())


def test_deterministic_shuffle_and_flips(tmp_path):
    root = make_image_folder(tmp_path / "d", counts=(12, 2, 2))

    def epoch(seed):
        dm = Unsup3DDataModule(**dm_kwargs(root, seed=seed, batch_size=3))
        return [
            (p, b["image"][i].sum().item()) for b in dm.train_dataloader() for i, p in enumerate(b["path"])
        ]

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert a == b
    assert [p for p, _ in a] != [p for p, _ in c]
    assert sorted(p for p, _ in a) != [p for p, _ in a]  # actually shuffled


def test_workers_persistent_and_pin_memory_flags(tmp_path):
    dm = Unsup3DDataModule(
        **dm_kwargs(make_image_folder(tmp_path / "d"), num_workers=1, persistent_workers=True)
    )
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    assert sum(b["image"].shape[0] for b in loader) == 8  # drop_last for training batches
    dm0 = Unsup3DDataModule(**dm_kwargs(tmp_path / "d", num_workers=0, persistent_workers=True))
    assert not dm0.train_dataloader().persistent_workers


def _new_workers(before):
    return [p for p in multiprocessing.active_children() if p.pid not in before]


def test_workers_ignore_outside_signals_but_stop_when_the_main_process_asks(tmp_path):
    before = {p.pid for p in multiprocessing.active_children()}
    loader = Unsup3DDataModule(
        **dm_kwargs(make_image_folder(tmp_path / "d"), num_workers=1, persistent_workers=True)
    ).train_dataloader()
    next(iter(loader))
    (worker,) = _new_workers(before)
    for sig in ("SIGTERM", "SIGINT"):  # sent by another process, as a scheduler or Ctrl-C to the group would
        subprocess.run([sys.executable, "-c", f"import os, signal; os.kill({worker.pid}, signal.{sig})"], check=True)
    time.sleep(1.0)
    assert worker.is_alive()
    assert sum(b["image"].shape[0] for b in loader) == 8  # and it still loads
    main_exiting_event().set()  # as at interpreter exit, where multiprocessing then SIGTERMs the workers
    try:
        worker.terminate()
        worker.join(timeout=20)
    finally:
        main_exiting_event().clear()
    assert worker.exitcode == 0


def test_interpreter_exit_with_live_persistent_workers_does_not_hang(tmp_path):
    """A script that keeps a loader with persistent workers alive to the end must exit (multiprocessing
    terminates and joins daemonic children at exit; a worker deaf to SIGTERM hung the test suite)."""
    root = make_image_folder(tmp_path / "d")
    script = (
        "from unsup3d.data import Unsup3DDataModule\n"
        f"dm = Unsup3DDataModule(root={str(root)!r}, image_size=16, batch_size=4, num_workers=1, "
        "persistent_workers=True)\n"
        "LOADER = dm.train_dataloader()\n"
        "BATCH = next(iter(LOADER))\n"
        "print('loaded', BATCH['image'].shape[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "loaded 4" in done.stdout


def test_max_samples_per_split(tmp_path):
    dm = Unsup3DDataModule(**dm_kwargs(make_image_folder(tmp_path / "d"), max_samples_per_split=5))
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [5, 4, 3]


# ----------------------------------------------------------------------------- crops


def _coord_image(h, w):
    """RGB image whose red channel is the column index and green the row index."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    return img


def test_centre_and_box_crop(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(_coord_image(30, 40)).save(folder / "a.png")
    centre = ImageFolderDataset(folder, image_size=10, crop=10)[0]["image"] * 255
    # torchvision's rule: top = round((30 - 10) / 2) = 10, left = round((40 - 10) / 2) = 15
    assert centre[0, 0, 0].round() == 15 and centre[1, 0, 0].round() == 10
    box = ImageFolderDataset(folder, image_size=6, crop=[3, 5, 6, 6])[0]["image"] * 255
    assert torch.equal(box[0, 0].round(), torch.arange(5, 11, dtype=torch.float32))
    assert torch.equal(box[1, :, 0].round(), torch.arange(3, 9, dtype=torch.float32))
    # a box leaving the image is padded (zeros), the original behaviour
    out = ImageFolderDataset(folder, image_size=4, crop=[-2, 0, 4, 4])[0]["image"]
    assert torch.all(out[:, :2] == 0)
    resized = ImageFolderDataset(folder, image_size=8, crop=[0, 0, 16, 16])[0]["image"]
    assert resized.shape == (3, 8, 8)


def test_depth_crop_pads_with_far(tmp_path):
    d = crop_array(np.full((4, 4), 1.0, np.float32), (-1, -1, 3, 3), fill=1.1)
    assert d[0, 0] == np.float32(1.1) and d[2, 2] == 1.0


def test_bad_crop_spec(tmp_path):
    with pytest.raises(ValueError, match="y0, x0, h, w"):
        Unsup3DDataModule(**dm_kwargs(tmp_path, crop=[1, 2, 3]))


# ----------------------------------------------------------------------------- errors


def test_missing_root(tmp_path):
    dm = Unsup3DDataModule(**dm_kwargs(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"dataset root .*nowhere.* does not exist.*nowhere/train"):
        dm.setup("fit")


def test_unset_root():
    with pytest.raises(ValueError, match="dataset.root=/path"):
        Unsup3DDataModule(root="???")


def test_missing_split(tmp_path):
    root = make_image_folder(tmp_path / "d")
    for p in (root / "val").rglob("*"):
        if p.is_file():
            p.unlink()
    for p in sorted((root / "val").rglob("*"), reverse=True):
        p.rmdir()
    (root / "val").rmdir()
    dm = Unsup3DDataModule(**dm_kwargs(root))
    with pytest.raises(FileNotFoundError, match=r"val split folder .*d/val.* does not exist"):
        dm.setup("fit")
    dm.setup("test")  # the test split alone is fine


def test_no_images(tmp_path):
    for s in ("train", "val", "test"):
        (tmp_path / s).mkdir()
    (tmp_path / "train" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no images found in .*train"):
        Unsup3DDataModule(**dm_kwargs(tmp_path)).setup("fit")


def test_missing_depth_folder(tmp_path):
    root = make_image_folder(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match=r"folder .*train/image.* does not exist.*images"):
        Unsup3DDataModule(**dm_kwargs(root, has_depth=True)).setup("fit")
    root = make_paired_folder(tmp_path / "p")
    for f in (root / "train/depth").iterdir():
        f.unlink()
    (root / "train/depth").rmdir()
    with pytest.raises(FileNotFoundError, match=r"train/depth.* does not exist.*depth"):
        Unsup3DDataModule(**dm_kwargs(root, has_depth=True)).setup("fit")


def test_missing_depth_file(tmp_path):
    root = make_paired_folder(tmp_path / "p")
    (root / "train/depth/0003_depth.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"(?s)1 image\(s\).*0003_image.png -> expected .*0003_depth.png"
    ):
        Unsup3DDataModule(**dm_kwargs(root, has_depth=True)).setup("fit")


def test_corrupt_image_is_skipped_with_warning(tmp_path):
    root = make_image_folder(tmp_path / "d", counts=(8, 2, 2))
    bad = root / "train" / "zzz_corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "train" / "zzz_truncated.jpg")
    data = (root / "train" / "zzz_truncated.jpg").read_bytes()
    (root / "train" / "zzz_truncated.jpg").write_bytes(data[: len(data) // 3])
    dm = Unsup3DDataModule(**dm_kwargs(root, batch_size=5, train_flip=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(dm.train_dataloader())
    assert sum(b["image"].shape[0] for b in batches) == 10  # every batch is complete
    msgs = [str(w.message) for w in caught if issubclass(w.category, CorruptImageWarning)]
    assert any("zzz_corrupt.png" in m for m in msgs)
    assert any("zzz_truncated.jpg" in m for m in msgs)
    assert dm.num_skipped == 2
    assert all("zzz_" not in p for b in batches for p in b["path"])


def test_training_reads_images_like_export(tmp_path):
    """The datasets read images with unsup3d.files.images.load_image: EXIF orientation applied, hidden files and
    the extensions export knows found the same way."""
    img = np.zeros((8, 16, 3), np.uint8)  # stored 16 wide, 8 high: left half red, right half blue
    img[:, :8, 0] = 255
    img[:, 8:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the red half on top
    folder = tmp_path / "train"
    folder.mkdir()
    Image.fromarray(img).save(folder / "rotated.png", exif=exif)
    Image.fromarray(img).save(folder / "other.jfif", format="JPEG")
    (folder / ".hidden").mkdir()
    Image.fromarray(img).save(folder / ".hidden" / "x.png")
    Image.fromarray(img).save(folder / "._resource_fork.png")
    ds = ImageFolderDataset(folder, image_size=16)
    assert [p.name for p in ds.paths] == ["other.jfif", "rotated.png"]
    upright = ds.load(1)["image"]  # 3 x 16 x 16
    assert upright[0, :4].mean() > 0.9 and upright[2, :4].mean() < 0.1  # top rows red
    assert upright[2, -4:].mean() > 0.9 and upright[0, -4:].mean() < 0.1  # bottom rows blue


def test_corrupt_image_counted_across_workers(tmp_path):
    root = make_image_folder(tmp_path / "d", counts=(6, 2, 2))
    (root / "train" / "bad.png").write_bytes(b"garbage")
    dm = Unsup3DDataModule(**dm_kwargs(root, batch_size=7, num_workers=1, drop_last=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(b["image"].shape[0] for b in dm.train_dataloader())
    assert n == 7 and dm.num_skipped == 1


def test_corrupt_depth_is_skipped(tmp_path):
    root = make_paired_folder(tmp_path / "p", counts=(4, 2, 2))
    (root / "train/depth/0001_depth.png").write_bytes(b"not a png")
    dm = Unsup3DDataModule(**dm_kwargs(root, has_depth=True, image_size=20, drop_last=False))
    with pytest.warns(CorruptImageWarning, match="0001_depth.png"):
        batch = next(iter(dm.train_dataloader()))
    assert batch["depth"].shape[0] == 4 and dm.num_skipped == 1


# ----------------------------------------------------------------------------- configs


def dataset_cfg(name: str, *overrides: str):
    """``cfg.dataset`` of the training config composed with ``dataset=<name>``."""
    return compose_config("train", [f"dataset={name}", *overrides]).dataset


@pytest.mark.parametrize("name", ["celeba", "synface", "cat", "syncar", "folder", "synthetic"])
def test_dataset_configs_instantiate(name, tmp_path):
    cfg = dataset_cfg(name)
    for key in ("root", "image_size", "batch_size", "num_workers", "_target_", "name", "min_depth"):
        assert key in list(cfg), f"dataset/{name}.yaml lacks '{key}'"  # `in cfg` is False for '???'
    cfg.root = str(tmp_path)
    cfg.batch_size = 8
    dm = instantiate(cfg)
    assert isinstance(dm, Unsup3DDataModule) and dm.batch_size == 8 and dm.root == tmp_path
    assert dm.name == name and dm.seed == 42  # the run's seed
    if name == "synface":
        assert dm.crop == 170 and dm.has_depth
    if name == "syncar":
        assert dm.crop == (8, 14, 100, 100)


def test_dataset_configs_share_the_base_and_follow_the_renderer():
    """Every dataset extends dataset/base.yaml; ground-truth depth is decoded with the renderer's range
    and the roots sit under paths.data_dir."""
    cfg = dataset_cfg("synface", "renderer.max_depth=1.2", "paths.data_dir=/data")
    assert (cfg.min_depth, cfg.max_depth) == (0.9, 1.2)
    assert cfg.root == "/data/synface"
    base = OmegaConf.load(CONFIG_DIR / "dataset" / "base.yaml")
    for name in ("celeba", "synface", "cat", "syncar", "folder", "synthetic"):
        own = OmegaConf.load(CONFIG_DIR / "dataset" / f"{name}.yaml")
        assert list(own.defaults) == ["base", "_self_"], name
        same = [k for k in own if k in base and k != "defaults" and own[k] == base[k]]
        assert not same, f"dataset/{name}.yaml repeats {same} of base.yaml"


def test_folder_config_reads_root_itself(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    for i in range(6):
        Image.fromarray(_rgb(rng)).save(tmp_path / ("a" if i % 2 else "") / f"{i}.png")
    cfg = dataset_cfg("folder", f"dataset.root={tmp_path}", "dataset.num_workers=0", "dataset.batch_size=2",
                      "dataset.image_size=16")
    dm = instantiate(cfg)
    dm.setup()
    assert len(dm.datasets["train"]) == len(dm.datasets["test"]) == 6


def test_reads_generated_synthetic_data(tmp_path):
    from unsup3d.data.synthetic import SyntheticConfig, generate_dataset

    generate_dataset(tmp_path, 6, 2, 2, seed=0, cfg=SyntheticConfig(image_size=16, supersample=1))
    cfg = dataset_cfg("synthetic", f"dataset.root={tmp_path}", "dataset.num_workers=0", "dataset.batch_size=3",
                      "dataset.image_size=16")
    dm = instantiate(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16) and batch["depth"].shape == (3, 16, 16)
    assert batch["depth"].min() >= 0.9 and batch["depth"].max() <= 1.1 + 1e-6
    assert (batch["depth"] < 1.09).float().mean() > 0.1  # a visible object


def test_command_line_overrides_compose(tmp_path):
    make_image_folder(tmp_path / "d")
    cfg = dataset_cfg("celeba", f"dataset.root={tmp_path / 'd'}", "dataset.batch_size=8", "seed=5")
    dm = instantiate(cfg)
    assert dm.batch_size == 8 and dm.seed == 5 and dm.root == tmp_path / "d"
