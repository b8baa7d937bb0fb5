"""What the report's tests read off a page: its parts, and the images headless Chromium shows of it."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import xarray as xr

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROKEN_IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.title = `images=${images.length} broken=${images.filter((i) => i.naturalWidth === 0).length}`;
});
</script>"""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Report:
    cube: xr.Dataset
    anova: pd.DataFrame
    path: Path
    html: str
    parts: PageParts


class PageParts(HTMLParser):
    """What the tests read off the page: element ids, <img> attributes, tables (rows of class and cells), readings."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[dict[str, str]] = []
        self.tables: list[list[tuple[str, list[str]]]] = []
        self.readings: dict[str, list[str]] = {}
        self._cell: list[str] | None = None
        self._reading: tuple[str, list[str]] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append((attrs.get("class", ""), []))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p" and "reading" in attrs.get("class", "").split():
            self._reading = (attrs["data-metric"], [])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "p" and self._reading is not None:
            metric, text = self._reading
            self.readings.setdefault(metric, []).append("".join(text).strip())
            self._reading = None

    def handle_data(self, data):
        for sink in (self._cell, self._reading[1] if self._reading else None):
            if sink is not None:
                sink.append(data)

    def table_headed(self, first_column: str, second_column: str) -> list[list[str]]:
        """The body rows of every table whose header starts with these two columns."""
        return [cells for table in self.tables if table[0][1][:2] == [first_column, second_column] for _, cells in table[1:]]


def rendered_images(html: str, tmp_path: Path) -> str:
    """The page's ``<title>`` as headless Chromium leaves it after loading a copy with a probe: its image counts."""
    # The probe script goes into a copy only: the report itself must stay script-free.
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", BROKEN_IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile-dom'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return re.search(r"<title>(.*?)</title>", dom)[1]
