#!/usr/bin/env bash
# Debian packages the test suite needs: Chromium for the browser test
# (Playwright drives /usr/bin/chromium; its own browser download cannot work
# offline). Idempotent; does nothing when chromium is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: apt-get not found; install Chromium yourself (browser tests will be skipped)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_system_deps: not root and no sudo; install the 'chromium' package (browser tests will be skipped)" >&2
    exit 0
  fi
fi
echo "Installing Debian package chromium (for the browser test)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
