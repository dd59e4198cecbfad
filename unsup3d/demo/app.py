"""The demo page (Gradio Blocks): drop a photo, see its factors, turn the textured mesh, relight it.

:func:`build_app` lays out the page and wires its events to :mod:`.reconstruct`; :func:`launch` serves it
with the demo's settings (local only, an upload limit, a queue, no analytics, no fonts or scripts from
outside the server). The reconstruction is also an API endpoint, ``/reconstruct``::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    outputs = client.predict(handle_file("face.jpg"), False, api_name="/reconstruct")

``outputs`` are, in order (:data:`API_OUTPUTS`): the crop the model saw, the canonical albedo, depth
(16-bit PNG, nearer is brighter), normals and shading, the viewer's GLB, the relit and posed views, the
turntable video, the GLB and zip downloads, the viewpoint and light (JSON), and the slider values (light
``dx``, ``dy``, yaw in degrees). Bad input raises an error with the page's message.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no usage reports

import gradio as gr  # noqa: E402

from unsup3d.core import core_of  # noqa: E402
from unsup3d.data.crops import FaceNotFoundError  # noqa: E402
from unsup3d.files.images import IMAGE_EXTENSIONS, ImageLoadError  # noqa: E402

from .reconstruct import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    Reconstruction,
    Scene,
    demo_export_options,
    posed_view,
    prune_results,
    reconstruct,
    relit_view,
)

__all__ = ["API_OUTPUTS", "EXAMPLES_DIR", "build_app", "example_photos", "launch", "offline_theme"]

log = logging.getLogger(__name__)

#: Example photos shipped with the package (the original release's demo photos, MIT licence).
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: The outputs of the ``/reconstruct`` API, in order.
API_OUTPUTS = ("input", "albedo", "depth", "normal", "shading", "viewer", "relit", "posed", "turntable",
               "glb", "zip", "info", "light_dx", "light_dy", "yaw_deg")

_CSS = """
.unsup3d-map img { image-rendering: pixelated; width: 100% !important; height: 100% !important;
                   object-fit: contain; }
"""


def example_photos() -> list[Path]:
    """The shipped example photos, sorted."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


def offline_theme() -> gr.themes.Base:
    """Gradio's default theme with the system's fonts: nothing fetched from a font service or the server."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def _user_error(exc: BaseException) -> gr.Error:
    """The message the page shows (and the API raises) for a photo that cannot be used."""
    if isinstance(exc, ImageLoadError):
        return gr.Error(f"This file cannot be used: {exc.reason}.", title="Unusable photo", print_exception=False)
    if isinstance(exc, FaceNotFoundError):
        return gr.Error("No face was found in this photo. Untick 'Crop around the face' to use the centre of "
                        "the photo instead.", title="No face found", print_exception=False)
    return gr.Error(f"Reconstruction failed: {type(exc).__name__}: {exc}", title="Error")


def _info(rec: Reconstruction) -> dict[str, Any]:
    """The viewpoint, light and crop of a reconstruction, flat and rounded, for the page."""
    p = rec.params
    view, light, inp = p["view"], p["light"], p["input"]
    return {
        "photo": inp.get("original_name"),
        "photo_size": "x".join(str(v) for v in inp["source_size"]),
        "crop_box": [round(v, 1) for v in inp["crop_box"]],
        "pitch_deg": round(view["rx_deg"], 2),
        "yaw_deg": round(view["ry_deg"], 2),
        "roll_deg": round(view["rz_deg"], 2),
        "translation": [round(view[k], 4) for k in ("tx", "ty", "tz")],
        "light_ambient": round(light["ambient"], 3),
        "light_diffuse": round(light["diffuse"], 3),
        "light_direction": [round(v, 3) for v in light["direction"]],
        "depth_range": [round(p["depth"]["min"], 4), round(p["depth"]["max"], 4)],
        "result": rec.name,
    }


def build_app(
    model,
    work_dir: str | os.PathLike,
    *,
    detect_face: bool = False,
    options=None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    checkpoint: str | None = None,
    logger: Callable[[str, Path, dict], None] | None = None,
    keep: int = 200,
    view_size: int = 256,
    concurrency: int = 2,
) -> gr.Blocks:
    """The demo page.

    Args:
        model: an :class:`~unsup3d.core.Unsup3DCore` or the training module holding one, in eval mode on its device.
        work_dir: the result folders go here (:func:`.reconstruct.reconstruct`).
        detect_face: the initial state of the face-crop checkbox.
        options: :class:`~unsup3d.export.ExportOptions` of the files (default
            :func:`.reconstruct.demo_export_options`).
        max_pixels: larger photos are refused before decoding.
        checkpoint: recorded in ``params.json``.
        logger: called as ``logger(name, folder, params)`` after each reconstruction (e.g.
            :class:`unsup3d.export.ExportWandbLogger`), one call at a time; its failures are logged, not shown.
        keep: at most this many result folders are kept in ``work_dir`` (the oldest are deleted).
        view_size: side of the relit and posed views in pixels.
        concurrency: reconstructions run at once (more requests wait in the queue).
    """
    options = options or demo_export_options()
    renderer = core_of(model).renderer
    work_dir = Path(work_dir)
    log_lock = threading.Lock()
    prune_lock = threading.Lock()

    def on_reconstruct(photo, crop_face: bool):
        if not photo:
            raise gr.Error("Upload a photo first (drop an image file on the photo box).", title="No photo",
                           print_exception=False)
        try:
            rec = reconstruct(model, photo, work_dir, detect_face=bool(crop_face), options=options,
                              max_pixels=max_pixels, checkpoint=checkpoint)
        except (ImageLoadError, FaceNotFoundError) as exc:
            raise _user_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - the page says what happened; the server goes on
            log.exception("reconstruction of %s failed", photo)
            raise _user_error(exc) from None
        if logger is not None:
            with log_lock:
                try:
                    logger(rec.name, rec.folder, rec.params)
                except Exception as exc:  # noqa: BLE001 - logging must not lose the result
                    log.warning("W&B logging of %s failed: %s", rec.name, exc)
        with prune_lock:
            prune_results(work_dir, keep)
        scene = rec.scene
        dx, dy = scene.light
        yaw = scene.yaw_deg
        maps = [str(rec.maps[m]) for m in ("input", "albedo", "depth", "normal", "shading")]
        video = rec.videos.get("turntable")
        return (
            *maps, str(rec.glb),
            relit_view(renderer, scene, dx, dy, view_size), posed_view(renderer, scene, yaw, view_size),
            str(video) if video else None, str(rec.glb), str(rec.zip), _info(rec),
            round(dx, 3), round(dy, 3), round(yaw, 1), scene,
        )

    def on_light(scene: Scene | None, dx: float, dy: float):
        return None if scene is None else relit_view(renderer, scene, dx, dy, view_size)

    def on_yaw(scene: Scene | None, yaw: float):
        return None if scene is None else posed_view(renderer, scene, yaw, view_size)

    with gr.Blocks(title="unsup3d demo", analytics_enabled=False, delete_cache=(1800, 7200)) as demo:
        gr.Markdown(
            "## unsup3d: a photo to a textured 3D face\n"
            "Drop a photo (any common image format). The model factors it into depth, albedo, viewpoint and "
            "light (Wu, Rupprecht & Vedaldi, CVPR 2020); turn the mesh in the viewer, move the light, "
            "change the yaw, download the meshes.")
        scene_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                photo = gr.File(label="Photo", file_types=[*IMAGE_EXTENSIONS, "image"], type="filepath",
                                elem_id="photo")
                crop_face = gr.Checkbox(value=bool(detect_face), label="Crop around the face (face detection)")
                run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
                examples = example_photos()
                gr.Examples([[str(p)] for p in examples], inputs=[photo], label="Example photos",
                            examples_per_page=len(examples) or 1)
            with gr.Column(scale=2, min_width=360):
                viewer = gr.Model3D(label="Textured mesh (drag to rotate, scroll to zoom)", elem_id="viewer",
                                    clear_color=(0.92, 0.92, 0.92, 1.0), height=420)
        with gr.Row(equal_height=True):
            maps = [gr.Image(label=label, type="filepath", format="png", interactive=False, height=180,
                             elem_id=f"map-{key}", elem_classes=["unsup3d-map"])
                    for key, label in (("input", "Crop the model saw"), ("albedo", "Canonical albedo"),
                                       ("depth", "Depth (near is bright)"), ("normal", "Normals"),
                                       ("shading", "Shading"))]
        with gr.Row():
            with gr.Column():
                relit = gr.Image(label="Relit (canonical view)", type="numpy", format="png", interactive=False,
                                 elem_id="relit")
                light_dx = gr.Slider(-1.0, 1.0, value=0.0, step=0.01, label="Light dx (x right)", elem_id="light-dx")
                light_dy = gr.Slider(-1.0, 1.0, value=0.0, step=0.01, label="Light dy (y down)", elem_id="light-dy")
            with gr.Column():
                posed = gr.Image(label="Posed view", type="numpy", format="png", interactive=False,
                                 elem_id="posed")
                yaw = gr.Slider(-90.0, 90.0, value=0.0, step=1.0, label="Yaw (degrees)", elem_id="yaw")
            with gr.Column():
                turntable = gr.Video(label="Turntable", interactive=False, autoplay=True, loop=True,
                                     elem_id="turntable")
        with gr.Row():
            glb_file = gr.File(label="Mesh (GLB)", interactive=False, elem_id="glb")
            zip_file = gr.File(label="OBJ + MTL + texture and maps (zip)", interactive=False, elem_id="zip")
            info = gr.JSON(label="Viewpoint and light", elem_id="info", open=True, max_height=300)

        outputs = [*maps, viewer, relit, posed, turntable, glb_file, zip_file, info, light_dx, light_dy, yaw,
                   scene_state]
        gr.on([run.click, photo.upload], on_reconstruct, inputs=[photo, crop_face], outputs=outputs,
              api_name="reconstruct", concurrency_limit=concurrency, concurrency_id="reconstruct")
        for slider in (light_dx, light_dy):
            slider.input(on_light, inputs=[scene_state, light_dx, light_dy], outputs=relit,
                         api_visibility="private", trigger_mode="always_last", show_progress="hidden")
        yaw.input(on_yaw, inputs=[scene_state, yaw], outputs=posed, api_visibility="private",
                  trigger_mode="always_last", show_progress="hidden")
    return demo


def launch(
    demo: gr.Blocks,
    work_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size: str | int = "25mb",
    max_queue: int = 32,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
):
    """Serve the page: bound to ``host`` (local only by default), uploads up to ``max_file_size``, a
    queue of ``max_queue`` waiting requests, no public share link unless ``share``, the offline theme.

    Returns:
        What ``Blocks.launch`` returns (``(app, local_url, share_url)``); with ``block`` it returns only
        when the server stops.
    """
    demo.queue(max_size=max_queue, default_concurrency_limit=2)
    return demo.launch(
        server_name=host, server_port=int(port), share=bool(share), max_file_size=max_file_size,
        allowed_paths=[str(Path(work_dir).resolve()), str(EXAMPLES_DIR)], show_error=True,
        prevent_thread_lock=not block, quiet=quiet, theme=offline_theme(), css=_CSS, ssr_mode=False,
        mcp_server=False, pwa=False, footer_links=["api"], inbrowser=False,
    )
