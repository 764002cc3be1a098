#!/usr/bin/env bash
# Installs every Debian package the build and the tests need. Idempotent: when all
# packages are present it only checks (no apt-get update), so it is fast to re-run.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build git
  # LLVM / MLIR 22 (the CMake exports reference binaries from each of these)
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  # runtime dependencies
  libopenblas-dev nlohmann-json3-dev openmpi-bin libopenmpi-dev
  # train --plot draws with gnuplot (and a font for its labels)
  gnuplot-nox fonts-dejavu-core
  # tests
  libgtest-dev python3-torch python3-numpy
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
