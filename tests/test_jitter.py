import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from signaling.jitter import ImmediateAudioJitterBuffer, set_jitter_prefetch


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
