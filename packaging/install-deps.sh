#!/usr/bin/env bash
# Installs the Debian 12 packages Stoke builds and tests with, only those missing.
# Runs apt-get update first when something is missing. Needs root (or sudo) then.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libssl-dev libsqlite3-dev sqlite3 libmicrohttpd-dev libjansson-dev
  libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev libcmocka-dev
  libnng-dev libmbedtls-dev libssh2-1-dev
  openssh-server openssh-client nginx curl wrk socat jq openssl python3 shellcheck
  debootstrap iproute2
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
