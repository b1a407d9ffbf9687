"""Open the report in headless Chromium: whether the page and every image loaded (from the DOM the
page's own script annotates, see reports/html.py), and a screenshot of the whole page.

Chromium is Debian's `chromium` package (or chromium-browser / google-chrome on the PATH); it runs
with a throwaway profile, without sandbox or GPU (containers, CI), and reaches no network: the page
has every asset inline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clavs.errors import ClavsError
from clavs.utils.io import atomic_write_bytes

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1200
MAX_HEIGHT = 16000  # Chromium's screenshots get unreliable beyond this many pixels
_STATUS = re.compile(r'<p[^>]*id="load-status"[^>]*>', re.S)


def find_chromium() -> str | None:
    """The path of a Chromium on the PATH ($CLAVS_CHROMIUM first), or None."""
    explicit = os.environ.get("CLAVS_CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise ClavsError("no Chromium found (install Debian's `chromium` package, or set CLAVS_CHROMIUM to its path)")
    with tempfile.TemporaryDirectory(prefix="clavs-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=False, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ClavsError(f"Chromium did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None


@dataclass
class PageStatus:
    images: int   # <img> elements on the page
    loaded: int   # of them decoded (complete, naturalWidth > 0)
    height: int   # the page's full height in CSS pixels

    @property
    def ok(self) -> bool:
        return self.loaded == self.images


def page_status(index: str | os.PathLike, *, timeout: float = 120.0) -> PageStatus:
    """Load the page in headless Chromium and read what its load script wrote into the DOM."""
    url = Path(index).resolve().as_uri()
    done = _chromium([f"--window-size={WIDTH},1000", "--dump-dom", url], timeout)
    dom = done.stdout.decode("utf-8", "replace")
    tag = _STATUS.search(dom)
    if tag is None:
        raise ClavsError(f"{index}: Chromium returned no page (exit {done.returncode}); "
                         f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    values = dict(re.findall(r'data-(images|loaded|height)="(\d*)"', tag.group(0)))
    if not values.get("images"):
        raise ClavsError(f"{index}: the page's load script did not run in Chromium (no load status in the DOM)")
    return PageStatus(int(values["images"]), int(values["loaded"]), int(values.get("height") or 0))


def screenshot(index: str | os.PathLike, png: str | os.PathLike, *, timeout: float = 120.0) -> PageStatus:
    """A PNG of the whole page (up to MAX_HEIGHT pixels tall), written atomically; returns the page status."""
    status = page_status(index, timeout=timeout)
    height = max(600, min(status.height + 40, MAX_HEIGHT))
    url = Path(index).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="clavs-shot-") as tmp:
        shot = Path(tmp) / "page.png"
        done = _chromium([f"--window-size={WIDTH},{height}", f"--screenshot={shot}", url], timeout)
        if not shot.is_file():
            raise ClavsError(f"{index}: Chromium wrote no screenshot (exit {done.returncode}); "
                             f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}")
        atomic_write_bytes(png, shot.read_bytes())
    return status
