"""Prefect UI artifacts shared by the flows: PNGs embedded in a markdown artifact, tables and per-step progress.

Prefect 3's ``create_image_artifact`` only takes a URL; local PNGs are therefore embedded in a markdown artifact as
base64 data URIs, at full resolution (the PNG file's own bytes) when the file is at most ``full_max_bytes``, else as a
preview downscaled to ``max_px`` on the long side; the caption names the file on disk and its full size. Tables
(metrics, per-epoch histories, per-detector comparisons) are table artifacts (``create_table_artifact``): sortable
columns in the UI.
"""

from __future__ import annotations

import base64
import io
import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast
from uuid import UUID

__all__ = [
    "png_data_uri",
    "images_markdown",
    "publish_images",
    "Progress",
    "summary_markdown",
    "publish_summary",
    "flatten_scalars",
    "table_rows",
    "publish_table",
    "FULL_MAX_BYTES",
    "PREVIEW_PX",
]

FULL_MAX_BYTES = 400_000
"""PNG files up to this size are embedded as they are (full resolution); larger ones as a ``PREVIEW_PX`` preview."""
PREVIEW_PX = 1200
"""Long side of the preview of a PNG larger than ``FULL_MAX_BYTES``."""


def png_data_uri(path: str | Path, max_px: int | None = None) -> str:
    """``data:image/png;base64,...`` of the PNG at ``path``: its own bytes when ``max_px`` is None, else downscaled to
    at most ``max_px`` pixels per side."""
    if max_px is None:
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        rgb.thumbnail((max_px, max_px))
        buf = io.BytesIO()
        rgb.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return int(im.size[0]), int(im.size[1])


def images_markdown(
    images: Mapping[str, str | Path],
    title: str,
    max_px: int = PREVIEW_PX,
    full_max_bytes: int = FULL_MAX_BYTES,
) -> str:
    """Markdown with a heading and one embedded image per ``{caption: png_path}``: full resolution up to
    ``full_max_bytes`` per file, else a ``max_px`` preview; under each image the file on disk and its full size
    (missing files are listed)."""
    lines = [f"# {title}", ""]
    for caption, path in images.items():
        f = Path(path)
        if not f.is_file():
            lines += [f"## {caption}", "", f"_(no image: {path} was not written)_", ""]
            continue
        w, h = _png_size(f)
        full = f.stat().st_size <= full_max_bytes
        note = "full resolution" if full else f"preview {max_px} px; full image in the file"
        lines += [
            f"## {caption}",
            "",
            f"![{caption}]({png_data_uri(f, None if full else max_px)})",
            "",
            f"_`{path}` ({w} x {h} px, {note})_",
            "",
        ]
    return "\n".join(lines)


def publish_images(
    images: Mapping[str, str | Path],
    key: str,
    title: str,
    max_px: int = PREVIEW_PX,
    full_max_bytes: int = FULL_MAX_BYTES,
) -> UUID | None:
    """Create the markdown image artifact ``key`` (lower-case, dashes) in the current flow run."""
    from prefect.artifacts import create_markdown_artifact

    return cast(
        UUID | None,
        create_markdown_artifact(markdown=images_markdown(images, title, max_px, full_max_bytes), key=key, description=title),
    )


class Progress:
    """A progress artifact ``key`` advanced by ``step()`` / ``set()``, mirrored by a tqdm bar on a terminal;
    ``total`` steps make 100 %."""

    def __init__(self, key: str, total: int, description: str) -> None:
        from prefect.artifacts import create_progress_artifact
        from tqdm.auto import tqdm

        self.total, self.done = max(int(total), 1), 0
        self.id = cast(UUID, create_progress_artifact(0.0, key=key, description=description))  # sync context: a UUID
        # the same progress in the terminal: k/N, rate and ETA (tqdm switches itself off when stderr is no terminal)
        self.bar = tqdm(total=self.total, desc=description.split(":")[0], unit="step", disable=None, leave=True)

    def set(self, done: int) -> None:
        """Mark ``done`` of the ``total`` steps done."""
        from prefect.artifacts import update_progress_artifact

        done = min(max(int(done), 0), self.total)
        self.bar.update(done - self.done)
        self.done = done
        update_progress_artifact(self.id, 100.0 * self.done / self.total)
        if self.done == self.total:
            self.bar.close()

    def step(self, n: int = 1) -> None:
        """Mark ``n`` more steps done."""
        self.set(self.done + n)

    def finish(self) -> None:
        """Set the artifact to 100 %."""
        self.step(self.total)


def summary_markdown(title: str, values: Mapping[str, object]) -> str:
    """Markdown table ``| quantity | value |`` of the scalar entries of ``values`` (others are skipped)."""
    rows = [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in values.items()
        if isinstance(v, (numbers.Number, str, bool)) or v is None
    ]
    return "\n".join([f"# {title}", "", "| quantity | value |", "|---|---|", *rows, ""])


def _cell(v: object) -> object:
    """A JSON-friendly table cell: floats to 6 significant digits (non-finite: None), numpy scalars unwrapped."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()  # numpy scalar
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else None
    return v


def flatten_scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    """``{"a.b.c": scalar}`` of every number, string, bool or None in the nested mapping ``values`` (lists skipped)."""
    out: dict[str, object] = {}
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_scalars(v, f"{name}."))
        elif isinstance(v, (numbers.Number, str, bool)) or v is None:
            out[name] = _cell(v)
    return out


def table_rows(values: Mapping[str, Any], key: str = "quantity") -> list[dict[str, object]]:
    """Rows ``{key: dotted name, "value": scalar}`` of :func:`flatten_scalars` (a two-column table)."""
    return [{key: k, "value": v} for k, v in flatten_scalars(values).items()]


def publish_table(rows: Iterable[Mapping[str, object]], key: str, description: str) -> UUID | None:
    """Create the table artifact ``key`` from ``rows`` (one mapping per row, same keys: the columns)."""
    from prefect.artifacts import create_table_artifact

    clean = [{str(k): _cell(v) for k, v in r.items()} for r in rows]
    return cast(UUID | None, create_table_artifact(table=clean, key=key, description=description))


def publish_summary(title: str, values: Mapping[str, object], key: str) -> UUID | None:
    """Create the table artifact ``key`` (``quantity``, ``value``) of the scalar entries of ``values``, nested
    mappings flattened to dotted names, in the current flow run."""
    return publish_table(table_rows(values), key=key, description=title)
