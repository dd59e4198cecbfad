"""Fetch and safely unpack the original release's datasets and pretrained checkpoints.

The archives are the ones of the original release (``data/download_*.sh`` and
``pretrained/download_pretrained_*.sh`` in github.com/elliottwu/unsup3d), hosted by the Oxford VGG
group; ``$UNSUP3D_DOWNLOAD_URL`` replaces their base URL (a mirror, or a local server in tests).
Downloads go to a ``.part`` file that is renamed only when complete; archives are checked (size,
optional SHA-256, zip CRCs / tar headers) and every member is validated before anything is written:
absolute paths, ``..`` components, links and special files are refused, so nothing can land outside
the target folder. :func:`fetch` unpacks into a temporary folder next to the target and renames the
result into place, so an interrupted or failed download or unpacking never leaves a partial folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "BASE_URL",
    "DOWNLOAD_URL_ENV",
    "RESOURCES",
    "DownloadError",
    "Resource",
    "check_archive",
    "download_file",
    "fetch",
    "resource_url",
    "safe_extract",
    "sha256sum",
]

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/research/unsup3d/data"
#: Environment variable whose value replaces :data:`BASE_URL` (the archives keep their file names).
DOWNLOAD_URL_ENV = "UNSUP3D_DOWNLOAD_URL"


@dataclass(frozen=True)
class Resource:
    """One downloadable archive: where it lives, which folder it unpacks to, where it goes."""

    url: str
    folder: str  # top-level folder inside the archive
    default_output: str  # parent folder it is unpacked into (relative to the repository root)
    description: str
    min_size: int = 1 << 20  # anything smaller is an error page, not the archive


RESOURCES: dict[str, Resource] = {
    "synface": Resource(
        f"{BASE_URL}/synface.zip",
        "synface",
        "data",
        "synthetic faces rendered from the Basel Face Model, with ground-truth depth",
    ),
    "cat": Resource(
        f"{BASE_URL}/cat_combined.zip",
        "cat_combined",
        "data",
        "cat faces (Cat Head dataset + Oxford-IIIT Pet), cropped",
    ),
    "syncar": Resource(f"{BASE_URL}/syncar.zip", "syncar", "data", "synthetic cars rendered from ShapeNet"),
    "pretrained_celeba": Resource(
        f"{BASE_URL}/pretrained_celeba.zip",
        "pretrained_celeba",
        "pretrained",
        "authors' checkpoint trained on CelebA",
    ),
    "pretrained_synface": Resource(
        f"{BASE_URL}/pretrained_synface.zip",
        "pretrained_synface",
        "pretrained",
        "authors' checkpoint trained on synface",
    ),
    "pretrained_cat": Resource(
        f"{BASE_URL}/pretrained_cat.zip",
        "pretrained_cat",
        "pretrained",
        "authors' checkpoint trained on cat faces",
    ),
    "pretrained_syncar": Resource(
        f"{BASE_URL}/pretrained_syncar.zip",
        "pretrained_syncar",
        "pretrained",
        "authors' checkpoint trained on synthetic cars",
    ),
}


class DownloadError(RuntimeError):
    """A download, integrity check or extraction failed; the message says what to do."""


def resource_url(name: str) -> str:
    """The URL of resource ``name``: its own, or the same file name under ``$UNSUP3D_DOWNLOAD_URL``.

    Raises:
        DownloadError: an unknown resource.
    """
    if name not in RESOURCES:
        raise DownloadError(f"unknown resource '{name}'; choose from {', '.join(RESOURCES)}")
    url = RESOURCES[name].url
    base = os.environ.get(DOWNLOAD_URL_ENV, "").strip()
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if base else url


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_file(
    url: str, dest: str | Path, timeout: float = 30.0, min_size: int = 0, progress: bool = True,
    hint: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (renamed when complete; removed on failure).

    Args:
        url: what to fetch (``http(s)://`` or ``file://``).
        dest: the file to create (its folder is created).
        timeout: seconds to wait for the connection and for each read.
        min_size: fewer bytes than this is an error (an error page, not the file).
        progress: report every 5 % on stderr (when the server sends the size).
        hint: what to do when the download fails, appended to the error message (default: fetch the
            file by hand and unpack it with ``scripts/download_data.py --archive``).

    Raises:
        DownloadError: network failure (offline, timeout, HTTP error, the server going away), a
            truncated transfer, an HTML page instead of a file, or a file smaller than ``min_size`` bytes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if hint is None:
        hint = (
            f"If this machine is offline or the server is unreachable, download {url} by hand (browser, "
            "curl) and unpack it with --archive /path/to/file (see data/README.md)."
        )
    hint = f" {hint}" if hint else ""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            ctype = resp.headers.get("Content-Type", "")
            if "text/html" in ctype:
                raise DownloadError(f"{url} returned an HTML page, not an archive (moved?).{hint}")
            total = int(resp.headers.get("Content-Length") or 0)
            done, last = 0, -1
            while block := resp.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress and total and (pct := done * 100 // total) != last and pct % 5 == 0:
                    _log(f"  {dest.name}: {pct}% of {total / 2**20:.1f} MiB")
                    last = pct
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}.{hint}") from err
    if total and done != total:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} is truncated ({done} of {total} bytes).{hint}")
    if done < min_size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} gave only {done} bytes (expected at least {min_size}).{hint}")
    os.replace(part, dest)
    return dest


def _archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DownloadError(f"'{path}' is neither a zip nor a tar archive (a truncated download, or another file)")


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (p.parts and ":" in p.parts[0]) or ".." in p.parts:
        raise DownloadError(
            f"refusing to unpack '{archive}': member '{name}' would land outside the target folder"
        )
    return p


def check_archive(path: str | Path, min_size: int = 0, sha256: str | None = None) -> list[str]:
    """Verify an archive before unpacking.

    Checks the size, the optional SHA-256, the zip CRCs (or that every tar header reads), and
    that no member is absolute, climbs with ``..``, or is a link or special file.

    Returns:
        The member names.

    Raises:
        DownloadError: naming the archive and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"archive '{path}' does not exist")
    size = path.stat().st_size
    if size < min_size:
        raise DownloadError(
            f"archive '{path}' is {size} bytes, expected at least {min_size}: incomplete download?"
        )
    if sha256 and sha256sum(path).lower() != sha256.lower():
        raise DownloadError(f"archive '{path}' does not match the expected SHA-256 {sha256}")
    names = []
    try:
        if _archive_kind(path) == "zip":
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise DownloadError(f"archive '{path}' is corrupt (bad CRC in '{bad}')")
                for info in zf.infolist():
                    _check_member_name(info.filename, path)
                    ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored none
                    if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                        raise DownloadError(
                            f"refusing to unpack '{path}': member '{info.filename}' is a link or special file"
                        )
                    names.append(info.filename)
        else:
            with tarfile.open(path) as tf:
                for m in tf.getmembers():
                    _check_member_name(m.name, path)
                    if not (m.isfile() or m.isdir()):
                        raise DownloadError(
                            f"refusing to unpack '{path}': member '{m.name}' is a link or special file"
                        )
                    names.append(m.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise DownloadError(f"archive '{path}' is corrupt: {err}") from err
    if not names:
        raise DownloadError(f"archive '{path}' is empty")
    return names


def _members(archive: Path):
    """``(name, is_dir, open_member)`` for every member of a zip or tar archive, in order."""
    if _archive_kind(archive) == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                yield info.filename, info.is_dir(), (lambda info=info: zf.open(info))
    else:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                yield m.name, m.isdir(), (lambda m=m: tf.extractfile(m))


def safe_extract(
    archive: str | Path, target: str | Path, min_size: int = 0, sha256: str | None = None
) -> Path:
    """Check ``archive`` (:func:`check_archive`) and unpack it into ``target``.

    Members are written one by one to paths resolved inside ``target`` (never through links).
    """
    archive, target = Path(archive), Path(target)
    check_archive(archive, min_size, sha256)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()

    def dest_of(name: str) -> Path:
        out = (root / _check_member_name(name, archive)).resolve()
        if out != root and root not in out.parents:
            raise DownloadError(f"refusing to unpack '{archive}': '{name}' resolves outside '{target}'")
        return out

    for name, is_dir, open_member in _members(archive):
        out = dest_of(name)
        if is_dir:
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def _move_into_place(source: Path, dest: Path, force: bool, staging: Path) -> bool:
    """Rename ``source`` onto ``dest`` (same file system). An existing ``dest`` is kept unless ``force``,
    then moved into ``staging`` first (and restored if the rename fails). Returns whether it moved."""
    if dest.exists() or dest.is_symlink():
        if not force:
            return False
        old = staging / f"replaced-{dest.name}"
        os.rename(dest, old)
        try:
            os.rename(source, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        return True
    os.rename(source, dest)
    return True


def _install(
    archive: Path, output: Path, res: Resource, staging: Path, min_size: int, sha256: str | None,
    force: bool, verify: Callable[[Path], None] | None,
) -> None:
    """Check and unpack ``archive`` into ``staging``, run ``verify`` on the resource's folder there, then
    rename every top-level entry into ``output`` (existing ones are kept unless ``force``)."""
    unpacked = staging / "unpacked"
    safe_extract(archive, unpacked, min_size, sha256)
    if verify is not None:
        verify(unpacked / res.folder)
    for entry in sorted(unpacked.iterdir()):
        if not _move_into_place(entry, output / entry.name, force, staging):
            _log(f"'{output / entry.name}' already exists, kept")


def fetch(
    name: str,
    output: str | Path | None = None,
    url: str | None = None,
    archive: str | Path | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    force: bool = False,
    keep_archive: bool = False,
    verify: Callable[[Path], None] | None = None,
    hint: str | None = None,
) -> Path:
    """Download (or take ``archive``) and unpack resource ``name`` into ``output``.

    The archive is downloaded and unpacked into a hidden temporary folder inside ``output``; only when
    it is complete, checked and verified is the resource's folder renamed into place, so an interrupted
    or failed run leaves nothing that looks usable (and removes its temporary folder).

    Args:
        name: a key of :data:`RESOURCES`.
        output: the parent folder (default: the resource's ``default_output``).
        url: download from here (default :func:`resource_url`: the release's URL, or the same file
            under ``$UNSUP3D_DOWNLOAD_URL``).
        archive: unpack this local file instead of downloading.
        sha256: the archive's expected SHA-256.
        timeout: network timeout in seconds.
        force: unpack again and replace an existing folder (the old one is removed only once the new
            one is in place).
        keep_archive: keep the downloaded archive in ``output``.
        verify: called with the unpacked resource folder (still in the temporary folder) before it is
            moved into place; it raises :class:`DownloadError` to refuse it.
        hint: what to do when the download fails (see :func:`download_file`).

    Returns:
        The unpacked folder ``<output>/<resource folder>``.

    Raises:
        DownloadError: an unknown resource, a failed download, a bad archive or a refused verification.
    """
    if name not in RESOURCES:
        raise DownloadError(f"unknown resource '{name}'; choose from {', '.join(RESOURCES)}")
    res = RESOURCES[name]
    output = Path(output if output is not None else res.default_output)
    final = output / res.folder
    if final.exists() and not force:
        _log(f"{name}: '{final}' already exists, skipping (use --force to unpack again)")
        return final
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=output))
    try:
        if archive is None:
            url = url or resource_url(name)
            _log(f"{name}: downloading {url}")
            path = download_file(url, staging / Path(url).name, timeout=timeout, min_size=res.min_size, hint=hint)
            _log(f"{name}: unpacking into '{output}'")
            _install(path, output, res, staging, res.min_size, sha256, force, verify)
            if keep_archive:
                shutil.move(str(path), output / path.name)
        else:
            _log(f"{name}: unpacking '{archive}' into '{output}'")
            _install(Path(archive), output, res, staging, 0, sha256, force, verify)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(output.iterdir()):
            output.rmdir()  # leave nothing behind after a failed download
    if not final.is_dir():
        _log(
            f"{name}: warning: the archive did not create '{final}'; look inside '{output}' and point "
            "dataset.root at the folder that holds train/val/test"
        )
    return final
