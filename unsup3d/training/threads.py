"""Torch's CPU thread count chosen by measurement while training, so that a shared machine does not
stall the run.

On a machine that training does not have to itself (a laptop with a browser, a second job), torch's
default of one intra-op thread per core makes every parallel region wait for the slowest thread, and
OpenMP's idle threads spin for the CPU the other process needs: on a 2-core Xeon the synthetic_cpu step
ran 7.8x slower beside one single-threaded busy loop (issue 19), while one thread ran it about 1.1x
slower than one thread idle. No fixed setting is best on both an idle and a busy machine, and the OS
does not say what the next minutes hold, so :class:`ThreadTuner` times the training steps themselves:
it tries each candidate thread count for a few steps, keeps the fastest, and probes again periodically
or as soon as the steps become markedly slower than what it chose on (another process started).
:class:`AdaptiveThreads` is the Lightning callback around it (``threads=auto``, the default).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch

__all__ = ["ThreadTuner", "AdaptiveThreads", "thread_candidates"]


def thread_candidates(max_threads: int) -> list[int]:
    """Thread counts worth trying on ``max_threads`` cores: all of them, half of them and one.

    >>> thread_candidates(2)
    [2, 1]
    >>> thread_candidates(16)
    [16, 8, 1]
    """
    if max_threads < 1:
        raise ValueError(f"max_threads must be >= 1, got {max_threads}")
    return sorted({max_threads, max(1, max_threads // 2), 1}, reverse=True)


class ThreadTuner:
    """Choose the intra-op thread count from measured step times.

    Call :meth:`step_done` with the seconds each training step took; the tuner calls ``set_threads`` when
    it changes the count. It runs in two phases:

    - *probe*: each candidate in turn for ``warmup + probe_steps`` steps (the first ``warmup`` steps after
      a change are not counted: the OpenMP pool resizes); the median of the counted steps is that
      candidate's time. The fastest candidate wins; a candidate must be ``margin`` faster than the
      present count to replace it (noise does not flip the choice).
    - *run*: the chosen count for ``period`` steps, then a new probe; earlier if the median of the last
      ``probe_steps`` steps exceeds ``slowdown`` times the time it was chosen on (load changed).

    Args:
        candidates: thread counts to try (default :func:`thread_candidates` of torch's present count);
            the first is used first.
        probe_steps, warmup, period, slowdown, margin: as above.
        set_threads: applies a count (default ``torch.set_num_threads``).
    """

    def __init__(self, candidates: Sequence[int] | None = None, probe_steps: int = 5, warmup: int = 1,
                 period: int = 300, slowdown: float = 1.5, margin: float = 0.05,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        cands = list(candidates) if candidates is not None else thread_candidates(torch.get_num_threads())
        if not cands or any(int(c) < 1 for c in cands):
            raise ValueError(f"thread candidates must be positive integers, got {cands}")
        if probe_steps < 1 or warmup < 0 or period < 1 or slowdown <= 1 or margin < 0:
            raise ValueError("ThreadTuner needs probe_steps >= 1, warmup >= 0, period >= 1, slowdown > 1, "
                             "margin >= 0")
        self.candidates = [int(c) for c in cands]
        self.probe_steps, self.warmup, self.period = int(probe_steps), int(warmup), int(period)
        self.slowdown, self.margin = float(slowdown), float(margin)
        self._set = set_threads
        self.threads = self.candidates[0]
        self.chosen_time: float | None = None
        self.history: list[tuple[int, float]] = []  # (threads, median step seconds) of every probe
        self._start_probe()

    def _apply(self, threads: int) -> None:
        self.threads = threads
        self._set(threads)

    def _start_probe(self) -> None:
        self.probing = True
        self._order = list(self.candidates)
        if self.chosen_time is not None:  # the present count first: no pool resize to start with
            self._order.remove(self.threads)
            self._order.insert(0, self.threads)
        self._results: dict[int, float] = {}
        self._times: list[float] = []
        self._since = 0  # steps run at the chosen count (the run phase)
        self._apply(self._order[0])

    def step_done(self, seconds: float) -> None:
        """Record one training step's duration (seconds)."""
        self._times.append(float(seconds))
        if self.probing:
            counted = self._times[self.warmup:]
            if len(counted) < self.probe_steps:
                return
            med = statistics.median(counted)
            self._results[self.threads] = med
            self.history.append((self.threads, med))
            done = len(self._results)
            if done < len(self._order):
                self._times = []
                self._apply(self._order[done])
                return
            first = self._order[0]
            best = min(self._results, key=self._results.get)
            if self._results[best] > (1 - self.margin) * self._results[first]:
                best = first
            self.probing, self.chosen_time, self._times = False, self._results[best], []
            if best != self.threads:
                self._apply(best)
            return
        self._since += 1
        self._times = recent = self._times[-self.probe_steps:]
        slow = (len(recent) == self.probe_steps and self._since > self.warmup + self.probe_steps
                and statistics.median(recent) > self.slowdown * self.chosen_time)
        if slow or self._since >= self.period:
            self._start_probe()


class AdaptiveThreads(pl.Callback):
    """Lightning callback: :class:`ThreadTuner` over the training steps (``threads=auto``).

    A step is timed from the start to the end of its training batch (forward, losses, backward,
    optimiser; not data loading, validation or checkpoints). CPU runs only; torch's thread count is
    restored when training ends.
    """

    def __init__(self, **tuner_kwargs) -> None:
        self.tuner_kwargs = tuner_kwargs
        self.tuner: ThreadTuner | None = None
        self._t0: float | None = None
        self._initial: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type != "cpu":
            return
        self._initial = torch.get_num_threads()
        self.tuner = ThreadTuner(**self.tuner_kwargs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.tuner is not None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.tuner is not None and self._t0 is not None:
            self.tuner.step_done(time.perf_counter() - self._t0)
            self._t0 = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._initial is not None:
            torch.set_num_threads(self._initial)
