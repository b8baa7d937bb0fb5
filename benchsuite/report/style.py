"""What every report figure shares: the matplotlib style, the palette of datasets, the look of a note, rendering as PNG.

Figures are built as bare :class:`matplotlib.figure.Figure` objects rather than through
``pyplot``: ``savefig`` then renders PNG with the Agg canvas whatever the session's backend is,
and no figure is registered with pyplot's global figure manager, so nothing stays open (or
leaks) after a report is written. That is matplotlib's own recipe for servers.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
"""matplotlib settings for every report figure, applied while it is drawn and saved."""

DPI = 110
DATASET_COLOURS = colormaps["tab10"]
MARKED_POINTS = 40
"""A line of more points than this is drawn without markers: on a dense θ grid they merge into a thick smear."""
NOTE_INK = "0.1"
NOTE_BOX = {"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "0.4", "linewidth": 0.6, "alpha": 0.85}
"""Dark text on a nearly opaque light box: a note drawn over an image, readable whatever the image is."""


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under :data:`STYLE`: fonts, grids and spines are fixed when artists are created."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def png_bytes(figure: Figure) -> bytes:
    """``figure`` rendered as PNG in the report's style."""
    buffer = io.BytesIO()
    with rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def padded(low: float, high: float) -> tuple[float, float]:
    """Axis limits around [low, high] with room on either side, also when the two are equal."""
    pad = 0.15 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    return low - pad, high + pad
