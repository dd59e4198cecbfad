"""The one check of tensor shapes: :func:`check_shape` compares a tensor (or a numpy array) with a shape written as the
docstrings write it (``"B x H x W"``, ``"B x 6"``, ``"... x 3"``) and raises a ``ValueError`` that names the
argument, the expected shape and the shape it got.

A shape is dimensions separated by ``x``: a number is that size exactly; a name (``B``, ``H``...) any size,
the same wherever the name appears and equal to a size given for it; ``...`` (first only) any number of
leading dimensions. ``" or "`` separates alternatives (``"B x H x W or B x 1 x H x W"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["check_shape"]


def _match(shape: tuple[int, ...], spec: str, sizes: dict[str, int]) -> dict[str, int] | None:
    """The sizes the names of one alternative ``spec`` take in ``shape`` (None when it does not match)."""
    dims = [d.strip() for d in spec.split(" x ")]
    leading = bool(dims) and dims[0] == "..."
    if leading:
        dims = dims[1:]
        if len(shape) < len(dims):
            return None
        shape = shape[len(shape) - len(dims):]
    elif len(shape) != len(dims):
        return None
    found = dict(sizes)
    for dim, size in zip(dims, shape):
        if dim.isdigit():
            if size != int(dim):
                return None
        elif found.setdefault(dim, size) != size:
            return None
    return found


def check_shape(x: Any, spec: str, name: str = "tensor", **sizes: int) -> dict[str, int]:
    """Check that ``x`` is a tensor (or a numpy array) of the shape ``spec``; return the size of each name in it.

    Args:
        x: the value to check (anything else than a tensor or an array fails with its type named).
        spec: the expected shape, e.g. ``"B x H x W x 3"`` (see the module docstring).
        name: what the error calls ``x`` (``"depth"``, ``"a viewpoint (rx, ry, rz, tx, ty, tz)"``).
        **sizes: sizes the names must have (``B=4``: the batch of another argument).

    Returns:
        ``{name: size}`` of the names in the alternative that matched, with ``sizes``.

    Raises:
        ValueError: ``expected <name> of shape <spec>[ with B = 4], got <shape>``.

    Example:
        >>> check_shape(torch.zeros(2, 8, 8), "B x H x W", "depth")
        {'B': 2, 'H': 8, 'W': 8}
        >>> check_shape(torch.zeros(2, 6), "B x 6", "view", B=3)
        Traceback (most recent call last):
        ...
        ValueError: expected view of shape B x 6 with B = 3, got (2, 6)
    """
    shape = getattr(x, "shape", None)
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        shape = tuple(shape)
        for alternative in spec.split(" or "):
            found = _match(shape, alternative.strip(), sizes)
            if found is not None:
                return found
        got = str(shape)
    else:
        got = f"a {type(x).__name__}"
    given = ", ".join(f"{k} = {v}" for k, v in sizes.items())
    raise ValueError(f"expected {name} of shape {spec}{' with ' + given if given else ''}, got {got}")
