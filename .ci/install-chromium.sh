#!/usr/bin/env bash
# Install headless Chromium (Debian's `chromium` package) for the browser test of the HTML
# report (tests/report/test_browser.py). Does nothing when a Chromium is already installed.
# Needs root (CI runs as root) and Debian's package lists.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "install-chromium: found $(command -v "$name")"
        exit 0
    fi
done

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
command -v chromium
