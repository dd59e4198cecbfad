"""Export meshes, factor maps and videos for photos with a trained model (``unsup3d-export``).

    unsup3d-export --checkpoint ckpt.ckpt --output out/ photos/ more/*.jpg one.png [--video] [--posed]
    python scripts/export.py --help

One concept a module (the CLI :func:`main` is a thin layer over the others):

* :mod:`.inputs`: :func:`collect_inputs` expands files, folders (recursively) and glob patterns into image
  paths; :func:`assign_output_names` gives each its output folder name.
* Each photo is made into the model's ``S x S`` input by :mod:`unsup3d.data.crops` (:func:`prepare_input`,
  :func:`model_batch`; re-exported here): loaded robustly, cropped centred or around the largest face.
* :mod:`.item`: :func:`export_factors` writes everything for one item of a batch of
  :class:`~unsup3d.factors.Factors` (the files and their conventions are listed there).
* :mod:`.runner`: :func:`export_images` runs the model over many photos in batches, each result written
  into its own folder atomically; :func:`check_output_dir`.
* :mod:`.summary`: :class:`ExportSummary` of the outcomes; :mod:`.wandb_log`: optional W&B logging;
  :mod:`.options`: :class:`ExportOptions`; :mod:`.cli`: the command.
"""

from unsup3d.data.crops import PreparedInput, model_batch, prepare_image, prepare_input
from unsup3d.files.depth_encoding import DEPTH_PNG_MAPPING
from unsup3d.files.images import IMAGE_EXTENSIONS

from .cli import build_parser, main
from .inputs import InputError, assign_output_names, collect_inputs
from .item import FactorArrays, export_factors
from .options import ExportOptions
from .runner import OutputDirError, check_output_dir, export_images
from .summary import ExportSummary, ImageResult
from .wandb_log import ExportWandbLogger

__all__ = [
    "DEPTH_PNG_MAPPING",
    "IMAGE_EXTENSIONS",
    "ExportOptions",
    "ExportSummary",
    "ExportWandbLogger",
    "FactorArrays",
    "ImageResult",
    "InputError",
    "OutputDirError",
    "PreparedInput",
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
