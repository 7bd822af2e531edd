"""A real browser for the console's tests: Debian's Chromium, driven by Playwright.

Playwright's own browser download is never used (`playwright install` is never run): the
browser is Debian's `chromium` at /usr/bin/chromium, and the admin's flow pictures need
Graphviz's `dot`. `ensure_browser()` installs both with apt-get when they are missing (CI runs
as root with no stdin) and fails with a clear message when it cannot: the browser tests never
silently skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "console"  # screenshots (gitignored)
PACKAGES = ("chromium", "graphviz")


def _missing() -> list[str]:
    missing = [] if CHROMIUM.exists() else ["chromium"]
    return missing + ([] if shutil.which("dot") else ["graphviz"])


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=1800, check=False)


def ensure_browser() -> str:
    """The path of Debian's Chromium, installing it and Graphviz with apt-get when they are
    missing; raise if that fails."""
    missing = _missing()
    if not missing:
        return str(CHROMIUM)
    how = f"apt-get install -y {' '.join(PACKAGES)}"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"{' and '.join(missing)} not found and cannot be installed here: run `{how}` "
                           "as root (Debian), then run the tests again")
    result = _apt("install", "-y", "-q", "--no-install-recommends", *missing)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        _apt("update", "-q")
        result = _apt("install", "-y", "-q", "--no-install-recommends", *missing)
    if result.returncode != 0 or _missing():
        raise RuntimeError(f"`{how}` failed (exit {result.returncode}): {result.stderr.strip()[-400:]}")
    return str(CHROMIUM)
