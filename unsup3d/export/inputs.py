"""The inputs of an export: files, folders and glob patterns expanded into image paths, and the unique
output folder name of each.

Folders are searched with :func:`unsup3d.files.images.find_images` and patterns filtered by
:data:`unsup3d.files.images.IMAGE_EXTENSIONS`, as the training data is.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from unsup3d.files.images import IMAGE_EXTENSIONS, find_images, is_image_file

__all__ = ["InputError", "assign_output_names", "collect_inputs"]

_GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """An input argument names nothing usable (missing path, empty folder, pattern without matches)."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{reason}: {self.path!r}")


def _expand_one(arg: str) -> list[Path]:
    """The image files named by one argument (a file, a folder or a glob pattern)."""
    path = Path(arg).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = find_images(path)
        if not found:
            raise InputError(arg, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder")
        return found
    if path.exists():
        raise InputError(arg, "not a regular file or folder")
    if _GLOB_CHARS & set(arg):
        found = sorted(
            Path(p) for p in glob.glob(os.path.expanduser(arg), recursive=True)
            if Path(p).is_file() and is_image_file(p)
        )
        if not found:
            raise InputError(arg, "no image files match the pattern")
        return found
    raise InputError(arg, "input not found")


def collect_inputs(
    paths: Iterable[str | os.PathLike],
    errors: list[tuple[str, str]] | None = None,
    exclude: str | os.PathLike | None = None,
) -> list[Path]:
    """Expand inputs into a list of image files.

    Files are kept whatever their extension (loading reports non-images); folders are searched
    recursively and glob patterns (``*``, ``?``, ``[...]``, ``**``) expanded, both keeping files with a
    common image extension (:data:`IMAGE_EXTENSIONS`, case-insensitive) and, for folders, skipping
    hidden files and folders. Order: the arguments' order, sorted within a folder or pattern; a file
    reached twice is kept once.

    Args:
        paths: files, folders and patterns.
        errors: when given, arguments naming nothing usable are appended as ``(argument, message)``
            and skipped; otherwise the first one raises.
        exclude: a folder whose files are never picked up by folder/pattern expansion (the output
            folder, so re-running on a parent folder does not export the exports).

    Returns:
        Image paths.

    Raises:
        InputError: a missing path, a folder without images or a pattern without matches (only
            when ``errors`` is None).
    """
    excl = Path(exclude).resolve() if exclude is not None else None
    out: list[Path] = []
    seen: set[Path] = set()
    for arg in paths:
        arg = os.fspath(arg)
        try:
            found = _expand_one(arg)
        except InputError as exc:
            if errors is None:
                raise
            errors.append((arg, str(exc)))
            continue
        explicit = len(found) == 1 and Path(arg).expanduser().is_file()
        for p in found:
            key = p.resolve()
            if key in seen:
                continue
            if not explicit and excl is not None and key.is_relative_to(excl):
                continue
            seen.add(key)
            out.append(p)
    return out


def _clean_stem(stem: str) -> str:
    name = "".join("_" if (c in '/\\:\0' or ord(c) < 32) else c for c in stem).strip(" .")
    return name or "image"


def assign_output_names(paths: Sequence[Path]) -> list[str]:
    """Unique output folder names: the file stem, ``stem_2``, ``stem_3``... for repeated stems.

    Names are compared case-insensitively (for case-insensitive file systems), and a suffixed name
    never takes another input's plain stem. Leading/trailing dots and spaces and path separators are
    removed (a file ``..png`` cannot write into the output folder itself).
    """
    stems = [_clean_stem(Path(p).stem) for p in paths]
    taken = {s.lower() for s in stems}
    used: set[str] = set()
    names = []
    for stem in stems:
        name, k = stem, 2
        while name.lower() in used or (name != stem and name.lower() in taken):
            name, k = f"{stem}_{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names
