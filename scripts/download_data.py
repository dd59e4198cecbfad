#!/usr/bin/env python
"""Download the original release's datasets and pretrained checkpoints and unpack them.

Examples:
    python scripts/download_data.py synface cat syncar          # datasets into data/
    python scripts/download_data.py pretrained                  # all four checkpoints into pretrained/
    python scripts/download_data.py synface --archive ~/Downloads/synface.zip   # fetched by hand
    python scripts/download_data.py --list

CelebA cannot be downloaded automatically: see data/README.md and scripts/prepare_celeba.py.
The procedural synthetic dataset needs no download: scripts/make_synthetic.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

# Load unsup3d/data/download.py on its own (standard library only): no torch import, so this script
# is quick and works before the package and its dependencies are installed.
_spec = importlib.util.spec_from_file_location(
    "unsup3d_download", Path(__file__).resolve().parents[1] / "unsup3d" / "data" / "download.py"
)
_download = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _download  # dataclasses look the module up while the class is created
_spec.loader.exec_module(_download)
RESOURCES, DownloadError, fetch = _download.RESOURCES, _download.DownloadError, _download.fetch

GROUPS = {
    "datasets": ["synface", "cat", "syncar"],
    "pretrained": [n for n in RESOURCES if n.startswith("pretrained_")],
}
GROUPS["all"] = GROUPS["datasets"] + GROUPS["pretrained"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"resources or groups: {', '.join([*RESOURCES, *GROUPS])}")
    parser.add_argument("--output", help="parent folder to unpack into (default: data/ or pretrained/)")
    parser.add_argument("--url", help="download from this URL instead (one resource only)")
    parser.add_argument(
        "--archive", help="unpack this already-downloaded archive instead (one resource only)"
    )
    parser.add_argument("--sha256", help="expected SHA-256 of the archive (one resource only)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    parser.add_argument("--force", action="store_true", help="unpack again even if the folder exists")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive")
    parser.add_argument("--list", action="store_true", help="list the resources and exit")
    args = parser.parse_args(argv)

    if args.list or not args.names:
        for name, res in RESOURCES.items():
            print(f"{name:20s} -> {res.default_output}/{res.folder:20s} {res.description}\n{'':24s}{res.url}")
        return 0 if args.list else 2
    names: list[str] = []
    for n in args.names:
        if n in GROUPS:
            names += GROUPS[n]
        elif n in RESOURCES:
            names.append(n)
        else:
            parser.error(f"unknown resource '{n}'; choose from {', '.join([*RESOURCES, *GROUPS])}")
    if len(names) > 1 and (args.url or args.archive or args.sha256):
        parser.error("--url, --archive and --sha256 apply to a single resource")
    try:
        for name in names:
            out = fetch(
                name,
                args.output,
                url=args.url,
                archive=args.archive,
                sha256=args.sha256,
                timeout=args.timeout,
                force=args.force,
                keep_archive=args.keep_archive,
            )
            print(f"{name}: ready in {out}")
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
