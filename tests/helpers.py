"""What many tests share: waiting for a condition, picking events out of a list, a free port,
offers made by a throwaway peer connection, a paced microphone track and a caller's peer
connection that keeps what it hears, and a headless client that has had its `hello`."""

from __future__ import annotations

import asyncio
import inspect
import contextlib
import fractions
import socket
import time

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
TIME_BASE = fractions.Fraction(1, RATE)
LOUD_RMS = 200  # ~ -44 dBFS: a received frame louder than this carries speech


# -- waiting and events -------------------------------------------------------------------------

async def wait_until(predicate, timeout_s: float = 10.0, what: str = "the condition", poll_s: float = 0.05) -> None:
    """Poll `predicate` (a function, or an async one) every `poll_s` until it is true; fail the
    test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def holds() -> bool:
        result = predicate()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    while not await holds():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(poll_s)


def is_type(kind: str, **fields):
    """A predicate on one event's JSON: its type is `kind` and it has each of `fields`."""
    return lambda e: e.get("type") == kind and all(e.get(k) == v for k, v in fields.items())


def of_type(events: list[dict], kind: str) -> list[dict]:
    """The events (JSON dicts) of one type, in order."""
    return [e for e in events if e.get("type") == kind]


# -- network ------------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server


async def offer_sdp(audio: bool = True, video: int = 0, channel: bool = False,
                    host_addresses: list[str] | None = None) -> str:
    """The SDP of an offer from a throwaway peer connection (closed again): an audio transceiver,
    `video` video ones, the events data channel; ICE candidates from `host_addresses` if given."""
    from signaling.ice import use_host_addresses

    pc = new_pc()
    if audio:
        pc.addTransceiver("audio")
    for _ in range(video):
        pc.addTransceiver("video")
    if channel:
        pc.createDataChannel("events")
    with use_host_addresses(host_addresses) if host_addresses is not None else contextlib.nullcontext():
        await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def connected_client(config, url: str):
    """A HeadlessClient connected to the agent at `url`, its `hello` received."""
    from signaling.client import HeadlessClient

    client = HeadlessClient(config.ice)
    await client.connect(url)
    await client.wait_event(is_type("hello"), 10)
    return client


# -- audio over WebRTC ---------------------------------------------------------------------------

def audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    """20 ms of s16 mono 48 kHz as an av frame stamped `pts`."""
    frame = av.AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def rms(frame: av.AudioFrame) -> float:
    return float(np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)))


class PacedTrack(MediaStreamTrack):
    """Microphone stand-in: 20 ms frames from a buffer (silence when it is empty), one every
    `interval_s` (0.02: real time), paced with asyncio. `drained` is set once the last of what
    was said has gone out."""

    kind = "audio"

    def __init__(self, interval_s: float = 0.02) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.buffer = np.zeros(0, dtype=np.int16)
        self.drained = asyncio.Event()
        self.drained.set()
        self._pts = 0
        self._start: float | None = None
        self._sent = 0

    def say(self, samples_48k: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, samples_48k.astype(np.int16)])
        self.drained.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._sent * self.interval_s - loop.time()))
        self._sent += 1
        chunk, self.buffer = self.buffer[:FRAME], self.buffer[FRAME:]
        if len(self.buffer) == 0:
            self.drained.set()  # the last of the buffer goes out in this frame
        samples = np.zeros(FRAME, dtype=np.int16)
        samples[:len(chunk)] = chunk
        frame = audio_frame(samples, self._pts)
        self._pts += FRAME
        return frame


class ListeningPeer:
    """The far end of a call: a peer connection that keeps (arrival time, rms) of every frame it
    receives in `heard` and sets `connected` once connected."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        self.heard: list[tuple[float, float]] = []
        self.connected = asyncio.Event()
        self._reader: asyncio.Task | None = None

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.ensure_future(self._listen(track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

    async def _listen(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.heard.append((time.perf_counter(), rms(frame)))
        except MediaStreamError:
            pass

    def loud_after(self, t: float) -> int:
        """How many frames louder than LOUD_RMS arrived after `t` (perf_counter)."""
        return sum(1 for at, level in self.heard if at > t and level > LOUD_RMS)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()
