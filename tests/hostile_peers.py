"""Callers that misbehave, for the hardening tests: they speak real WebRTC (aiortc) on loopback
but send too much, too little, or change codec mid-call.

`python -m tests.hostile_peers flood URL SECONDS` runs a flooding caller in its own process (so
its sending costs the test's event loop nothing): valid Opus RTP as fast as its loop allows.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.g711 import PcmuEncoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.testing import vowel_sound
from signaling.ice import use_host_addresses

from .helpers import FRAME, RATE, TIME_BASE, audio_frame, new_pc

PCMU = 0  # the static RTP payload type of G.711 mu-law


class FloodTrack(MediaStreamTrack):
    """The same pre-encoded 20 ms Opus packet, as fast as the sender takes it (no encoding cost)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        encoder = OpusEncoder()
        tone = (np.sin(np.arange(FRAME) * 2 * np.pi * 440 / RATE) * 8000).astype(np.int16)
        payloads, _ = encoder.encode(audio_frame(tone, 0))
        self.payload = payloads[0]
        self._pts = 0
        self.sent = 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        await asyncio.sleep(0)  # let the caller's own loop breathe (ICE consent, RTCP)
        packet = av.Packet(self.payload)
        packet.pts = self._pts
        packet.time_base = TIME_BASE
        self._pts += FRAME
        self.sent += 1
        return packet


async def call(url: str, pc: RTCPeerConnection, timeout_s: float = 10.0) -> dict:
    """Offer `pc` to the agent's `POST /offer`, apply the answer and wait until connected."""
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    with use_host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"/offer answered {resp.status}: {body}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    await asyncio.wait_for(connected.wait(), timeout_s)
    return body


class PayloadTypeSwitch:
    """Rewrites a caller's outgoing RTP after `switch()`: payload type PCMU (0) carrying
    G.711 of `speech` (then silence) instead of Opus, as a browser does when it changes codec.
    `empty = True` sends every packet with no payload at all instead (until set back)."""

    def __init__(self, sender) -> None:
        self.switched = False
        self.empty = False
        self._encoder = PcmuEncoder()
        self._encoder.encode(audio_frame(np.zeros(FRAME, dtype=np.int16), 0))  # its resampler's first output is empty
        self._pcm = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self.rewritten = 0
        transport = sender.transport
        original = transport._send_rtp

        async def send_rtp(data: bytes) -> None:
            if (self.switched or self.empty) and len(data) >= 12 and 127 < data[0] < 192 and not 64 <= (data[1] & 0x7F) < 96:
                data = self._rewrite(data)  # RTP only: RTCP packet types read as 64-95 here (RFC 5761)
            await original(data)

        transport._send_rtp = send_rtp

    def switch(self, speech_48k: np.ndarray) -> None:
        self._pcm = speech_48k.astype(np.int16)
        self.switched = True

    def _rewrite(self, data: bytes) -> bytes:
        header = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:  # header extension: 4 bytes + its length in 32-bit words
            header += 4 + 4 * int.from_bytes(data[header + 2:header + 4], "big")
        if self.empty:
            self.rewritten += 1
            return data[:header]
        chunk, self._pcm = self._pcm[:FRAME], self._pcm[FRAME:]
        samples = np.zeros(FRAME, dtype=np.int16)
        samples[:len(chunk)] = chunk
        payloads, _ = self._encoder.encode(audio_frame(samples, self._pts))
        self._pts += FRAME
        self.rewritten += 1
        marker = data[1] & 0x80
        return data[:1] + bytes([marker | PCMU]) + data[2:header] + b"".join(payloads)


def speech(ms: int) -> np.ndarray:
    """A vowel-like sound at 48 kHz that the agent's VAD takes for speech."""
    return vowel_sound(ms, RATE)


async def flood(url: str, seconds: float) -> None:
    pc = new_pc()
    track = FloodTrack()
    pc.addTransceiver(track, direction="sendrecv")
    await call(url, pc)
    print("connected", flush=True)
    await asyncio.sleep(seconds)
    print(f"sent {track.sent} packets in {seconds:g} s", flush=True)
    await pc.close()


if __name__ == "__main__":
    if sys.argv[1] == "flood":
        asyncio.run(flood(sys.argv[2], float(sys.argv[3])))
