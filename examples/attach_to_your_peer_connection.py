#!/usr/bin/env python3
"""Embed the voice agent in your own call app: attach it to an RTCPeerConnection you negotiate.

Two peer connections in one process, on 127.0.0.1 only: the "caller" (a phone, a browser) and
"your call app", which answers the caller's offer and attaches the agent in between. The caller
asks a question (a 16-bit WAV given as argument, or one spoken by the agent's own voice); the
script prints the agent's events and writes what the caller heard to answer.wav.

    .venv/bin/python examples/attach_to_your_peer_connection.py [question.wav]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from agent.config import load_config  # noqa: E402
from agent.events import Event, TurnFinished, to_json  # noqa: E402
from agent.models import load_models  # noqa: E402
from agent.pipeline.audio import read_wav, write_wav  # noqa: E402
from agent.pipeline.pcm_queue import PcmQueue  # noqa: E402
from agent.voices.base import render  # noqa: E402
from signaling import apply_host_addresses, attach_agent, rtc_configuration  # noqa: E402
from signaling.playout_track import PlayoutTrack  # noqa: E402


async def main(wav: str | None, question_text: str = "What is the capital of France?", tools=()) -> list[Event]:
    """One call; `tools` are your own tools for the agent (see examples/tools_by_voice.py).
    Returns the agent's events."""
    # Loopback only: host candidates on 127.0.0.1, no STUN/TURN server.
    config = load_config().replace(**{"ice.host_addresses": ["127.0.0.1"], "ice.servers": []})
    apply_host_addresses(config.ice.host_addresses)
    models = load_models(config)
    await models.warm_up()
    question = read_wav(wav, 48000) if wav else await render(models.voice, question_text, 48000)

    # The caller: a microphone playing the question, and a loudspeaker that records.
    caller = RTCPeerConnection(rtc_configuration(config.ice))
    mic_queue = PcmQueue()
    caller.addTransceiver(PlayoutTrack(mic_queue), direction="sendrecv")
    heard: list[np.ndarray] = []

    @caller.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def record() -> None:
            try:
                while True:
                    heard.append((await track.recv()).to_ndarray().reshape(-1, 2)[:, 0])  # 48 kHz stereo -> mono
            except MediaStreamError:
                pass
        asyncio.ensure_future(record())

    # Your call app: it answers the caller's offer and puts the agent on the call.
    call_app = RTCPeerConnection(rtc_configuration(config.ice))
    turn_done = asyncio.Event()
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if event.type in ("transcript", "agent_text", "tool_call", "tool_result", "timeline", "error"):
            print(to_json(event))
        if isinstance(event, TurnFinished):
            turn_done.set()

    await caller.setLocalDescription(await caller.createOffer())
    await call_app.setRemoteDescription(caller.localDescription)
    agent = await attach_agent(call_app, models, config, on_event=on_event, tools=tools)  # after the offer, before the answer
    await call_app.setLocalDescription(await call_app.createAnswer())
    await caller.setRemoteDescription(call_app.localDescription)

    await asyncio.sleep(1.0)  # let ICE and DTLS connect
    mic_queue.push(question)
    await asyncio.wait_for(turn_done.wait(), 120)
    print("turns:", [(t.turn, t.outcome, t.relative_ms().get("first_frame")) for t in agent.timelines])

    await agent.close()
    await call_app.close()
    await caller.close()
    models.close()
    write_wav("answer.wav", np.concatenate(heard) if heard else np.zeros(0, np.int16), 48000)
    print("wrote answer.wav")
    return events


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
