"""Geometry runs in full precision, whatever autocast context calls it.

Mixed precision (``trainer.precision=bf16-mixed`` / ``16-mixed``) is for the networks. Under
``torch.autocast`` PyTorch lowers matrix products (``bmm``, ``baddbmm``, ``matmul``...) to
bf16/fp16, and bf16 has 8 bits of mantissa: a depth of about 1.0 is then quantised in steps of
about 0.004, so a depth range of 0.2 holds only ~50 values, and the lifted, rotated and projected
points move by whole pixels. Everything geometric (lift, rotate/translate, project, rasterize,
barycentrics, normals, inverse-warp grids, the reconstruction's ``grid_sample``, shading, the
depth metrics) therefore runs with autocast switched off, in float32 for half-precision inputs;
float32 and float64 inputs keep their dtype.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

__all__ = ["HALF_DTYPES", "full_precision", "geometry_precision", "to_full"]

HALF_DTYPES = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Any])


def to_full(x: Any) -> Any:
    """``x`` in float32 if it is a half-precision tensor; anything else unchanged."""
    if torch.is_tensor(x) and x.dtype in HALF_DTYPES:
        return x.float()
    return x


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)
    return bool(check(device_type)) if check is not None else device_type in ("cpu", "cuda")


@contextlib.contextmanager
def full_precision(device: torch.device | str | None = None) -> Iterator[None]:
    """Context in which autocast is off for ``device``'s type (and for the CPU).

    Args:
        device: the device the enclosed ops run on (a tensor's ``.device``); default the CPU.
    """
    kinds = {"cpu"}
    if device is not None:
        kinds.add(torch.device(device).type)
    with contextlib.ExitStack() as stack:
        for kind in sorted(kinds):
            if _autocast_available(kind):
                stack.enter_context(torch.autocast(device_type=kind, enabled=False))
        yield


def _first_device(args, kwargs) -> torch.device | None:
    for value in (*args, *kwargs.values()):
        if torch.is_tensor(value):
            return value.device
    return None


def geometry_precision(fn: F) -> F:
    """Decorator: run ``fn`` with autocast off and its half-precision tensor arguments in float32.

    Tensors passed positionally or by keyword are converted (:func:`to_full`); float32 and float64
    stay as they are, so results follow the input's dtype except that half inputs give float32.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = _first_device(args, kwargs)
        args = tuple(to_full(a) for a in args)
        kwargs = {k: to_full(v) for k, v in kwargs.items()}
        with full_precision(device):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
