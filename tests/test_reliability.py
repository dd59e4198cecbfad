"""Fault tolerance of training (issue 15): kill -9 at any moment, SIGTERM / Ctrl-C, resuming only a
matching run, corrupt checkpoints, a full disk, a dataset that vanishes or an image that turns
unreadable mid-run. Tiny models (TINY of test_train) and no validation, so each run takes seconds."""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_files import DiskFullAfter, fill_disk
from test_train import REPO, TINY, compose_cfg

from unsup3d.data import CorruptImageWarning
from unsup3d.data.synthetic import SyntheticConfig, generate_dataset
from unsup3d.training import TrainingInterrupted, train
from unsup3d.training.checkpoint_io import AtomicCheckpointIO
from unsup3d.training.resume import CONFIG_KEY, CheckpointWarning, ResumeMismatchError

# No validation, no time limit; a time checkpoint (and last.ckpt) after every step.
FAST = [*TINY, "logger=none", "trainer.max_time=null", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0", "callbacks.time_checkpoint.train_time_interval.minutes=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """24 training images (6 steps an epoch at batch 4) with ground-truth depth."""
    root = tmp_path_factory.mktemp("reliability") / "synthetic"
    generate_dataset(root, 24, 4, 4, 0, SyntheticConfig(image_size=32))
    return root


def overrides(data: Path, run: Path, *more: str) -> list[str]:
    return ["experiment=synthetic_cpu", *FAST, f"dataset.root={data}", f"paths.output_dir={run}", *more]


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def checkpoint_steps(folder: Path) -> dict[str, int]:
    """The step of every checkpoint in ``folder``; each must load with ``weights_only=True``."""
    return {p.name: step_of(p) for p in sorted(folder.glob("*.ckpt"))}


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name] if folder.is_dir() else []


class AtStep(pl.Callback):
    """Calls ``action(trainer)`` once, at the end of training step ``step`` (0: when training starts)."""

    def __init__(self, step: int, action):
        self.step, self.action = step, action

    def on_train_start(self, trainer, pl_module):
        if self.step == 0:
            self.action(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.step and trainer.global_step == self.step:
            self.action(trainer)


# ------------------------------------------------------------------------------------- kills and signals
def test_kill_9_at_random_moments_then_finish(data, tmp_path):
    """scripts/train.py killed with SIGKILL twice (once at a random moment, once in the middle of a
    checkpoint write), then stopped with SIGTERM, then run to the end: every checkpoint left loads, the
    step count never goes back, each re-run resumes, and it reaches max_steps."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    max_steps = 12  # room for the three interruptions on a fast machine too
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), *overrides(data, run, f"trainer.max_steps={max_steps}")]
    cmd = [a.replace("paths.output_dir=", "hydra.run.dir=") for a in cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    rng = random.Random(15)
    newest = 0  # the highest step seen in a checkpoint so far
    for round_, how in enumerate(["random", "during-write", "sigterm", "finish"]):
        log = (tmp_path / f"round{round_}.log").open("w")
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if how == "finish":
                assert proc.wait(timeout=120) == 0, (tmp_path / f"round{round_}.log").read_text()[-3000:]
            else:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # wait until this run has saved a step of its own
                    if (ckpts / "last.ckpt").is_file() and step_of(ckpts / "last.ckpt") > newest:
                        break
                    assert proc.poll() is None, (tmp_path / f"round{round_}.log").read_text()[-3000:]
                    time.sleep(0.02)
                if how == "random":
                    time.sleep(rng.uniform(0.0, 0.3))
                elif how == "during-write":
                    while time.monotonic() < deadline and not temp_files(ckpts):
                        time.sleep(0.001)
                proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
                code = proc.wait(timeout=60)
                assert code == (128 + signal.SIGTERM if how == "sigterm" else -signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        text = (tmp_path / f"round{round_}.log").read_text()
        if round_ > 0:
            resumed = [int(m) for m in re.findall(r"resuming from \S+ at step (\d+)", text)]
            assert resumed and resumed[0] == newest, text[-3000:]  # from the newest checkpoint
        if how == "sigterm":
            assert "training stopped by SIGTERM" in text and "run the same command again" in text
        steps = checkpoint_steps(ckpts)  # every checkpoint left loads
        assert max(steps.values()) >= newest  # a kill between step<N>.ckpt and last.ckpt leaves last one behind
        newest = max(steps.values())
    assert steps["last.ckpt"] == newest == max_steps
    assert temp_files(ckpts) == [], "temporary files left after a clean finish"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_last_checkpoint_and_stop(signum, data, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    cfg = compose_cfg(overrides(data, tmp_path / "run", "trainer.max_steps=20",
                                "callbacks.time_checkpoint.train_time_interval.minutes=60"))
    kill = AtStep(2, lambda trainer: os.kill(os.getpid(), signum))
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, extra_callbacks=[kill])
    stopped = info.value
    assert stopped.signal_name == signal.Signals(signum).name and stopped.exit_code == 128 + signum
    assert stopped.step in (2, 3)  # the step in progress when the signal came is finished
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert stopped.checkpoint == last and step_of(last) == stopped.step
    assert f"saved '{last}'" in str(stopped)
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are given back


# ------------------------------------------------------------------------------------------- resume checks
def test_resume_refuses_another_run_and_allows_harmless_changes(data, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(overrides(data, run, "trainer.max_steps=2")))
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)[CONFIG_KEY]["model"]["width"] == 0.125
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    with pytest.raises(ResumeMismatchError) as info:
        train(compose_cfg(overrides(data, run, "trainer.max_steps=3", "model.width=0.25", f"dataset.root={moved}")))
    msg = str(info.value)
    assert "model.width: 0.125 (saved run) -> 0.25 (this command)" in msg
    assert f"dataset.root: '{data.resolve()}' (saved run) -> '{moved.resolve()}' (this command)" in msg
    assert "resume=false" in msg and "name=" in msg and "resume_allow_changes=[dataset.root,model.width]" in msg
    assert "trainer.max_steps" not in msg
    assert step_of(last) == 2  # nothing was touched
    # steps, logging, batch size and workers may change; so may a key that resume_allow_changes names
    summary = train(compose_cfg(overrides(data, run, "trainer.max_steps=3", "trainer.log_every_n_steps=1",
                                          "dataset.batch_size=2", f"dataset.root={moved}",
                                          "resume_allow_changes=[dataset.root]")))
    assert summary["global_step"] == 3 and step_of(last) == 3


def test_resume_false_keeps_the_earlier_checkpoints_until_the_new_run_saves(data, tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    train(compose_cfg(overrides(data, run, "trainer.max_steps=2")))
    earlier = checkpoint_steps(ckpts)

    def crash(trainer):
        raise RuntimeError("crash before the first checkpoint")

    cfg = compose_cfg(overrides(data, run, "trainer.max_steps=1", "resume=false",
                                "callbacks.time_checkpoint.train_time_interval.minutes=60"))
    with pytest.raises(RuntimeError, match="crash before"):  # a new run that never saved: nothing moved
        train(cfg, extra_callbacks=[AtStep(1, crash)])
    assert checkpoint_steps(ckpts) == earlier
    summary = train(compose_cfg(overrides(data, run, "trainer.max_steps=1", "resume=false")))
    assert summary["global_step"] == 1
    (previous,) = ckpts.glob("previous-*")
    assert checkpoint_steps(previous) == earlier  # moved aside whole, not deleted
    assert set(checkpoint_steps(ckpts).values()) == {1}


# ---------------------------------------------------------------------------------------- corrupt files
@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A run directory trained for 2 steps (last.ckpt and step00000002.ckpt, both at step 2)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(compose_cfg(overrides(data, run, "trainer.max_steps=2")))
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside a tensor: torch.load alone would not notice
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, lambda p: p.write_bytes(b"")],
                         ids=["truncated", "flipped-byte", "empty"])
def test_corrupt_last_checkpoint_falls_back_to_the_newest_readable(damage, data, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    last = run / "checkpoints" / "last.ckpt"
    damage(last)
    bad = last.read_bytes()
    with pytest.warns(CheckpointWarning, match=f"'{last}' is unreadable") as caught:
        summary = train(compose_cfg(overrides(data, run, "trainer.max_steps=3")))
    assert not any("step00000002.ckpt" in str(w.message) for w in caught)
    assert summary["global_step"] == 3  # resumed at step 2 from step00000002.ckpt, not from 0
    (kept,) = (run / "checkpoints").glob("last.ckpt.corrupt-*")
    assert kept.read_bytes() == bad  # set aside as it was, never deleted
    assert step_of(last) == 3


# ------------------------------------------------------------------------------------------- full disk
def test_full_disk_while_checkpointing_is_a_clear_error_and_keeps_earlier_checkpoints(data, tmp_path, monkeypatch):
    fill_disk(monkeypatch, limit=4096, armed=False)
    run = tmp_path / "run"
    disk_fills = AtStep(2, lambda trainer: setattr(DiskFullAfter, "armed", True))  # before step 2's checkpoints
    with pytest.raises(OSError, match=r"cannot write '.*step00000002\.ckpt'.*No space left.*is full") as info:
        train(compose_cfg(overrides(data, run, "trainer.max_steps=5")), extra_callbacks=[disk_fills])
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(DiskFullAfter, "armed", False)
    assert checkpoint_steps(run / "checkpoints") == {"last.ckpt": 1, "step00000001.ckpt": 1}
    assert temp_files(run / "checkpoints") == []


def test_full_disk_on_a_small_tmpfs_keeps_earlier_checkpoints(tmp_path):
    """A real full file system: a 1 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        io = AtomicCheckpointIO()
        state = {"w": torch.zeros(60_000), "global_step": 0}  # ~240 kB a file
        written = []
        with pytest.raises(OSError, match="No space left on device.*is full") as info:
            for step in range(1, 10):
                state["global_step"] = step
                io.save_checkpoint(state, small / "last.ckpt")  # replaced each time
                io.save_checkpoint(state, small / f"step{step}.ckpt")
                written.append(step)
        assert info.value.errno == errno.ENOSPC and written
        steps = checkpoint_steps(small)
        assert steps.pop("last.ckpt") >= written[-1]
        assert sorted(steps.values()) == written  # every earlier file intact
        assert temp_files(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_full_disk_stops_an_export_and_keeps_the_finished_folders(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import unsup3d.export.runner as runner
    from unsup3d.export import ExportOptions, export_images
    from unsup3d.model import Unsup3D

    photos = []
    for i in range(4):
        photos.append(tmp_path / f"p{i}.png")
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(photos[-1])
    real_dir = runner.atomic_dir
    calls = []

    def atomic_dir(target, **kwargs):  # the third folder's files hit a full disk
        calls.append(target)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, f"cannot write {str(target)!r}: No space left on device (the disk is full)")
        return real_dir(target, **kwargs)

    monkeypatch.setattr(runner, "atomic_dir", atomic_dir)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0)
    summary = export_images(model, photos, tmp_path / "out", ExportOptions(formats=["obj"], progress=False))
    assert [r.status for r in summary.results] == ["ok", "ok", "failed", "failed"]
    assert "No space left" in summary.results[2].message and "full disk" in summary.results[3].message
    assert len(calls) == 3  # it stopped instead of failing every further image
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0", "p1"]
    assert all((tmp_path / "out" / n / "params.json").is_file() for n in ("p0", "p1"))


# ------------------------------------------------------------------------------------------ data mid-run
def test_dataset_folder_vanishing_mid_run_is_a_clear_error(data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data, root)
    gone = AtStep(1, lambda trainer: shutil.rmtree(root / "train"))
    cfg = compose_cfg(overrides(root, tmp_path / "run", "trainer.max_steps=30", "dataset.num_workers=1"))
    with pytest.raises(FileNotFoundError, match="has disappeared since the run started"):
        train(cfg, extra_callbacks=[gone])


def test_image_unreadable_mid_run_is_skipped_with_a_count(data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data, root)
    victim = sorted((root / "train" / "image").iterdir())[0]
    spoil = AtStep(0, lambda trainer: victim.write_bytes(b"not an image any more"))  # listed, then spoilt
    cfg = compose_cfg(overrides(root, tmp_path / "run", "trainer.max_steps=6"))  # one epoch: every image
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(cfg, extra_callbacks=[spoil])
    assert summary["global_step"] == 6 and summary["skipped_images"] == 1
    assert any(victim.name in str(w.message) for w in caught if issubclass(w.category, CorruptImageWarning))
