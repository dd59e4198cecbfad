"""Shared test setup."""

import sys

import pytest


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
