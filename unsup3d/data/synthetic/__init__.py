"""Procedural synthetic faces: the embedded default dataset (no download), a stand-in for synface.

Bilaterally symmetric, deformable face-like shapes with a symmetric albedo plus a small asymmetric
part, Lambertian shading and a random viewpoint, rendered with the project's
:class:`~unsup3d.renderer.Renderer` exactly as the model forms its reconstruction, with ground-truth
depth. One concept a module:

* :mod:`.params`: the settings (:class:`SyntheticConfig`), the parameters drawn per sample and their
  JSON records;
* :mod:`.shapes`: the canonical depth, albedo and background of given parameters;
* :mod:`.render`: the image and ground-truth depth seen from the sample's viewpoint;
* :mod:`.write`: the files of a split (the synface layout) and re-deriving a sample from them;
* :mod:`.cli`: the ``unsup3d-make-synthetic`` command (``scripts/make_synthetic.py``).
"""

from .params import (
    PARAM_SPEC,
    SPLIT_SEED_OFFSETS,
    VARIANTS,
    SyntheticConfig,
    params_from_records,
    params_to_records,
    sample_params,
    variant_config,
)
from .render import render_samples
from .shapes import background_image, canonical_albedo, canonical_shape
from .write import generate_dataset, generate_split, load_split_params, load_true_views, regenerate_sample

__all__ = [
    "PARAM_SPEC",
    "SPLIT_SEED_OFFSETS",
    "SyntheticConfig",
    "VARIANTS",
    "background_image",
    "canonical_albedo",
    "canonical_shape",
    "generate_dataset",
    "generate_split",
    "load_split_params",
    "load_true_views",
    "params_from_records",
    "params_to_records",
    "regenerate_sample",
    "render_samples",
    "sample_params",
    "variant_config",
]
