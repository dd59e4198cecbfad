"""What an export writes and how: :class:`ExportOptions` (the flags of ``unsup3d-export``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MESH_FORMATS", "PRECISIONS", "TEXTURES", "VIDEOS", "ExportOptions"]

MESH_FORMATS = ("obj", "glb", "ply")
TEXTURES = ("canonical", "albedo")
#: The videos of ``--video``: textured turntable, shape-only turntable, relighting.
VIDEOS = ("turntable", "turntable_shape", "relight")
#: Precision of the networks' pass (geometry is always fp32): ``fp32``, or ``bf16`` autocast.
PRECISIONS = ("fp32", "bf16")


@dataclass
class ExportOptions:
    """What to write and how (the CLI flags of the same names).

    Attributes:
        formats: mesh formats, any of ``obj``, ``glb``, ``ply``.
        texture: ``"canonical"`` (shaded canonical image) or ``"albedo"`` (unlit).
        texture_size: side of the texture PNGs (None: the model's image size).
        crop_border: rows/columns trimmed on every side of the mesh grid.
        posed: also write ``mesh_posed.*`` in the input view's pose.
        detect_face: crop around the largest human face (OpenCV Haar cascade) before resizing.
        background: RGB (0..255) behind transparent pixels of RGBA inputs.
        video: write the turntable and relighting videos; ``gif`` writes them as GIFs.
        videos: which of :data:`VIDEOS` ``video`` writes (default all).
        num_frames, fps, output_size: video frames per clip, frame rate and frame side in pixels.
        render_size: side at which the video frames are rendered before they are resized (bilinear) to
            ``output_size``; default ``min(output_size, 2 x the model's image size)``: the mesh and its
            texture have one vertex and one texel per input pixel, so at twice that size every texel and
            grid cell already spans 2 x 2 rendered pixels, and rendering 4x as many costs 4x the time.
        batch_size: images per model call.
        precision: the networks' precision, ``"fp32"`` (default) or ``"bf16"`` (autocast: about 2x
            faster on CPUs with AVX512_BF16 or AMX; the depth moves by about 1e-3; the renderer, meshes
            and maps stay fp32).
        overwrite: replace existing output folders (otherwise those images are skipped).
        progress: show a progress bar (stderr).
    """

    formats: tuple[str, ...] = ("obj", "glb")
    texture: str = "canonical"
    texture_size: int | None = None
    crop_border: int = 0
    posed: bool = False
    detect_face: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    video: bool = False
    gif: bool = False
    videos: tuple[str, ...] = VIDEOS
    num_frames: int = 30
    fps: float = 15.0
    output_size: int = 256
    render_size: int | None = None
    batch_size: int = 16
    precision: str = "fp32"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.formats = tuple(dict.fromkeys(f.strip().lower() for f in self.formats if f.strip()))
        bad = [f for f in self.formats if f not in MESH_FORMATS]
        if bad:
            raise ValueError(f"unknown mesh format(s) {bad}; choose from {list(MESH_FORMATS)}")
        self.videos = tuple(dict.fromkeys(self.videos))
        bad = [v for v in self.videos if v not in VIDEOS]
        if bad:
            raise ValueError(f"unknown video(s) {bad}; choose from {list(VIDEOS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {list(TEXTURES)}, got {self.texture!r}")
        if self.texture_size is not None and int(self.texture_size) < 1:
            raise ValueError(f"texture size must be positive, got {self.texture_size}")
        if int(self.crop_border) < 0:
            raise ValueError(f"crop border must be >= 0, got {self.crop_border}")
        for name in ("num_frames", "output_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name)}")
        if self.render_size is not None and int(self.render_size) < 1:
            raise ValueError(f"render size must be positive, got {self.render_size}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError(f"background must be three values in 0..255, got {self.background}")
        self.background = tuple(int(c) for c in self.background)
        if self.gif:
            self.video = True

    @property
    def video_ext(self) -> str:
        return ".gif" if self.gif else ".mp4"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["formats"], d["background"], d["videos"] = list(self.formats), list(self.background), list(self.videos)
        return d
