"""The data loader's worker processes: signals left to the main process, stopped when it exits, seeded
as Lightning seeds them. Every loader of :class:`~unsup3d.data.datamodule.Unsup3DDataModule` with workers
starts them with :func:`worker_init` (training's graceful stop, :mod:`unsup3d.training.shutdown`, relies on
it: the main process saves ``last.ckpt`` and shuts the workers down itself).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal

from lightning_fabric.utilities.seed import pl_worker_init_function

__all__ = ["main_exiting_event", "worker_init"]


def worker_init(worker_id: int, main_exiting=None) -> None:
    """Loader workers leave Ctrl-C and a job scheduler's SIGTERM to the main process, which saves a
    checkpoint, stops, then shuts the workers down; a worker killed by a signal meant for the whole
    process group would fail the batch being loaded. SIGINT is ignored. SIGTERM is ignored unless the
    main process is exiting (``main_exiting``, a ``multiprocessing`` event set at its interpreter exit:
    ``multiprocessing`` then SIGTERMs and joins live workers, and a worker deaf to it would make it wait
    for ever) or is gone. Workers are seeded as Lightning's ``seed_everything(workers=True)`` does.

    Args:
        worker_id: the worker's index (``DataLoader``'s ``worker_init_fn`` argument).
        main_exiting: :func:`main_exiting_event` of the main process (None: SIGTERM is always ignored).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if main_exiting is None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        parent = os.getppid()

        def on_sigterm(signum, frame) -> None:  # runs in the worker's main thread, whichever thread got it
            if main_exiting.is_set() or os.getppid() != parent:
                os._exit(0)  # status 0: the data loader reports no failure

        signal.signal(signal.SIGTERM, on_sigterm)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):  # when Lightning would have added its own worker_init_fn
        pl_worker_init_function(worker_id)


_main_exiting = None


def main_exiting_event():
    """The event :func:`worker_init` reads: created once per process, set at interpreter exit (``atexit``
    runs it before ``multiprocessing``'s own exit handler, registered earlier, terminates the workers)."""
    global _main_exiting
    if _main_exiting is None:
        _main_exiting = multiprocessing.Event()
        atexit.register(_main_exiting.set)
    return _main_exiting
