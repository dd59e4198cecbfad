"""Shared test setup."""

import os
import sys

# The suite runs eager PyTorch: torch.compile would spend seconds per new shape and dtype on the many
# tiny cases here (and subprocesses inherit this). tests/test_fused.py checks the compiled kernels.
os.environ.setdefault("UNSUP3D_COMPILE", "0")

import pytest
import torch

from unsup3d.model import Unsup3D

#: Image size of the :func:`tiny` model.
TINY_SIZE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random model (64x64, width 0.125, no perceptual loss) and its Lightning-style checkpoint."""
    torch.manual_seed(0)
    model = Unsup3D(image_size=TINY_SIZE, width=0.125, lam_perc=0.0).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model, path


@pytest.fixture(autouse=True)
def _reset_wandb():
    """wandb keeps process-wide state (settings, the active run) between runs; tests that start a run
    change WANDB_* variables, so reset it after each test that used wandb."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and hasattr(wandb, "teardown"):
        if wandb.run is not None:
            wandb.finish()
        wandb.teardown()


def pytest_unconfigure(config):
    """Bound the interpreter's exit: should a child process or thread left by a test keep it alive, print
    every thread's stack after 120 s and exit with status 1, so CI fails with a trace instead of hanging."""
    import faulthandler

    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)
