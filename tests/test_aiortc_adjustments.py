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


# -- inbound packet limits ----------------------------------------------------------------------
def test_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    bucket = aiortc_adjustments.TokenBucket(rate=10, burst=5, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(20)) == 5
    now[0] = 1.0
    assert sum(bucket.take() for _ in range(20)) == 5  # refilled up to the burst, not beyond
    now[0] = 1.1
    assert sum(bucket.take() for _ in range(20)) == 1


def test_inbound_limits_budget_media_and_dtls_apart():
    now = [0.0]
    limits = aiortc_adjustments.InboundLimits(aiortc_adjustments.TokenBucket(2, 2, lambda: now[0]),
                                              aiortc_adjustments.TokenBucket(1, 1, lambda: now[0]))
    rtp_packet, dtls_record, stun = b"\x80" + b"\x00" * 20, b"\x17" + b"\x00" * 20, b"\x00\x01" + b"\x00" * 20
    assert [limits.admit(rtp_packet) for _ in range(3)] == [True, True, False]
    assert [limits.admit(dtls_record) for _ in range(2)] == [True, False]
    assert limits.admit(stun) and limits.admit(b"")
    assert (limits.dropped_media, limits.dropped_dtls) == (1, 1)


async def test_limit_inbound_wraps_the_transports_aiortc_reads_from():
    offerer, answerer = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    offerer.addTransceiver("audio")
    offerer.createDataChannel("events")
    with use_host_addresses(["127.0.0.1"]):
        await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    ice = answerer.getTransceivers()[0].receiver.transport.transport
    assert callable(ice._recv)  # aiortc exposes the ICE connection's recv as this attribute
    limits = aiortc_adjustments.limit_inbound(answerer, 50, 50)
    assert limits.wrapped == [ice]  # bundled: one transport for audio and the data channel
    assert ice._recv.__name__ == "limited"
    assert "self.transport._recv()" in inspect.getsource(type(answerer.getTransceivers()[0].receiver.transport)._recv_next)
    assert isinstance(answerer.sctp._advertised_rwnd, int)  # what sctp_window_overrun reads
    assert not aiortc_adjustments.sctp_window_overrun(answerer)
    await offerer.close()
    await answerer.close()


# -- stopping a decoder -------------------------------------------------------------------------
def test_a_decoder_with_a_backlog_stops_without_waiting_for_it():
    import queue
    import threading
    import time

    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    aiortc_adjustments.install()
    assert RTCRtpReceiver._RTCRtpReceiver__stop_decoder is aiortc_adjustments._stop_decoder_without_join
    backlog = queue.Queue()
    for _ in range(500):
        backlog.put("frame")  # 500 frames at 10 ms each: joining would block for 5 s

    def worker():
        while backlog.get() is not None:
            time.sleep(0.01)

    receiver = RTCRtpReceiver.__new__(RTCRtpReceiver)
    receiver._RTCRtpReceiver__decoder_queue = backlog
    receiver._RTCRtpReceiver__decoder_thread = thread = threading.Thread(target=worker)
    thread.start()
    started = time.monotonic()
    receiver._RTCRtpReceiver__stop_decoder()
    assert time.monotonic() - started < 0.5
    thread.join(2)
    assert not thread.is_alive()
    for name in ("_RTCRtpReceiver__decoder_queue", "_RTCRtpReceiver__decoder_thread", "_RTCRtpReceiver__kind"):
        assert name in inspect.getsource(RTCRtpReceiver.__init__).replace("self.__", "self._RTCRtpReceiver__")


# -- empty audio packets ------------------------------------------------------------------------
async def test_empty_audio_packets_never_reach_the_jitter_buffer():
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    aiortc_adjustments.install()
    seen = []

    async def original(self, packet, arrival_time_ms):
        seen.append(packet.payload)

    receiver = RTCRtpReceiver.__new__(RTCRtpReceiver)
    receiver._RTCRtpReceiver__kind = "audio"
    saved = aiortc_adjustments.AIORTC_HANDLE_RTP_PACKET
    aiortc_adjustments.AIORTC_HANDLE_RTP_PACKET = original
    try:
        for payload in (b"", b"\x01\x02"):
            await RTCRtpReceiver._handle_rtp_packet(receiver, RtpPacket(payload_type=96, payload=payload), 0)
    finally:
        aiortc_adjustments.AIORTC_HANDLE_RTP_PACKET = saved
    assert seen == [b"\x01\x02"]
