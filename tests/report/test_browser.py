"""The HTML report in a real browser (headless Chromium): figures render, nothing is fetched,
no console errors, no horizontal scrolling on a phone."""

from __future__ import annotations

import json
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
    figures = json.loads(page.evaluate(FIGURES))
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
    # Figures are never drawn larger than their pixels (a 495-px plot stays 495 px wide).
    upscaled = [f for f in figures if f["w"] > f["nw"] + 1]
    assert upscaled == []
    # A figure wider than half the page (the two-panel caterpillar plot) gets the whole row.
    wide = [f for f in figures if f["nw"] > 560]
    assert wide and all(f["w"] >= min(f["nw"], 1000) - 1 for f in wide), wide


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
    # Wide tables scroll inside their own box (every column reachable), never the page.
    tables = json.loads(
        page.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('.mmr-table-wrap')).map(w => "
            "({sw: w.scrollWidth, cw: w.clientWidth, right: w.getBoundingClientRect().right, "
            "ox: getComputedStyle(w).overflowX})))"
        )
    )
    wide = [t for t in tables if t["sw"] > t["cw"] + 1]
    assert wide, "no table is wider than a phone: the scrolling is not exercised"
    for t in tables:
        assert t["right"] <= widths[1] + 1, t
        if t["sw"] > t["cw"] + 1:
            assert t["ox"] in ("auto", "scroll"), t
    assert _errors(page.all_events) == []
