#!/usr/bin/env bash
# A virtual microphone and speaker for machines without a sound card (CI, containers):
# PulseAudio with two null sinks, so PortAudio (sounddevice) sees real devices.
#
#   audio-rig.sh install  apt packages, only those missing (needs root or sudo)
#   audio-rig.sh start    PulseAudio with sinks vmic (the bot's microphone: play into it)
#                         and vspk (the bot's speaker: record vspk.monitor)
#   audio-rig.sh status   sinks and sources
#   audio-rig.sh stop     stop the daemon
set -euo pipefail

PACKAGES=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins alsa-utils espeak-ng sox)

missing() {
  local out=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

case "${1:-start}" in
  install)
    todo=$(missing)
    if [ -n "$todo" ]; then
      sudo_cmd=""
      [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
      echo "audio rig: installing $todo"
      export DEBIAN_FRONTEND=noninteractive
      $sudo_cmd apt-get update -qq
      # shellcheck disable=SC2086
      $sudo_cmd apt-get install -y -qq --no-install-recommends $todo >/dev/null
    fi
    ;;
  start)
    if ! pactl info >/dev/null 2>&1; then
      pulseaudio -D --exit-idle-time=-1 --disallow-exit -n \
        --load="module-native-protocol-unix" \
        --load="module-null-sink sink_name=vspk sink_properties=device.description=virtual-speaker" \
        --load="module-null-sink sink_name=vmic sink_properties=device.description=virtual-mic" \
        --load="module-always-sink" 2>/dev/null || true
      for _ in $(seq 50); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    pactl list short sinks | grep -q vspk || pactl load-module module-null-sink sink_name=vspk >/dev/null
    pactl list short sinks | grep -q vmic || pactl load-module module-null-sink sink_name=vmic >/dev/null
    pactl set-default-sink vspk
    pactl set-default-source vmic.monitor
    echo "audio rig up: default sink vspk, default source vmic.monitor"
    ;;
  status)
    pactl info | sed -n '1,3p;/Default/p'
    pactl list short sinks
    pactl list short sources
    ;;
  stop)
    pulseaudio --kill 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 install|start|status|stop" >&2
    exit 2
    ;;
esac
