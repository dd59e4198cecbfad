"""Export meshes, factor maps and videos for photos with a trained model (``unsup3d-export``).

    unsup3d-export --checkpoint ckpt.ckpt --output out/ photos/ more/*.jpg one.png [--video] [--posed]
    python scripts/export.py --help

One concept a module (the CLI :func:`main` is a thin layer over the others):

* :mod:`.inputs`: :func:`collect_inputs` expands files, folders (recursively) and glob patterns into image
  paths; :func:`assign_output_names` gives each its output folder name.
* :mod:`.prepare`: :func:`prepare_input` / :func:`prepare_image` load one photo robustly
  (:mod:`unsup3d.images`) and crop it to the model's ``S x S`` input, optionally around the largest face;
  :func:`model_batch` stacks prepared photos into the model's input.
* :mod:`.item`: :func:`export_factors` writes everything for one item of a batch of
  :class:`~unsup3d.factors.Factors` (the files and their conventions are listed there).
* :mod:`.runner`: :func:`export_images` runs the model over many photos in batches, each result written
  into its own folder atomically; :func:`check_output_dir`.
* :mod:`.summary`: :class:`ExportSummary` of the outcomes; :mod:`.wandb_log`: optional W&B logging;
  :mod:`.options`: :class:`ExportOptions`; :mod:`.cli`: the command.
"""

from unsup3d.depth_encoding import DEPTH_PNG_MAPPING
from unsup3d.images import IMAGE_EXTENSIONS

from .cli import build_parser, main
from .inputs import InputError, assign_output_names, collect_inputs
from .item import FactorArrays, export_factors
from .options import ExportOptions
from .prepare import PreparedInput, model_batch, prepare_image, prepare_input
from .runner import OutputDirError, check_output_dir, export_images
from .summary import ExportSummary, ImageResult
from .wandb_log import WandbLogger

__all__ = [
    "DEPTH_PNG_MAPPING",
    "IMAGE_EXTENSIONS",
    "ExportOptions",
    "ExportSummary",
    "FactorArrays",
    "ImageResult",
    "InputError",
    "OutputDirError",
    "PreparedInput",
    "WandbLogger",
    "assign_output_names",
    "build_parser",
    "check_output_dir",
    "collect_inputs",
    "export_factors",
    "export_images",
    "main",
    "model_batch",
    "prepare_image",
    "prepare_input",
]
