"""report.html is self-contained and shows every figure: checked on the HTML itself and, in headless
Chromium at a 1,200 px window, by the browser (each <img> decoded with naturalWidth > 0; nothing wider
than the window, the headline table included; the screenshot is not blank)."""
from __future__ import annotations

import base64
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bsstudy.report.build import build_report
from bsstudy.report.synthetic import write_study

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Marks the page once every image has settled: data-img-ok / data-img-total on <body>.
CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-img-ok', String(ok));
  document.body.setAttribute('data-img-total', String(imgs.length));
  document.body.setAttribute('data-errors', String(window.__errors || 0));
  // width overflow at this window width: the page itself, and the headline table inside its box
  var w = document.documentElement.clientWidth;
  var wide = Array.prototype.slice.call(document.body.children).filter(function (e) {
    return e.getBoundingClientRect().right > w + 1; }).length;
  var h = Array.prototype.slice.call(document.querySelectorAll('h2')).filter(function (e) {
    return e.textContent.indexOf('Headline') === 0; })[0];
  var box = h.nextElementSibling, table = box.querySelector('table') || box;
  document.body.setAttribute('data-overflow', String(wide + (document.documentElement.scrollWidth > w ? 1 : 0)));
  document.body.setAttribute('data-headline-fits', String(table.getBoundingClientRect().width <= box.clientWidth + 1));
});
window.__errors = 0;
window.addEventListener('error', function () { window.__errors += 1; }, true);
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("res") / "results" / "web"
    write_study(root, ("simclr", "vicreg"), (64, 256), (2,), (0, 1), diverged=[("simclr", 256, 2, 1)])
    out = tmp_path_factory.mktemp("rep") / "web"
    build_report(root, out, log=lambda *a: None)
    return out


def test_html_embeds_every_figure_as_png(report):
    text = (report / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    pngs = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert len(srcs) == len(pngs) >= 6
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    files = sorted(re.findall(r'data-file="figures/([^"]+)"', text))
    assert files == pngs
    # report.md links figures relatively, and every link resolves from the report folder
    links = re.findall(r"\]\((figures/[^)]+)\)", (report / "report.md").read_text())
    assert sorted(Path(x).name for x in links) == pngs and all((report / x).exists() for x in links)
    assert "<script" not in text  # the report itself runs no code


def _chromium(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(["chromium", *FLAGS, f"--user-data-dir={profile}", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=120)


@pytest.mark.browser
@pytest.mark.slow
def test_html_opens_in_headless_chromium_and_shows_every_figure(report, tmp_path):
    page = tmp_path / "check.html"
    page.write_text((report / "report.html").read_text().replace("</body>", CHECK + "</body>", 1))
    dom = _chromium(["--window-size=1200,2400", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                    tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-img-ok="(\d+)" data-img-total="(\d+)" data-errors="(\d+)" data-overflow="(\d+)" '
                  r'data-headline-fits="(\w+)"', dom.stdout)
    assert m, dom.stdout[:500]
    ok, total, errors, overflow = map(int, m.groups()[:4])
    assert total == len(list((report / "figures").glob("*.png"))) and ok == total and errors == 0
    assert overflow == 0 and m.group(5) == "true"  # nothing wider than a 1,200 px window

    shot = tmp_path / "shot.png"
    res = _chromium(["--window-size=1200,2400", "--hide-scrollbars", f"--screenshot={shot}",
                     (report / "report.html").as_uri()], tmp_path)
    assert shot.exists(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    # not blank: many distinct colours and a real share of non-white pixels (text, tables, figures)
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50
    assert (rgb.min(axis=1) < 200).mean() > 0.02
