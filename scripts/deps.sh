#!/usr/bin/env bash
# Installs the Debian packages attnkit's tests, benchmarks and examples need, when missing.
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail

packages=(cmake make g++ libeigen3-dev libxsimd-dev catch2 libbenchmark-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "attnkit: installing ${missing[*]}"
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
