"""Guards for every adjustment of aiortc/aioice internals (signaling/aiortc_adjustments.py): each
fails loudly if an upgrade moves what it relies on."""

import asyncio
import inspect
import subprocess
import sys

import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, rtp
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from signaling import aiortc_adjustments
from signaling.aiortc_adjustments import ImmediateAudioJitterBuffer, set_jitter_prefetch, use_host_addresses


# -- nothing on import --------------------------------------------------------------------------
def test_importing_the_project_patches_nothing():
    code = ("import aioice.ice, aiortc.rtp; original = (aiortc.rtp.compute_audio_level_dbov, aioice.ice.get_host_addresses);"
            "import signaling, signaling.server, signaling.client, bench.runner;"
            "assert (aiortc.rtp.compute_audio_level_dbov, aioice.ice.get_host_addresses) == original")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- audio level --------------------------------------------------------------------------------
def frame_of(samples, layout="mono"):
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = 48000
    return frame


def test_numpy_audio_level_equals_aiortcs():
    rng = np.random.default_rng(0)
    frames = [frame_of(np.zeros(960, np.int16)), frame_of(np.full(960, 32767, np.int16)),
              frame_of(np.repeat(rng.integers(-3000, 3000, 960).astype(np.int16), 2), "stereo")]
    for level in (1, 10, 100, 1000, 20000):
        frames.append(frame_of(rng.normal(0, level, 960).clip(-32768, 32767).astype(np.int16)))
    for frame in frames:
        assert aiortc_adjustments.compute_audio_level_dbov(frame) == aiortc_adjustments.AIORTC_AUDIO_LEVEL(frame)


def test_aiortc_still_computes_the_level_through_the_patched_name():
    aiortc_adjustments.install()
    assert aiortc_adjustments.installed()
    assert rtp.compute_audio_level_dbov is aiortc_adjustments.compute_audio_level_dbov
    from aiortc import rtcrtpsender
    assert "compute_audio_level_dbov" in inspect.getsource(rtcrtpsender)


# -- ICE host addresses -------------------------------------------------------------------------
def test_aioice_gathers_through_the_patched_lookup():
    assert "get_host_addresses(" in inspect.getsource(aioice.ice.Connection.gather_candidates)


def test_host_addresses_apply_only_inside_the_block():
    aiortc_adjustments.install()
    outside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    assert outside == aiortc_adjustments.AIOICE_HOST_ADDRESSES(use_ipv4=True, use_ipv6=True)
    with use_host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    with use_host_addresses([]):
        assert "127.0.0.1" in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == outside


async def test_a_peer_negotiated_inside_the_block_offers_only_those_addresses():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        with use_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        candidates = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" 127.0.0.1 " in line for line in candidates)
    finally:
        await pc.close()


# -- receive jitter buffer ----------------------------------------------------------------------

def packet(seq):
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
    p._data = bytes([seq % 256])
    return p


def test_in_order_packets_are_released_at_once():
    buffer = ImmediateAudioJitterBuffer(capacity=16)
    for seq in range(100, 110):
        _, frame = buffer.add(packet(seq))
        assert frame is not None and frame.timestamp == seq * 960


def test_aiortc_buffer_holds_each_packet_until_the_next_arrives():
    buffer = JitterBuffer(capacity=16, prefetch=1)
    assert buffer.add(packet(1))[1] is None
    assert buffer.add(packet(2))[1].timestamp == 960


def test_a_reordered_packet_waits_for_the_missing_one():
    buffer = ImmediateAudioJitterBuffer(capacity=16)
    assert buffer.add(packet(1))[1].timestamp == 960
    assert buffer.add(packet(3))[1] is None  # 2 is missing
    assert buffer.add(packet(2))[1].timestamp == 2 * 960
    assert buffer.add(packet(4))[1].timestamp == 3 * 960


def test_shim_applies_to_a_real_receiver():
    async def main():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver("audio")
        assert set_jitter_prefetch(transceiver.receiver, 0)
        assert isinstance(transceiver.receiver._RTCRtpReceiver__jitter_buffer, ImmediateAudioJitterBuffer)
        assert set_jitter_prefetch(transceiver.receiver, 2)
        assert transceiver.receiver._RTCRtpReceiver__jitter_buffer._prefetch == 2
        await pc.close()

    asyncio.run(main())
