"""The bot's audio, as the app sees it: open the devices (or files), play what the core says,
stream the microphone, report the player's position, and survive a device that dies.

A device that fails mid-run is reported once through ``on_failure`` with a line saying what
to do; from then on nothing touches a device (the devices are closed off the loop).

With ``record_path`` the run is recorded (`audio.recording.SessionRecorder`): each microphone
block as it is sent, and what the speaker played, on the speaker's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from realtime_voicebot.core import Playback
from realtime_voicebot.metrics import LatencyTracker

if TYPE_CHECKING:
    from realtime_voicebot.audio.input import AudioInput
    from realtime_voicebot.audio.output import AudioOutput
    from realtime_voicebot.audio.recording import SessionRecorder

log = structlog.get_logger(component="audio_io")

LEVEL_INTERVAL_S = 0.1
"""How often the microphone level is passed on."""
SILENCE_WATCH_S = 2.0


class AudioIO:
    """The microphone and the speaker of one run (either may be absent: text mode)."""

    def __init__(
        self,
        audio_in: AudioInput | None,
        audio_out: AudioOutput | None,
        latency: LatencyTracker,
        *,
        on_failure: Callable[[str], None],
        on_played_out: Callable[[str], None],
        record_path: Path | None = None,
    ) -> None:
        self.audio_in = audio_in
        self.audio_out = audio_out
        self.latency = latency
        self.failure: str | None = None
        """The one-line message of the device that failed mid-run, if one did."""
        self._on_failure = on_failure
        self._on_played_out = on_played_out
        self._closing: list[AudioInput | AudioOutput] = []
        self.microphone_open = True
        """False between push-to-talk turns: microphone blocks are read and dropped."""
        self.record_path = record_path
        self.recorder: SessionRecorder | None = None

    async def start(self) -> None:
        """Start both devices, then the recording if asked for one.

        Raises AudioUnavailableError when a device cannot be had, RecordingError when the
        recording cannot be written.
        """
        if self.audio_out is not None:
            self.audio_out.on_item_started = self.latency.first_sample
            self.audio_out.on_item_finished = self._on_played_out
            self.audio_out.on_device_error = self._speaker_failed
            await self.audio_out.start()
        if self.audio_in is not None:
            await self.audio_in.start()
        if self.record_path is not None and (self.audio_in or self.audio_out) is not None:
            from realtime_voicebot.audio.recording import SessionRecorder

            recorder = SessionRecorder.for_devices(self.record_path, self.audio_in, self.audio_out)
            await recorder.start()
            self.recorder = recorder

    async def close(self) -> None:
        """Stop the devices, then finish the recording (it holds what they played last)."""
        devices = [*self._closing, *(d for d in (self.audio_in, self.audio_out) if d is not None)]
        self.audio_in = self.audio_out = None
        self._closing = []
        for device in devices:
            with contextlib.suppress(Exception):  # a device that is gone may fail to stop
                await device.stop()
        if self.recorder is not None:
            await self.recorder.close()

    @property
    def echo_status(self) -> str | None:
        """The one line saying which echo handling the microphone runs and why (None: no
        microphone, or an input without echo handling such as a WAV file)."""
        from realtime_voicebot.audio.echo import echo_status

        return echo_status(self.audio_in)

    def snapshot(self) -> dict[str, dict[str, int]]:
        parts: dict[str, dict[str, int]] = {}
        if self.audio_out is not None:
            parts["player"] = {"underruns": self.audio_out.underruns}
        if self.audio_in is not None:
            parts["mic"] = {"dropped_blocks": self.audio_in.dropped_blocks}
        if self.recorder is not None:
            stats = self.recorder.snapshot()
            parts["recording"] = {
                "frames_written": stats.frames_written,
                "mic_blocks": stats.mic_blocks,
                "mic_blocks_dropped": stats.mic_blocks_dropped,
                "mic_samples_late": stats.mic_samples_late,
                "played_samples_skipped": stats.played_samples_skipped,
                "failed": int(stats.error is not None),
            }
        return parts

    # --- the speaker ---------------------------------------------------------------------

    def playback(self) -> Playback:
        """Where the player is: what the core reads to decide a barge-in."""
        player = self.audio_out
        if player is None:
            return Playback()
        item_id = player.playing_item_id or player.head_item_id
        played = player.played_ms(item_id) if item_id is not None else 0.0
        return Playback(item_id, played, player.is_audible, has_output=True)

    def play(self, item_id: str, pcm: bytes) -> None:
        if self.audio_out is None:
            return
        try:
            self.audio_out.write(item_id, pcm)
        except Exception as exc:  # PortAudioError, OSError: the device is gone
            self._failed("Speaker", exc)

    def end(self, item_id: str) -> None:
        if self.audio_out is not None:
            self.audio_out.end_item(item_id)

    def stop_playback(self) -> None:
        if self.audio_out is not None:
            self.audio_out.flush()

    def pause_playback(self) -> None:
        if self.audio_out is not None:
            self.audio_out.pause()

    def resume_playback(self) -> None:
        if self.audio_out is not None:
            self.audio_out.resume()

    async def watch_silence(self, decided_at: float) -> None:
        """Latency `barge_in_to_silence`: until the flushed reply's last sample was played."""
        player = self.audio_out
        if player is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SILENCE_WATCH_S):
                silenced_at = await player.wait_silenced()
                if silenced_at is not None:
                    self.latency.barge_in_silenced(decided_at, silenced_at)

    async def played_out(self) -> None:
        """Until what is playing now has played to its end (at once when nothing plays)."""
        player = self.audio_out
        item_id = player.playing_item_id if player is not None else None
        if player is not None and item_id is not None:
            await player.wait_finished(item_id)

    # --- the microphone ------------------------------------------------------------------

    async def stream_microphone(
        self, send: Callable[[bytes], None], show_level: Callable[[float], None]
    ) -> None:
        """Every microphone block to ``send`` until the input ends or the device fails."""
        source = self.audio_in
        if source is None:
            return
        next_level = 0.0
        try:
            async for block in source:
                if self.audio_in is not source:  # the device failed meanwhile
                    return
                if self.microphone_open:
                    send(block)
                    if self.recorder is not None:
                        self.recorder.mic(block)
                now = time.monotonic()
                if now >= next_level:
                    next_level = now + LEVEL_INTERVAL_S
                    show_level(source.level_dbfs)
        except Exception as exc:  # PortAudioError, AudioDeviceError: unplugged, driver gone
            self._failed("Microphone", exc)

    # --- failures ------------------------------------------------------------------------

    def _speaker_failed(self, reason: str) -> None:
        self._failed("Speaker", reason)

    def _failed(self, which: str, reason: object) -> None:
        if self.failure is not None:
            return
        flag = "--input-device" if which == "Microphone" else "--output-device"
        detail = str(reason).strip().rstrip(".") or type(reason).__name__
        self.failure = (
            f"{which} stopped: {detail}. Run `voicebot devices list` and pick a device with {flag}."
        )
        log.error("audio_device_failed", device=which.lower(), reason=detail)
        self._closing = [d for d in (self.audio_in, self.audio_out) if d is not None]
        self.audio_in = self.audio_out = None  # nothing touches a device from here on
        self._on_failure(self.failure)
