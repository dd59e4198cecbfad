"""The thread tuner keeps the thread count whose steps are fastest, and probes again when load changes."""

import pytest
import torch

from unsup3d.training.threads import AdaptiveThreads, ThreadTuner, thread_candidates


class FakeMachine:
    """Step times as a function of the thread count; ``cost`` can change mid-run (another process)."""

    def __init__(self, cost):
        self.cost, self.threads, self.applied = dict(cost), None, []

    def set_threads(self, n):
        self.threads = n
        self.applied.append(n)

    def run(self, tuner, steps):
        for _ in range(steps):
            tuner.step_done(self.cost[self.threads])


def test_candidates():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [2, 1]
    assert thread_candidates(6) == [6, 3, 1]
    with pytest.raises(ValueError):
        thread_candidates(0)


def test_idle_machine_keeps_all_cores():
    m = FakeMachine({2: 0.30, 1: 0.50})
    tuner = ThreadTuner([2, 1], probe_steps=3, warmup=1, period=50, set_threads=m.set_threads)
    m.run(tuner, 8)  # 4 steps at 2 threads, 4 at 1
    assert not tuner.probing and tuner.threads == 2 and m.threads == 2
    assert tuner.chosen_time == pytest.approx(0.30)
    assert dict(tuner.history) == {2: pytest.approx(0.30), 1: pytest.approx(0.50)}


def test_busy_machine_drops_to_one_thread_and_returns_when_the_load_goes():
    m = FakeMachine({2: 2.4, 1: 0.55})  # beside a busy loop: spinning OpenMP threads stall
    tuner = ThreadTuner([2, 1], probe_steps=3, warmup=1, period=20, set_threads=m.set_threads)
    m.run(tuner, 8)
    assert tuner.threads == 1 and m.threads == 1
    m.cost = {2: 0.30, 1: 0.50}  # the other process ended: found at the next periodic probe
    m.run(tuner, 20 + 8)
    assert tuner.threads == 2 and m.threads == 2


def test_a_slowdown_triggers_an_early_probe():
    m = FakeMachine({2: 0.30, 1: 0.50})
    tuner = ThreadTuner([2, 1], probe_steps=3, warmup=1, period=10_000, slowdown=1.5, set_threads=m.set_threads)
    m.run(tuner, 8)
    assert tuner.threads == 2
    m.cost = {2: 2.4, 1: 0.55}  # a busy loop starts
    m.run(tuner, 6)  # enough slow steps to notice
    assert tuner.probing
    m.run(tuner, 8)
    assert not tuner.probing and tuner.threads == 1


def test_noise_within_the_margin_keeps_the_present_count():
    m = FakeMachine({2: 0.50, 1: 0.49})
    tuner = ThreadTuner([2, 1], probe_steps=3, warmup=1, margin=0.05, set_threads=m.set_threads)
    m.run(tuner, 8)
    assert tuner.threads == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="positive"):
        ThreadTuner([0, 1])
    with pytest.raises(ValueError, match="probe_steps"):
        ThreadTuner([2, 1], probe_steps=0)


def test_callback_tunes_cpu_training_and_restores_the_thread_count():
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.lin(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    before = torch.get_num_threads()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 4)), batch_size=4)
    cb = AdaptiveThreads(candidates=[1, 2], probe_steps=2, warmup=0, period=100)
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    try:
        trainer.fit(Tiny(), data)
        assert cb.tuner is not None and len(cb.tuner.history) >= 2  # both counts were timed on real steps
        assert {n for n, _ in cb.tuner.history} == {1, 2}
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
