"""The HTML report in a real browser (headless Chromium): figures render, nothing is fetched,
no console errors, no horizontal scrolling on a phone."""

from __future__ import annotations

import os

import pytest
from chromium_cdp import Browser, find_chromium

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium not installed (.ci/install-chromium.sh installs it)",
)

FIGURES = """
JSON.stringify(Array.from(document.querySelectorAll('figure img')).map(img => {
  const r = img.getBoundingClientRect();
  return {alt: img.alt, complete: img.complete, nw: img.naturalWidth, nh: img.naturalHeight,
          w: r.width, h: r.height};
}))
"""


@pytest.fixture(scope="module")
def page(report_file):
    assert CHROMIUM is not None, "CI must install Chromium (.ci/install-chromium.sh)"
    browser = Browser(CHROMIUM)
    try:
        browser.open_page()
        yield browser
    finally:
        browser.close()


def _errors(events):
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(p)
        elif m == "Runtime.exceptionThrown":
            out.append(p)
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(p["entry"])
    return out


def test_report_renders_in_chromium(page, report_file):
    url = report_file.as_uri()
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    page.navigate(url)
    figures = page.evaluate(FIGURES)
    import json

    figures = json.loads(figures)
    assert len(figures) >= 8
    for f in figures:
        assert f["complete"], f
        assert f["nw"] > 0 and f["nh"] > 0, f
        assert f["w"] > 0 and f["h"] > 0, f
    # Every request stays inside the page: the file itself and inline data.
    requests = [
        ev["params"]["request"]["url"]
        for ev in page.all_events
        if ev.get("method") == "Network.requestWillBeSent"
    ]
    assert requests, "the browser reported no requests at all"
    outside = [u for u in requests if not (u == url or u.startswith("data:"))]
    assert outside == []
    assert _errors(page.all_events) == []
    titles = page.evaluate(
        "Array.from(document.querySelectorAll('h2')).map(h => h.id || h.textContent)"
    )
    assert any("Findings" in t for t in titles)


def test_report_fits_a_phone_screen(page, report_file):
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    page.navigate(report_file.as_uri())
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1] + 1, widths
    img_width = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('figure img')).map(i => "
        "i.getBoundingClientRect().right))"
    )
    assert img_width <= widths[1] + 1
    assert _errors(page.all_events) == []
