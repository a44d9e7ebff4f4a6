#!/usr/bin/env bash
# Everything a developer needs, then every check: the README's second quickstart line and
# what .ci/run calls. Safe to run again: it reuses .venv and installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

bash scripts/audio-rig.sh install     # PortAudio, PulseAudio, espeak-ng, sox (only when missing)

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q -e '.[dev,aec]'

echo "== ruff";   ruff check . && ruff format --check .
echo "== mypy";   mypy --strict realtime_voicebot
bash scripts/audio-rig.sh start
# Two workers for the tests that need no sound card (they mostly wait on sockets); the rig's
# tests after them, one at a time, since they share one virtual microphone and speaker.
echo "== pytest"; python -m pytest -q -m "not audio" -n 2 "$@"
echo "== pytest (audio rig)"; python -m pytest -q -m audio "$@"
echo "== selftest"; voicebot test --fake-server
