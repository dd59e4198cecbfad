"""``unsup3d-demo``: serve the demo page for a checkpoint (needs the ``demo`` extra).

    unsup3d-demo --checkpoint model.ckpt [--host 127.0.0.1] [--port 7860] [--detect-face] [--device auto]
    unsup3d-demo --checkpoint celeba                 # a pretrained model of the original release by name
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from unsup3d.checkpoint import CheckpointError, load_model
from unsup3d.export.cli import positive_int
from unsup3d.export.options import TEXTURES
from unsup3d.inference import resolve_device
from unsup3d.pretrained import PRETRAINED_MODELS, resolve_checkpoint

from .reconstruct import DEFAULT_MAX_PIXELS, demo_export_options

__all__ = ["build_parser", "main", "private_upload_dir"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return value


@contextlib.contextmanager
def private_upload_dir() -> Iterator[Path]:
    """A folder of this server's own for Gradio's uploads and file cache, removed with everything in it when
    the block ends (the server stopped).

    Gradio keeps every uploaded photo, and a copy of every file it serves, in ``$GRADIO_TEMP_DIR`` (default
    ``<system temp>/gradio``) and leaves them there when the server stops. Inside this block
    ``GRADIO_TEMP_DIR`` names a fresh folder inside that one (``unsup3d-demo-uploads-*``); import gradio,
    build and launch the page inside it (Gradio reads the variable when it is imported and when the page's
    components and its server are made).
    """
    base = os.environ.get("GRADIO_TEMP_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="unsup3d-demo-uploads-", dir=base or None))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if base is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = base
        shutil.rmtree(folder, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT (also when a shell started the server in the background, which ignores SIGINT)
    stop the server like Ctrl-C, so the temporary results folder and the W&B run are closed."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unsup3d-demo",
        description="A local web page for a trained unsup3d model: drop a photo, see its crop, canonical albedo, "
                    "depth, normals and shading, turn the textured mesh in a 3D viewer, relight it, change its "
                    "yaw, download the GLB and a zip of the OBJ, texture and maps. The reconstruction is also "
                    "an API (gradio_client, api_name='/reconstruct').",
        epilog="Exit status: 0 when the server stopped normally, 2 for a bad checkpoint, option or port.",
    )
    p.add_argument("-c", "--checkpoint", required=True,
                   help="Lightning checkpoint of this project (.ckpt), original-release checkpoint (.pth), or "
                        f"a pretrained model of the original release by name ({', '.join(PRETRAINED_MODELS)}; "
                        "downloaded once into $UNSUP3D_CACHE_DIR, default ~/.cache/unsup3d)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs full unpickling (can run arbitrary code)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--detect-face", action="store_true",
                   help="tick 'Crop around the face' by default (OpenCV Haar cascade; photos without a face fail)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default auto)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="keep the result folders here (default: a temporary folder removed when the server stops; "
                        "the uploaded photos are always removed then)")
    p.add_argument("--keep", type=positive_int, default=200, metavar="N",
                   help="keep at most N result folders, deleting the oldest (default 200)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-file-size", default="25mb", metavar="SIZE",
                   help="largest upload, e.g. 25mb or 2gb (default 25mb)")
    g.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"largest photo in pixels, checked before decoding (default {DEFAULT_MAX_PIXELS:,})")
    g.add_argument("--concurrency", type=positive_int, default=2, metavar="N",
                   help="reconstructions run at once; more requests wait in the queue (default 2)")
    g.add_argument("--max-queue", type=positive_int, default=32, metavar="N",
                   help="requests that may wait in the queue (default 32)")
    g = p.add_argument_group("outputs")
    g.add_argument("--texture", choices=TEXTURES, default="canonical",
                   help="mesh texture: shaded canonical image (default) or unlit albedo")
    g.add_argument("--num-frames", type=positive_int, default=24, metavar="N", help="turntable frames (default 24)")
    g.add_argument("--view-size", type=positive_int, default=256, metavar="N",
                   help="side of the relit and posed views and the turntable in pixels (default 256)")
    g = p.add_argument_group("tracking")
    g.add_argument("--wandb", action="store_true",
                   help="log each reconstruction to a W&B run (offline unless WANDB_API_KEY is set)")
    g.add_argument("--wandb-project", default="unsup3d-demo", help="W&B project (default unsup3d-demo)")
    g.add_argument("--wandb-name", default=None, help="W&B run name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; serves until interrupted and returns the exit status (see ``--help``)."""
    args = build_parser().parse_args(argv)

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        try:  # Gradio's uploads and served copies: a folder of this server's own, removed when it stops
            stack.enter_context(private_upload_dir())
        except OSError as exc:
            return fail(f"cannot create a folder for the uploads in $GRADIO_TEMP_DIR: {exc.strerror or exc}")
        return _serve(args, fail)


def _serve(args: argparse.Namespace, fail) -> int:
    """The command after its arguments are read, inside :func:`private_upload_dir`."""
    try:
        from . import app
    except ImportError as exc:
        return fail(f"the demo needs the 'demo' extra ({exc}): pip install -e '.[demo]' (or make demo)")
    try:
        device = resolve_device(args.device)
        options = demo_export_options(texture=args.texture, num_frames=args.num_frames,
                                      output_size=args.view_size)
    except ValueError as exc:
        return fail(str(exc))
    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
        model = load_model(checkpoint, trust=args.trust_checkpoint, map_location="cpu").to(device)  # in eval mode
    except CheckpointError as exc:
        return fail(str(exc))

    temporary = args.output is None
    work_dir = Path(tempfile.mkdtemp(prefix="unsup3d-demo-")) if temporary else Path(args.output).expanduser()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(f"cannot create the output folder {str(work_dir)!r}: {exc.strerror or exc}")
    logger = None
    try:
        if args.wandb:
            from unsup3d.export import ExportWandbLogger

            try:
                logger = ExportWandbLogger(args.wandb_project, args.wandb_name,
                                           {"checkpoint": str(checkpoint), "job": "demo", **options.to_json()},
                                           dir=work_dir)
            except Exception as exc:  # noqa: BLE001 - wandb raises its own error types
                return fail(f"could not start a W&B run: {exc}")
        demo = app.build_app(model, work_dir, detect_face=args.detect_face, options=options,
                             max_pixels=args.max_pixels, checkpoint=str(checkpoint.resolve()),
                             logger=logger, keep=args.keep, view_size=args.view_size,
                             concurrency=args.concurrency)
        print(f"unsup3d-demo: '{args.checkpoint}' on {device}; results in '{work_dir}'"
              f"{' (removed at exit)' if temporary else ''}", file=sys.stderr)
        _stop_on_signals()
        try:
            app.launch(demo, work_dir, host=args.host, port=args.port, max_file_size=args.max_file_size,
                       max_queue=args.max_queue, share=args.share)
        except OSError as exc:  # the port is taken, the address cannot be bound
            return fail(f"cannot serve on {args.host}:{args.port}: {exc}")
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        if logger is not None:
            with contextlib.suppress(Exception):
                logger.finish()
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
