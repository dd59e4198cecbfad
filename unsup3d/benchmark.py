"""Timing helper shared by the ``scripts/bench_*.py`` benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["time_runs"]


def time_runs(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu", warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls
    (CUDA is synchronised around each call so the times include the kernels)."""
    device = torch.device(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times
