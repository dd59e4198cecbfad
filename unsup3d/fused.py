"""Chains of element-wise operations fused by ``torch.compile``, with an eager fallback.

The training step's work beyond the networks is mostly many small element-wise operations on
``B x H x W`` maps (the rasterizer's winning faces, the normals, the shading, the compositing over the
background, the photometric loss); run one by one, each pass over memory costs more than its arithmetic
(the winners' depth and barycentrics at B = 64, 64 x 64: 30.5 ms eager, 5.4 ms compiled on a 2-core CPU).
:func:`fused` compiles such a function on its first call (dynamic shapes, so new batch or image sizes do not
recompile) and falls back to the plain function, with one warning, where compilation is unavailable (no C++
compiler for the CPU backend, no Triton for CUDA) or fails. The results are the same either way. The compiled
kernels are cached on disk by Inductor: a machine compiles them once (about 2 minutes on 2 cores), later
processes trace the functions again and load the kernels (about 30 s).

``UNSUP3D_COMPILE`` selects: ``auto`` (default), ``0`` (never compile: eager PyTorch only), ``1`` (compile
everywhere, falling back on failure). ``auto`` compiles in training runs only, outside ``torch.inference_mode``
and :func:`eager` blocks (validation, image logging): :func:`unsup3d.training.train` and the training benchmarks
call :func:`set_auto_compile`. Everywhere else (evaluation, export, the demo, data generation) the kernels run
eager: tracing and loading them again, even from a warm disk cache, costs more than a one-off pass saves
(measured on a 2-core CPU: ``unsup3d-eval`` of 100 images with the baselines 38 s compiled from a warm cache,
114 s cold, 15 s eager; exporting 4 meshes with videos 32 / 47 / 12 s; generating 4,164 synthetic images
113 s compiled cold, 76 s eager, the same files); a training step saves ~0.07 s compiled, thousands of times.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

__all__ = ["COMPILE_ENV", "compile_enabled", "eager", "fused", "set_auto_compile"]

COMPILE_ENV = "UNSUP3D_COMPILE"

F = TypeVar("F", bound=Callable)

_failed: set[str] = set()
#: What ``UNSUP3D_COMPILE=auto`` means in this process (see :func:`set_auto_compile`).
_auto_compile = False
_local = threading.local()  # depth of the eager() blocks this thread is in


def set_auto_compile(enabled: bool) -> None:
    """Make ``UNSUP3D_COMPILE=auto`` compile (``True``: a training run, thousands of steps pay the compile
    time back) or run eager (``False``, the default: one-off passes) in this process."""
    global _auto_compile
    _auto_compile = bool(enabled)


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """A block whose kernels run eager under ``UNSUP3D_COMPILE=auto``: one-off passes inside a training run
    (validation runs under ``torch.no_grad``, not inference mode, while fitting: compiling its graphs cost 44 s
    at the quick start's first validation on a cold cache, for 4 batches an epoch).

    Example:
        >>> with eager():
        ...     compile_enabled()
        False
    """
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def compile_enabled() -> bool:
    """Whether :func:`fused` compiles now: ``UNSUP3D_COMPILE`` is ``1`` / ``true`` / ``on``, or it is ``auto``
    (or unset), :func:`set_auto_compile` enabled it, and neither ``torch.inference_mode`` nor :func:`eager` is
    active."""
    setting = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if setting in ("0", "false", "off", "no"):
        return False
    if setting in ("1", "true", "on", "yes"):
        return True
    return _auto_compile and not torch.is_inference_mode_enabled() and not getattr(_local, "depth", 0)


@functools.cache
def _compiled(fn: Callable) -> Callable:
    # Kernels not specialised on the thread count: torch recompiles a function whenever torch.set_num_threads
    # changed (unsup3d.training.threads probes 1 thread); with dynamic threads that finds Inductor's cached
    # kernels instead of compiling them all again (quick start on a cold cache: 93 s at the first probe),
    # at the same step time (0.074-0.079 s against 0.078 s beyond the networks, bench_train, 2-core EPYC).
    return torch.compile(fn, dynamic=True, options={"cpp.dynamic_threads": True})


def fused(fn: F) -> F:
    """``fn`` compiled with ``torch.compile`` when enabled and working, else ``fn`` itself.

    Use on pure tensor functions (no in-place updates of inputs, no data-dependent Python control flow).
    """
    if not compile_enabled() or fn.__qualname__ in _failed:
        return fn
    compiled = _compiled(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if fn.__qualname__ in _failed:
            return fn(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any backend failure: the eager function is exact
            _failed.add(fn.__qualname__)
            warnings.warn(f"torch.compile of {fn.__qualname__} failed ({type(exc).__name__}: {exc}); using eager "
                          f"PyTorch (set {COMPILE_ENV}=0 to skip compiling)", RuntimeWarning, stacklevel=2)
            return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
