"""The outcome of an export run: one :class:`ImageResult` per input, gathered in an :class:`ExportSummary`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ExportSummary", "ImageResult"]


@dataclass
class ImageResult:
    """Outcome of one input: ``status`` is ``"ok"``, ``"failed"`` or ``"skipped"``."""

    input: str
    status: str
    message: str = ""
    output: str | None = None


@dataclass
class ExportSummary:
    """All outcomes of an export run, in input order."""

    results: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0

    def _with(self, status: str) -> list[ImageResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> list[ImageResult]:
        return self._with("ok")

    @property
    def failed(self) -> list[ImageResult]:
        return self._with("failed")

    @property
    def skipped(self) -> list[ImageResult]:
        return self._with("skipped")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (skipped images are not failures), else 1."""
        return 1 if self.failed else 0

    def report(self) -> str:
        """Human-readable summary: counts, then one line per failure and skip."""
        head = (f"{len(self.ok)} ok, {len(self.failed)} failed, {len(self.skipped)} skipped "
                f"({len(self.results)} inputs, {self.seconds:.1f} s)")
        lines = [head]
        lines += [f"  FAILED  {r.input}: {r.message}" for r in self.failed]
        lines += [f"  skipped {r.input}: {r.message}" for r in self.skipped]
        return "\n".join(lines)
