#!/usr/bin/env bash
# CI: headless Chromium and its WebDriver for the affseg view browser test (tests/view/test_browser.py),
# from Debian's packages (chromium, chromium-driver). The test opens a real viewer, takes a
# screenshot and checks that the volumes are drawn. Idempotent: does nothing where both are there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium.sh: chromium is not installed and this is not root: apt-get install chromium chromium-driver" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
