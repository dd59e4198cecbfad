"""A local web demo (``unsup3d-demo``): drop a photo, turn the textured 3D face, relight it.

    unsup3d-demo --checkpoint model.ckpt [--host 127.0.0.1] [--port 7860] [--detect-face] [--device auto]

Needs the ``demo`` extra (``pip install -e '.[demo]'``, or ``make demo``). One concept a module:

* :mod:`.reconstruct`: the work, without any UI: :func:`~.reconstruct.reconstruct` (one photo through
  :mod:`unsup3d.export` into a result folder, plus a zip), :func:`~.reconstruct.relit_view` and
  :func:`~.reconstruct.posed_view` (single frames rendered from the kept :class:`~.reconstruct.Scene`).
  Importable without gradio.
* :mod:`.app`: the Gradio page and its ``/reconstruct`` API (:func:`~.app.build_app`,
  :func:`~.app.launch`).
* :mod:`.browser`: the page driven in a headless Chromium (the end-to-end test and the README screenshot).
* :mod:`.cli`: the command.
"""

from .reconstruct import (
    DEFAULT_MAX_PIXELS,
    Reconstruction,
    Scene,
    demo_export_options,
    posed_view,
    prune_results,
    reconstruct,
    relit_view,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Reconstruction",
    "Scene",
    "demo_export_options",
    "posed_view",
    "prune_results",
    "reconstruct",
    "relit_view",
]
