"""``unsup3d-prepare`` (`unsup3d.data.prepare`): a folder of photos made into train/val/test crops, and
``experiment=folder_cpu`` training on the result. Photos are the demo's example faces placed in larger
canvases (and mirrored), in several formats, with duplicates, broken files and a face-less photo."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from unsup3d.config import compose_config
from unsup3d.data import prepare as prep
from unsup3d.data.crops import center_crop_square, resize_for_model
from unsup3d.data.prepare import (
    DuplicateIndex,
    PrepareOptions,
    fingerprint,
    parse_crop,
    prepare_folder,
    split_counts,
)
from unsup3d.data.prepare_cli import main
from unsup3d.files.images import load_image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "unsup3d" / "demo" / "examples"
FACES = ["001_face.png", "002_face.png", "003_face.png", "016_paint.png"]


def _canvas(face: np.ndarray, mirrored: bool) -> np.ndarray:
    """A 260 x 200 "photo": the 64 px face at 2x, off-centre on a grey background."""
    big = cv2.resize(face[:, ::-1] if mirrored else face, (128, 128), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((200, 260, 3), 120, np.uint8)
    canvas[30:158, 100:228] = big
    return canvas


@pytest.fixture
def photos(tmp_path) -> Path:
    """8 distinct face photos in nested folders and formats, plus a re-encoded resized copy, an exact copy,
    a truncated JPEG, a text file named .jpg, a cat (no face) and a hidden file."""
    root = tmp_path / "photos"
    for sub in ("day2", "trip/day2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    formats = [".png", ".jpg", ".webp", ".bmp"]
    made = []
    for i, name in enumerate(FACES):
        face = load_image(EXAMPLES / name)
        for mirrored in (False, True):
            folder = root / ("trip" if mirrored else "") / ("day2" if i % 2 else "")
            path = folder / f"{Path(name).stem}{'_m' if mirrored else ''}{formats[i]}"
            Image.fromarray(_canvas(face, mirrored)).save(path, **({"quality": 95} if formats[i] == ".jpg" else {}))
            made.append(path)
    near = Image.open(made[2]).convert("RGB").resize((208, 160), Image.BILINEAR)
    near.save(root / "trip" / "resent.jpg", quality=70)  # the same photo, smaller, re-encoded
    shutil.copy(made[5], root / "copy_of_a_face.png")  # an exact copy
    Image.open(made[1]).save(root / "broken.jpg")
    (root / "broken.jpg").write_bytes((root / "broken.jpg").read_bytes()[:300])  # truncated
    (root / "notes.jpg").write_text("not a photo")
    Image.fromarray(cv2.resize(load_image(EXAMPLES / "001_cat.png"), (200, 200))).save(root / "cat.png")
    shutil.copy(made[0], root / ".hidden.png")
    return root


def _files(folder: Path) -> dict[str, list[str]]:
    return {s: sorted(p.relative_to(folder / s).as_posix() for p in (folder / s).rglob("*.png"))
            for s in ("train", "val", "test")}


def test_a_photo_folder_becomes_train_val_test_face_crops(photos, tmp_path, capsys):
    out = tmp_path / "data" / "mine"
    assert main([str(photos), str(out), "--no-progress", "--split", "0.5,0.25,0.25"]) == 0
    printed = capsys.readouterr().out
    files = _files(out)
    assert [len(files[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    every = [f for s in files.values() for f in s]
    assert len(set(every)) == 8  # disjoint splits, every distinct face once
    assert {"001_face.png", "trip/001_face_m.png", "day2/002_face.png", "trip/day2/016_paint_m.png"} <= set(every)
    for split, names in files.items():
        for name in names:
            with Image.open(out / split / name) as im:
                assert im.size == (64, 64) and im.mode == "RGB"
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest["counts"] == {"train": 4, "val": 2, "test": 2}
    assert {e["source"] for e in manifest["unreadable"]} == {"broken.jpg", "notes.jpg"}
    assert manifest["no_face"] == ["cat.png"]
    dups = {e["source"]: e["duplicate_of"] for e in manifest["duplicates"]}
    assert dups == {"trip/003_face_m.webp": "copy_of_a_face.png", "trip/resent.jpg": "day2/002_face.jpg"}
    for name in ("broken.jpg", "notes.jpg", "cat.png", "trip/003_face_m.webp", "trip/resent.jpg"):
        assert name in printed, printed
    assert "prepared: 8 crops of 64x64 (face)" in printed and "2 unreadable file(s)" in printed
    assert "experiment=folder_cpu" in printed
    # each crop is the face: the mirrored photo's crop is about the mirror of the plain one's
    plain = load_image(next(out.rglob("001_face.png")))
    mirrored = load_image(next(out.rglob("001_face_m.png")))
    assert np.abs(plain[:, ::-1].astype(int) - mirrored).mean() < 25
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    # re-running: up to date, nothing rewritten
    stamp = (out / "prepare.json").stat().st_mtime_ns
    assert main([str(photos), str(out), "--no-progress", "--split", "0.5,0.25,0.25"]) == 0
    assert "up to date: 8 crops" in capsys.readouterr().out
    assert (out / "prepare.json").stat().st_mtime_ns == stamp
    # another seed: rebuilt in place, same photos, another split
    assert main([str(photos), str(out), "--no-progress", "--split", "0.5,0.25,0.25", "--seed", "3"]) == 0
    capsys.readouterr()
    again = _files(out)
    assert sorted(f for s in again.values() for f in s) == sorted(every) and again != files
    # a photo removed: rebuilt, and its crop is gone
    os.remove(photos / "day2" / "016_paint.bmp")
    assert main([str(photos), str(out), "--no-progress", "--split", "0.5,0.25,0.25", "--seed", "3"]) == 0
    assert "day2/016_paint.png" in every and "day2/016_paint.png" not in [f for s in _files(out).values() for f in s]


def test_same_seed_same_split_whatever_the_order_of_work(photos, tmp_path):
    a = prepare_folder(photos, tmp_path / "a", PrepareOptions(seed=5), progress=False)
    b = prepare_folder(photos, tmp_path / "b", PrepareOptions(seed=5), progress=False)
    assert a.splits == b.splits and a.counts == {"train": 6, "val": 1, "test": 1}
    for split in ("train", "val", "test"):
        for name, _ in a.splits[split]:
            assert (tmp_path / "a" / split / name).read_bytes() == (tmp_path / "b" / split / name).read_bytes()


def _pattern(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_LINEAR)


def test_center_and_box_crops(tmp_path, capsys):
    src = tmp_path / "objects"
    src.mkdir()
    img = _pattern(120, 200)
    for i in range(3):
        Image.fromarray(np.roll(img, 40 * i, axis=1)).save(src / f"obj{i}.png")
    Image.fromarray(img[:20, :20]).save(src / "tiny.png")  # too small for the box below
    assert main([str(src), str(tmp_path / "c"), "--crop", "center", "--size", "32", "--no-progress"]) == 0
    crop = load_image(next((tmp_path / "c").rglob("obj1.png")))
    expected = resize_for_model(center_crop_square(np.roll(img, 40, axis=1)), 32)
    assert crop.shape == (32, 32, 3) and np.abs(crop.astype(int) - expected).max() <= 1
    capsys.readouterr()

    assert main([str(src), str(tmp_path / "b"), "--crop", "box=50,10,80,80", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    crop = load_image(next((tmp_path / "b").rglob("obj0.png")))
    assert np.abs(crop.astype(int) - resize_for_model(img[10:90, 50:130], 64)).max() <= 1
    assert "1 photo(s) that could not be cropped" in printed and "tiny.png: the box 50,10,80,80 lies outside" in printed


def test_parse_crop_and_split_counts():
    assert parse_crop("face") == ("face", None) and parse_crop("centre") == ("center", None)
    assert parse_crop("box=8,14,100,100") == ("box", (8, 14, 100, 100))
    for bad in ("box=1,2,3", "box=1,2,0,4", "corner"):
        with pytest.raises(ValueError, match="expected face, center or box"):
            parse_crop(bad)
    assert split_counts(100, (0.8, 0.1, 0.1)) == (80, 10, 10)
    assert split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1)  # val and test get one each
    assert split_counts(5, (1, 0, 0)) == (5, 0, 0)
    with pytest.raises(ValueError, match="2 usable photo"):
        split_counts(2, (0.8, 0.1, 0.1))


def test_near_duplicates_are_found_and_others_are_not():
    img = _pattern(64, 64)
    index = DuplicateIndex(max_bits=6)
    index.add(*fingerprint(img), "a")
    brighter = np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8)
    small = cv2.resize(cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA), (64, 64))
    assert index.find(*fingerprint(brighter)) == "a" and index.find(*fingerprint(small)) == "a"
    assert index.find(*fingerprint(img[:, ::-1].copy())) is None  # a mirror is another photo
    assert index.find(*fingerprint(np.roll(img, 16, axis=0))) is None
    flat = np.full((64, 64, 3), 40, np.uint8)
    index.add(*fingerprint(flat), "flat")
    assert index.find(*fingerprint(np.full((64, 64, 3), 200, np.uint8))) is None  # same hash, other colour


def test_bad_folders_are_refused_and_nothing_is_replaced(photos, tmp_path, capsys):
    theirs = tmp_path / "data"
    theirs.mkdir()
    (theirs / "celeba_cropped").mkdir()
    assert main([str(photos), str(theirs), "--no-progress"]) == 2
    assert "not empty and was not written by unsup3d-prepare" in capsys.readouterr().err
    assert [p.name for p in theirs.iterdir()] == ["celeba_cropped"]
    assert main([str(photos), str(photos), "--no-progress"]) == 2
    assert "is the input folder" in capsys.readouterr().err
    prepare_folder(photos / "trip", tmp_path / "mine", PrepareOptions(crop="center"), progress=False)
    shutil.copytree(photos / "day2", tmp_path / "mine" / "raw")  # photos kept inside a prepared folder
    assert main([str(tmp_path / "mine" / "raw"), str(tmp_path / "mine"), "--no-progress"]) == 2
    assert "lies inside the output folder" in capsys.readouterr().err
    assert len(list((tmp_path / "mine" / "raw").iterdir())) == 2
    assert main([str(tmp_path / "missing"), str(tmp_path / "o"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    for bad in (["--split", "0.8,0.2"], ["--crop", "box=1,2"]):
        with pytest.raises(SystemExit) as info:
            main([str(photos), str(tmp_path / "o"), *bad])
        assert info.value.code == 2 and "expected" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    assert main([str(empty), str(tmp_path / "o"), "--no-progress"]) == 1
    assert "no image files" in capsys.readouterr().err
    cats = tmp_path / "cats"
    cats.mkdir()
    shutil.copy(photos / "cat.png", cats / "cat.png")
    shutil.copy(photos / "broken.jpg", cats / "broken.jpg")
    assert main([str(cats), str(tmp_path / "o"), "--no-progress"]) == 1  # no face anywhere
    err = capsys.readouterr().err
    assert "cat.png" in err and "broken.jpg" in err and "0 usable photo(s)" in err
    assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


def test_an_interrupted_run_keeps_the_previous_result(photos, tmp_path, monkeypatch):
    out = tmp_path / "mine"
    first = prepare_folder(photos, out, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = prep.crop_photo
    calls = []

    def interrupted(path, options):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(path, options)

    monkeypatch.setattr(prep, "crop_photo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(photos, out, PrepareOptions(seed=9), progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert first.num_prepared == 8


def test_folder_cpu_trains_on_a_prepared_folder(photos, tmp_path):
    """experiment=folder_cpu is synthetic_cpu's recipe on dataset=folder with the prepared splits: it trains,
    validates without ground-truth depth, and writes panels, videos and the 3D object."""
    from unsup3d.training import train

    data = tmp_path / "mine"
    prepare_folder(photos, data, PrepareOptions(split=(0.5, 0.25, 0.25)), progress=False)
    cfg = compose_config("train", [
        "experiment=folder_cpu", f"dataset.root={data}", f"paths.output_dir={tmp_path / 'run'}", "logger=csv",
        "model.width=0.125", "dataset.batch_size=2", "dataset.num_workers=0", "trainer.max_steps=2",
        "trainer.max_time=null", "trainer.val_check_interval=1", "trainer.num_sanity_val_steps=0",
        "callbacks.progress_bar=null", "callbacks.image_logger.log_images_every_n_steps=1",
        "callbacks.image_logger.max_items=2", "callbacks.image_logger.num_frames=2"])
    plain = compose_config("train", ["experiment=folder_cpu", f"dataset.root={data}", f"paths.output_dir={tmp_path}"])
    synthetic = compose_config("train", ["experiment=synthetic_cpu", f"paths.output_dir={tmp_path}"])
    assert plain.name == "folder_cpu" and plain.dataset.name == "folder" and not plain.dataset.has_depth
    # the CPU recipe itself (through Hydra's defaults), not a copy that can drift
    assert plain.model == synthetic.model and plain.trainer.max_steps == synthetic.trainer.max_steps
    assert plain.dataset.batch_size == synthetic.dataset.batch_size
    assert (cfg.dataset.train_split, cfg.dataset.val_split, cfg.dataset.test_split) == ("train", "val", "test")
    summary = train(cfg)
    run = tmp_path / "run"
    assert summary["global_step"] == 2
    assert list(run.glob("images/step_*/canon_depth.png")) and list(run.glob("videos/*.mp4"))
    assert list(run.glob("images/step_*/mesh.glb"))
    assert not any(k.startswith("val/side") for k in summary["metrics"])
