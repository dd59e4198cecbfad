"""Fault tolerance of training (issue 15): SIGTERM / Ctrl-C. Tiny models (TINY of test_train) and no
validation, so each run takes seconds."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_train import TINY, compose_cfg

from unsup3d.data.synthetic import SyntheticConfig, generate_dataset
from unsup3d.training import TrainingInterrupted, train

# No validation, no time limit.
FAST = [*TINY, "logger=none", "trainer.max_time=null", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0"]


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


# ------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_last_checkpoint_and_stop(signum, data, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    cfg = compose_cfg(overrides(data, tmp_path / "run", "trainer.max_steps=20"))
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
