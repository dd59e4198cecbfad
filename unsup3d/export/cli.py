"""``unsup3d-export``: the command line over the export library (``scripts/export.py`` is the same command).

    unsup3d-export --checkpoint ckpt.ckpt --output out/ photos/ more/*.jpg one.png [--video] [--posed]
    unsup3d-export --checkpoint celeba --output out/ photo.jpg --detect-face   # a pretrained model by name
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from unsup3d.checkpoint import CheckpointError, load_model
from unsup3d.inference import resolve_device
from unsup3d.pretrained import PRETRAINED_MODELS, resolve_checkpoint

from .inputs import collect_inputs
from .options import MESH_FORMATS, PRECISIONS, TEXTURES, ExportOptions
from .runner import OutputDirError, check_output_dir, export_images
from .summary import ExportSummary
from .wandb_log import ExportWandbLogger

__all__ = ["build_parser", "main"]


def _formats(text: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in fmts if f not in MESH_FORMATS]
    if not fmts or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(MESH_FORMATS)}, got {text!r}")
    return fmts


def _rgb(text: str) -> tuple[int, int, int]:
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}
    if text.lower() in named:
        return named[text.lower()]
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise argparse.ArgumentTypeError(f"expected R,G,B in 0..255 or white/black/gray, got {text!r}")
    return vals


def int_at_least(minimum: int, expected: str):
    """argparse ``type`` for an integer ``>= minimum`` (the error says ``expected <expected>``).

    Args:
        minimum: the smallest accepted value.
        expected: what the error message says was expected (``"a positive integer"``).

    Returns:
        A function ``text -> int`` raising ``argparse.ArgumentTypeError`` for other text.
    """

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = minimum - 1
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v

    return parse


#: argparse ``type`` of a positive integer (the demo's options use it too).
positive_int = int_at_least(1, "a positive integer")
_non_negative_int = int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unsup3d-export",
        description="Reconstruct photos with a trained unsup3d model: textured meshes (OBJ/GLB/PLY), depth, "
                    "normal, albedo and shading maps, viewpoint and light (params.json), optional videos. "
                    "Each image gets its own folder <output>/<image stem>/, written atomically.",
        epilog="Exit status: 0 when every image succeeded (or was skipped), 1 when any failed, 2 for a bad "
               "checkpoint, output folder or option.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively) or glob patterns (quote them)")
    p.add_argument("-c", "--checkpoint", required=True,
                   help="Lightning checkpoint of this project (.ckpt), original-release checkpoint (.pth), or "
                        f"a pretrained model of the original release by name ({', '.join(PRETRAINED_MODELS)}; "
                        "downloaded once into $UNSUP3D_CACHE_DIR, default ~/.cache/unsup3d)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs full unpickling (can run arbitrary code)")
    g = p.add_argument_group("input")
    g.add_argument("--detect-face", action="store_true",
                   help="crop around the largest human face (OpenCV Haar cascade); images without one fail")
    g.add_argument("--background", type=_rgb, default=(255, 255, 255), metavar="R,G,B",
                   help="colour behind transparent pixels (default white)")
    g = p.add_argument_group("mesh")
    g.add_argument("--formats", type=_formats, default=("obj", "glb"), metavar="LIST",
                   help="mesh formats, comma-separated from obj,glb,ply (default obj,glb)")
    g.add_argument("--texture", choices=TEXTURES, default="canonical",
                   help="mesh texture: shaded canonical image (default) or unlit albedo")
    g.add_argument("--texture-size", type=positive_int, default=None, metavar="N",
                   help="side of the texture PNG in pixels (default: the model's image size)")
    g.add_argument("--crop-border", type=_non_negative_int, default=0, metavar="N",
                   help="trim N rows/columns on each side of the mesh grid (default 0)")
    g.add_argument("--posed", action="store_true", help="also write the mesh in the input view's pose")
    g = p.add_argument_group("video")
    g.add_argument("--video", action="store_true",
                   help="write turntable (textured and shape-only) and relighting mp4 videos")
    g.add_argument("--gif", action="store_true", help="write the videos as GIFs (implies --video)")
    g.add_argument("--output-size", type=positive_int, default=256, metavar="N",
                   help="video frame size in pixels (default 256)")
    g.add_argument("--render-size", type=positive_int, default=None, metavar="N",
                   help="render the video frames at N px, then resize them to --output-size (default: "
                        "min(output size, 2 x the model's image size); the mesh and texture have one vertex and "
                        "texel per input pixel)")
    g.add_argument("--num-frames", type=positive_int, default=30, metavar="N", help="frames per video (default 30)")
    g.add_argument("--fps", type=float, default=15.0, help="video frame rate (default 15)")
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="images per model call (16)")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default auto)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the networks' precision: fp32 (default) or bf16 (about 2x faster on CPUs with AVX512_BF16 "
                        "or AMX, and on recent GPUs; geometry, meshes and maps stay fp32)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing output folders (default: skip those images)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--wandb", action="store_true",
                   help="log each result to a W&B run (offline unless WANDB_API_KEY is set)")
    g.add_argument("--wandb-project", default="unsup3d-export", help="W&B project (default unsup3d-export)")
    g.add_argument("--wandb-name", default=None, help="W&B run name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see ``--help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(msg: str, code: int = 2) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return code

    try:
        options = ExportOptions(
            formats=args.formats, texture=args.texture, texture_size=args.texture_size,
            crop_border=args.crop_border, posed=args.posed, detect_face=args.detect_face,
            background=args.background, video=args.video or args.gif, gif=args.gif,
            num_frames=args.num_frames, fps=args.fps, output_size=args.output_size, render_size=args.render_size,
            batch_size=args.batch_size, precision=args.precision, overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        device = resolve_device(args.device)
    except ValueError as exc:
        return fail(str(exc))

    try:
        out_dir = check_output_dir(args.output)
    except OutputDirError as exc:
        return fail(str(exc))
    input_errors: list[tuple[str, str]] = []
    paths = collect_inputs(args.inputs, errors=input_errors, exclude=out_dir)
    if not paths and not input_errors:
        return fail("no input images (the output folder's own files are never used as inputs)", 1)
    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
        model = load_model(checkpoint, trust=args.trust_checkpoint, map_location="cpu")
    except CheckpointError as exc:
        return fail(str(exc))
    size = model.core.image_size
    if options.crop_border and size - 2 * options.crop_border < 2:
        return fail(f"--crop-border {options.crop_border} leaves no mesh of a {size}x{size} depth map")
    model = model.to(device)  # in eval mode (load_model)

    logger = None
    if args.wandb:
        try:
            logger = ExportWandbLogger(args.wandb_project, args.wandb_name,
                                       {"checkpoint": str(args.checkpoint), **options.to_json()}, dir=out_dir)
        except Exception as exc:  # noqa: BLE001 - wandb raises its own error types
            return fail(f"could not start a W&B run: {exc}")
    if options.progress:
        print(f"exporting {len(paths)} image(s) with '{args.checkpoint}' on {device} into '{out_dir}'",
              file=sys.stderr)
    summary = ExportSummary()
    try:
        summary = export_images(model, paths, out_dir, options, checkpoint=str(checkpoint.resolve()),
                                input_errors=input_errors, logger=logger)
    except KeyboardInterrupt:
        print("interrupted: finished folders are kept, the one in progress was discarded", file=sys.stderr)
        return 130
    finally:
        if logger is not None:
            with contextlib.suppress(Exception):
                logger.finish(summary)
    print(summary.report(), file=sys.stderr if summary.failed else sys.stdout)
    return summary.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
