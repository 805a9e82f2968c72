"""A headless WebRTC client of the agent: a caller with no browser (tests, the benchmark,
scripts that talk to a running agent).

It speaks through an outbound track fed from a PcmQueue (the same paced PlayoutTrack the agent
uses), records every inbound agent frame with its arrival time and loudness, and collects the
events from the data channel. Signaling goes through the server's real `POST /offer`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.config import IceConfig
from agent.pipeline.audio import rms_dbfs
from agent.pipeline.pcm_queue import PcmQueue, Segment

from .aiortc_adjustments import set_jitter_prefetch
from .ice import rtc_configuration, use_host_addresses
from .playout_track import PlayoutTrack

AUDIBLE_DBFS = -45.0  # a received frame louder than this counts as agent speech


def first_channel(frame: av.AudioFrame) -> np.ndarray:
    """The first channel of a packed s16 frame (aiortc decodes Opus to packed stereo), no resampling."""
    if frame.format.name != "s16":
        raise ValueError(f"expected packed s16 audio, got {frame.format.name}")
    channels = len(frame.layout.channels)
    return frame.to_ndarray().reshape(-1)[::channels].copy()


@dataclass
class ReceivedFrame:
    at: float
    dbfs: float
    samples: np.ndarray  # int16 mono 48 kHz


@dataclass
class SentUtterance:
    started_at: float | None = None
    ended_at: float | None = None  # when the last frame carrying it was handed to the sender
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RoomMicrophone(PcmQueue):
    """A microphone queue that adds what a real microphone also hears: steady room noise (white
    hiss plus a low rumble) and, on a loudspeaker, an echo of the agent (`hear_echo`)."""

    def __init__(self, noise_dbfs: float | None, seed: int = 0) -> None:
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self._rms = 0.0 if noise_dbfs is None else 32768.0 * 10 ** (noise_dbfs / 20)
        self._rumble = 0.0
        self._echo = np.zeros(0, dtype=np.float64)  # what the loudspeaker played, still to be heard
        self._echo_gain = 0.0

    def set_echo(self, gain_db: float, delay_ms: float) -> None:
        self._echo_gain = 10 ** (gain_db / 20)
        self._echo = np.zeros(48 * int(delay_ms), dtype=np.float64)

    def hear_echo(self, played: np.ndarray) -> None:
        """The loudspeaker played `played` (48 kHz mono): it comes back after the delay."""
        if self._echo_gain:
            self._echo = np.concatenate([self._echo, played.astype(np.float64) * self._echo_gain])

    LEAK = 0.985  # the rumble: white noise through a one-pole low-pass (most energy below ~100 Hz)

    def _noise(self, n: int) -> np.ndarray:
        white = self._rng.normal(0.0, 1.0, n)
        # y[i] = LEAK * y[i-1] + w[i], vectorised: y[i] = LEAK^i * (LEAK * y[-1] + sum_j<=i LEAK^-j w[j])
        powers = self.LEAK ** np.arange(n)
        rumble = powers * (self.LEAK * self._rumble + np.cumsum(self._rng.normal(0.0, 1.0, n) / powers))
        self._rumble = float(rumble[-1])
        return (white + 0.12 * rumble) / np.sqrt(1 + 0.12 ** 2 / (1 - self.LEAK ** 2)) * self._rms

    def pull(self, n: int) -> tuple[np.ndarray, int]:
        samples, filled = super().pull(n)
        mixed = samples.astype(np.float64)
        if self._rms:
            mixed += self._noise(n)
        if self._echo_gain and len(self._echo):
            take = min(n, len(self._echo))
            mixed[:take] += self._echo[:take]
            self._echo = self._echo[take:]
        return np.clip(mixed, -32768, 32767).astype(np.int16), filled


class OfferRefused(RuntimeError):
    """The agent answered the offer with an error (e.g. 503: no capacity for another call)."""

    def __init__(self, status: int, body, retry_after_s: float | None) -> None:
        super().__init__(f"/offer answered {status}: {body}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s


class HeadlessClient:
    def __init__(self, ice: IceConfig, jitter_prefetch: int = 1, auth_token: str = "",
                 room_noise_dbfs: float | None = None, echo: tuple[float, float] | None = None) -> None:
        """`room_noise_dbfs`: the microphone also hears a room, all the time (hiss and a low
        rumble at that RMS level), as a real one does; None: digital silence between words.
        `echo`: (gain dB, delay ms): the agent's voice comes back into the microphone, as from a
        loudspeaker next to it."""
        self.ice = ice
        self.headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self.jitter_prefetch = jitter_prefetch
        self.mic_queue = PcmQueue()
        if room_noise_dbfs is not None or echo is not None:
            self.mic_queue = RoomMicrophone(room_noise_dbfs)
            if echo is not None:
                self.mic_queue.set_echo(*echo)
        self.mic = PlayoutTrack(self.mic_queue)
        self.pc: RTCPeerConnection | None = None
        self.frames: list[ReceivedFrame] = []
        self.events: list[tuple[float, dict]] = []
        self._event_signal = asyncio.Condition()
        self._reader: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.session_id: str | None = None

    # -- connection ------------------------------------------------------------------------
    async def connect(self, base_url: str, timeout_s: float = 20.0) -> None:
        pc = RTCPeerConnection(rtc_configuration(self.ice))
        self.pc = pc
        pc.addTransceiver(self.mic, direction="sendrecv")
        channel = pc.createDataChannel("events")
        self.channel = channel

        @channel.on("message")
        def on_message(message: str) -> None:
            event = json.loads(message)
            self.events.append((time.perf_counter(), event))
            asyncio.ensure_future(self._notify())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    set_jitter_prefetch(transceiver.receiver, self.jitter_prefetch)
            self._reader = asyncio.create_task(self._read(track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

        with use_host_addresses(self.ice.host_addresses):  # e.g. 127.0.0.1 only, in a loopback namespace
            await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession(headers=self.headers) as http:
            async with http.post(f"{base_url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as resp:
                body = await resp.json()
                if resp.status != 200:
                    retry_after = resp.headers.get("Retry-After")
                    raise OfferRefused(resp.status, body, float(retry_after) if retry_after else None)
        self.session_id = body["session"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.pc is not None:
            await self.pc.close()

    async def _notify(self) -> None:
        async with self._event_signal:
            self._event_signal.notify_all()

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                at = time.perf_counter()
                samples = first_channel(frame)  # 48 kHz packed stereo (both channels alike)
                self.frames.append(ReceivedFrame(at, rms_dbfs(samples), samples))
                if isinstance(self.mic_queue, RoomMicrophone):
                    self.mic_queue.hear_echo(samples)
        except MediaStreamError:
            pass

    # -- speaking --------------------------------------------------------------------------
    def say(self, samples_48k: np.ndarray) -> SentUtterance:
        """Queue an utterance (int16 mono 48 kHz) on the microphone track; returns its timing."""
        sent = SentUtterance()

        def on_start(_segment: Segment) -> None:
            sent.started_at = time.perf_counter()

        def on_done(_segment: Segment, _played: int) -> None:
            sent.ended_at = time.perf_counter()
            sent.done.set()

        self.mic_queue.push(samples_48k, on_start=on_start, on_done=on_done)
        return sent

    # -- observing -------------------------------------------------------------------------
    async def wait_event(self, predicate, timeout_s: float, since: int = 0) -> dict:
        """Wait for the first event (from index `since`) that satisfies predicate."""
        deadline = time.perf_counter() + timeout_s
        async with self._event_signal:
            while True:
                for _at, event in self.events[since:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise TimeoutError(f"no matching event within {timeout_s}s; got {[e for _, e in self.events[since:]]}")
                try:
                    await asyncio.wait_for(self._event_signal.wait(), remaining)
                except TimeoutError:
                    pass

    def event_time(self, predicate, since: int = 0) -> float | None:
        for at, event in self.events[since:]:
            if predicate(event):
                return at
        return None

    def first_audible_after(self, t: float) -> ReceivedFrame | None:
        for frame in self.frames:
            if frame.at >= t and frame.dbfs > AUDIBLE_DBFS:
                return frame
        return None

    async def wait_audible_after(self, t: float, timeout_s: float) -> ReceivedFrame | None:
        """The first audible frame received at or after `t`, waiting up to `timeout_s` for it
        (None if none came). Its `at` is when it arrived, whenever this returns."""
        deadline = time.perf_counter() + timeout_s
        while (frame := self.first_audible_after(t)) is None and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        return frame

    def audio_between(self, start: float, end: float) -> np.ndarray:
        chunks = [f.samples for f in self.frames if start <= f.at < end]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
