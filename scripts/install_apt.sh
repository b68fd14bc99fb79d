#!/usr/bin/env bash
# Install the Debian packages listed in packages.txt (the list Hugging Face Spaces reads)
# and, with --test, packages-test.txt. One reader for both lists, so setup and Spaces agree.
set -euo pipefail
cd "$(dirname "$0")/.."
lists="packages.txt"
[ "${1:-}" = "--test" ] && lists="$lists packages-test.txt"
missing=""
for pkg in $(cat $lists | sed 's/#.*//' | tr -s ' \n' '\n' | grep -v '^$'); do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "[setup] apt-get install$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
else
  echo "[setup] please install these Debian packages (needs root): sudo apt-get install$missing" >&2
  exit 1
fi
