"""Prefect UI artifacts shared by the flows: PNGs embedded in a markdown artifact and per-step progress.

Prefect 3's ``create_image_artifact`` only takes a URL; local PNGs are therefore embedded in a markdown artifact as
base64 data URIs, downscaled (``max_px`` on the long side) so that the artifact stays small in the database.
"""

from __future__ import annotations

import base64
import io
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import cast
from uuid import UUID

__all__ = ["png_data_uri", "images_markdown", "publish_images", "Progress", "summary_markdown", "publish_summary"]


def png_data_uri(path: str | Path, max_px: int = 480) -> str:
    """``data:image/png;base64,...`` of the PNG at ``path``, downscaled to at most ``max_px`` pixels per side."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        rgb.thumbnail((max_px, max_px))
        buf = io.BytesIO()
        rgb.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def images_markdown(images: Mapping[str, str | Path], title: str, max_px: int = 480) -> str:
    """Markdown with a heading and one embedded image per ``{caption: png_path}`` (missing files are listed)."""
    lines = [f"# {title}", ""]
    for caption, path in images.items():
        if Path(path).is_file():
            lines += [f"## {caption}", "", f"![{caption}]({png_data_uri(path, max_px)})", ""]
        else:
            lines += [f"## {caption}", "", f"_(no image: {path} was not written)_", ""]
    return "\n".join(lines)


def publish_images(images: Mapping[str, str | Path], key: str, title: str, max_px: int = 480) -> UUID | None:
    """Create the markdown image artifact ``key`` (lower-case, dashes) in the current flow run."""
    from prefect.artifacts import create_markdown_artifact

    return cast(
        UUID | None, create_markdown_artifact(markdown=images_markdown(images, title, max_px), key=key, description=title)
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


def publish_summary(title: str, values: Mapping[str, object], key: str) -> UUID | None:
    """Create the markdown summary-table artifact ``key`` in the current flow run."""
    from prefect.artifacts import create_markdown_artifact

    return cast(UUID | None, create_markdown_artifact(markdown=summary_markdown(title, values), key=key, description=title))
