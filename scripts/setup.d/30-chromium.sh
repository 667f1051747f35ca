#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the console's browser tests (tests/console):
# Debian's `chromium` and `chromium-driver` packages, installed with apt-get when
# missing, plus a CJK font (`fonts-wqy-zenhei`) so the Chinese test pipeline's text
# renders in the screenshots. Where apt-get is not available (or not permitted), print why and carry on:
# the browser tests then skip with a message naming this script.
#
# Idempotent: does nothing when all three are already installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
  && { [ -d /usr/share/fonts/truetype/wqy ] || ! command -v apt-get >/dev/null 2>&1; }; then
  echo "chromium: $(chromium --version 2>/dev/null || echo installed), $(command -v chromedriver)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: apt-get not found; install chromium and chromedriver by hand" \
    "to run tests/console (they skip otherwise)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "chromium: not root and no password-less sudo; skipping (tests/console skip)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq \
  || ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    fonts-wqy-zenhei >/dev/null; then
  echo "chromium: apt-get could not install chromium/chromium-driver;" \
    "tests/console will skip" >&2
  exit 0
fi
echo "chromium: $(chromium --version 2>/dev/null), $(command -v chromedriver)"
