"""report.html in a real headless browser (Debian's chromium): the Pareto and sensitivity plots decode, the trial
table sorts by a column, and the page renders to a screenshot with the plots' colours in it."""
from __future__ import annotations

import re
import subprocess

import numpy as np


def _chromium(require_tool, *args: str) -> subprocess.CompletedProcess:
    # root in a container has no user namespace for chromium's sandbox; the page is our own file
    return subprocess.run([require_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           *args], capture_output=True, text=True, timeout=120)


def test_the_report_shows_its_plots_and_sorts_its_table(searched, require_tool):
    page = searched["out"] / "report.html"
    dom = _chromium(require_tool, "--enable-logging=stderr", "--v=0", "--dump-dom", f"{page.as_uri()}#sort=bytes")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console  # the page's script ran without an error
    assert re.search(r'<body[^>]*data-plots-shown="3"', dom.stdout), dom.stdout[:500]  # every PNG decoded
    assert 'data-sorted-by="bytes"' in dom.stdout
    table = dom.stdout[dom.stdout.index('id="trials"'):]
    rows = re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"):], flags=re.S)
    column = [re.findall(r"<td>(.*?)</td>", r, flags=re.S)[5] for r in rows]  # TABLE_KEYS: bytes is the 6th
    sizes = [int(c) for c in column if c]
    assert len(rows) == len(searched["second"]["trials"]) and len(sizes) >= 3 and sizes == sorted(sizes)  # sorted, blanks last
    assert column[len(sizes):] == [""] * (len(rows) - len(sizes))


def test_the_report_renders_the_plots(searched, require_tool, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    result = _chromium(require_tool, f"--screenshot={shot}", "--window-size=1400,2400", (searched["out"] / "report.html").as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    # matplotlib's tab:blue (31,119,180) and tab:orange (255,127,14) markers, drawn by the browser
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 30).sum() > 50, colour
