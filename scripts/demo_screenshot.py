"""The README's screenshot of the demo page: serve a checkpoint on a free local port, upload a photo in
headless Chromium (:func:`unsup3d.demo.browser.check_page`, the browser test's procedure), save the page.

    python scripts/demo_screenshot.py CKPT docs/demo.png [--photo PHOTO]
    python scripts/demo_screenshot.py --random-model docs/demo.png     # a tiny untrained model

Needs the demo extra (``make demo``) and Debian's chromium. The PNG is written with Pillow's optimiser;
``--width`` scales it down (default 1100 px wide); the file is replaced atomically.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
from pathlib import Path

from PIL import Image

from unsup3d.checkpoint import load_model
from unsup3d.files.atomic import atomic_save_bytes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _random_model():
    import torch

    from unsup3d.model import Unsup3D

    torch.manual_seed(0)
    return Unsup3D(image_size=64, width=0.125, lam_perc=0.0).eval()


def main(argv=None) -> int:
    from unsup3d.demo.app import build_app, example_photos, launch
    from unsup3d.demo.browser import check_page

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", help="checkpoint to serve (or --random-model)")
    p.add_argument("output", help="PNG file to write")
    p.add_argument("--random-model", action="store_true", help="a tiny untrained model instead of a checkpoint")
    p.add_argument("--photo", default=None, help="photo to upload (default: the first shipped face example)")
    p.add_argument("--width", type=int, default=1100, help="width of the saved PNG in pixels (default 1100)")
    args = p.parse_args(argv)
    if bool(args.checkpoint) == bool(args.random_model):
        p.error("give a checkpoint or --random-model")
    model = _random_model() if args.random_model else load_model(args.checkpoint)
    photo = args.photo or next(x for x in example_photos() if "face" in x.name)
    with tempfile.TemporaryDirectory(prefix="unsup3d-demo-shot-") as work:
        demo = build_app(model, work, checkpoint=args.checkpoint)
        _, url, _ = launch(demo, work, port=_free_port(), block=False, quiet=True)
        try:
            raw = Path(work) / "page.png"
            check = check_page(url, photo, raw)
        finally:
            demo.close()
        with Image.open(raw) as im:
            im = im.convert("RGB")
            if im.width > args.width:
                im = im.resize((args.width, round(im.height * args.width / im.width)), Image.LANCZOS)
            png = io.BytesIO()
            im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, format="PNG", optimize=True)
    out = atomic_save_bytes(args.output, png.getvalue())
    print(f"{out}: {out.stat().st_size // 1024} KB; canvas drawn: {check.canvas_drawn}; "
          f"hosts other than the server contacted: {check.external or 'none'}")
    return 0 if check.canvas_drawn and not check.external else 1


if __name__ == "__main__":
    sys.exit(main())
