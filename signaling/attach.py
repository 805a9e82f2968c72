"""Put the agent on a WebRTC peer connection that you negotiate yourself (the embedding API).

A call app (a softphone, an SFU bridge, a test) that owns its RTCPeerConnection adds the agent
with one call, then negotiates as it always does:

    agent = await attach_agent(pc, models, config, on_event=print)
    ...                                   # createOffer/createAnswer, set*Description, as usual
    await agent.close()                   # or just close the peer connection

`attach_agent` opens an AgentSession; sends its paced playout track on the peer connection
(`pc.addTrack`); listens to the first inbound audio track, whether it is already there or
arrives later, with the receive jitter buffer set from `ice.jitter_prefetch`; and delivers the
session's events (typed, see `agent.events` and README, "Events") to `on_event` and, as JSON,
to the first data channel labelled "events" that the remote peer opens (later ones get nothing). Call it before `createOffer()` when your side offers, or after
`setRemoteDescription(offer)` and before `createAnswer()` when it answers: either way the
agent's audio goes out on the call's audio transceiver. The agent closes itself when the peer
connection closes or fails.

Tools: the agent may call the tools config turns on (`[tools]`: the calculator and the clock
by default) and those given as `tools=[...]` (async functions with a docstring, or
`agent.tools.tool(...)`), each run with a timeout and reported as `tool_call` / `tool_result`
events:

    async def lookup_order(order_id: str) -> dict:   # its docstring describes it to the model
        ...
    agent = await attach_agent(pc, models, config, on_event=print, tools=[lookup_order])

With no peer connection (the user's audio is a MediaStreamTrack from elsewhere),
`agent_for_track(inbound, models, config)` gives an agent that listens to that track; send its
`.outbound` track wherever the answer should be heard.

The server's own signaling (`POST /offer`, `POST /whip`) wires its peers with `attach_agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Callable, Iterable

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from agent.config import Config
from agent.events import Event, Hello, StateChanged, to_json
from agent.models import AgentModels
from agent.pipeline.timeline import TurnTimeline
from agent.session import AgentSession
from agent.tools.toolbox import ToolLike, toolbox_for

from . import aiortc_adjustments
from .aiortc_adjustments import set_jitter_prefetch
from .inbound import read_inbound
from .playout_track import PlayoutTrack

log = logging.getLogger(__name__)

EVENTS_LABEL = "events"  # the data channel that carries the session's events

EventCallback = Callable[[Event], None]
InboundWrapper = Callable[[MediaStreamTrack], MediaStreamTrack]


class AttachedAgent:
    """One conversation with the agent, wired to media: the AgentSession, the track it speaks on
    (`outbound`), the track it listens to (`inbound`) and whoever receives its events."""

    def __init__(self, models: AgentModels, config: Config, on_event: EventCallback | None = None,
                 session_id: str | None = None, tools: Iterable[ToolLike] = ()) -> None:
        self.id = session_id or str(uuid.uuid4())
        self.models = models
        self.config = config
        self.session = AgentSession(config, models.brain, models.voice, end_of_turn=models.end_of_turn,
                                    tools=toolbox_for(config, tools))
        self.session.set_event_sink(self._dispatch)
        # The agent's voice: 20 ms, 48 kHz mono frames from the session's queue, paced in real time.
        self.outbound = PlayoutTrack(self.session.output, config.playout.frame_ms, config.playout.max_lag_ms)
        self.outbound.frame_listeners.append(self.session.on_output_frame)
        self.inbound: MediaStreamTrack | None = None
        self.events_channel: RTCDataChannel | None = None  # the one channel that gets the events
        self.closed = False
        self._reader: asyncio.Task | None = None
        self._listeners: list[EventCallback] = [on_event] if on_event is not None else []

    @property
    def timelines(self) -> list[TurnTimeline]:
        """The finished turns, oldest first (each with its stage marks, outcome and playout)."""
        return self.session.timelines

    def listen(self, track: MediaStreamTrack) -> None:
        """Read the user's audio from `track` (any rate and layout); replaces a previous track."""
        if self.closed:
            raise RuntimeError("the agent is closed")
        self.inbound = track
        if self._reader is not None:
            self._reader.cancel()
        self._reader = asyncio.create_task(read_inbound(track, self.session), name=f"agent-{self.id[:8]}-inbound")

    def add_event_listener(self, listener: EventCallback) -> None:
        """Call `listener(event)` for every event of the session from now on (an `agent.events`
        dataclass; `agent.events.to_json(event)` is the dict sent on the events channel)."""
        self._listeners.append(listener)

    def remove_event_listener(self, listener: EventCallback) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def use_events_channel(self, channel: RTCDataChannel) -> bool:
        """Send the session's events on `channel` as JSON text, starting with a `hello` and the
        current `state` once the channel is open. Only one channel gets them: returns False (and
        does nothing) when another already does."""
        if self.events_channel is not None:
            return False
        self.events_channel = channel

        def send(event: Event) -> None:
            if channel.readyState == "open":
                channel.send(json.dumps(to_json(event)))

        def greet() -> None:
            send(Hello(self.id, self.models.brain.name, self.models.voice.name))
            send(StateChanged(self.session.state))

        self.add_event_listener(send)
        channel.on("close", lambda: self.remove_event_listener(send))
        if channel.readyState == "open":
            greet()
        else:
            channel.once("open", greet)
        return True

    def _dispatch(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not starve the others or break the turn
                log.debug("agent %s: event listener failed on %s", self.id[:8], event.type, exc_info=True)

    async def close(self) -> None:
        """End the conversation: cancel the turn, stop the outbound track and stop listening.
        A peer connection it was attached to stays open (it is yours to close). Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self.outbound.stop()
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reader
        finally:
            await self.session.close()  # also when stopping the media raised


async def attach_agent(pc: RTCPeerConnection, models: AgentModels, config: Config,
                       on_event: EventCallback | None = None, *, session_id: str | None = None,
                       wrap_inbound: InboundWrapper | None = None,
                       jitter_prefetch: int | None = None, tools: Iterable[ToolLike] = ()) -> AttachedAgent:
    """Add the agent to `pc` (see the module docstring for when to call it).

    `on_event` receives every session event. `tools` are your own tools, besides those config
    turns on (a function that cannot be described, or a brain that cannot call tools, raises
    here, before anything is negotiated). `wrap_inbound` may wrap the inbound audio track
    before the agent reads it (the server uses it to notice peers that vanished);
    `jitter_prefetch` overrides `config.ice.jitter_prefetch`. `session_id` names the session in
    the `hello` event (default: a fresh UUID).
    """
    aiortc_adjustments.install()
    agent = AttachedAgent(models, config, on_event, session_id, tools)
    prefetch = config.ice.jitter_prefetch if jitter_prefetch is None else jitter_prefetch
    pc.addTrack(agent.outbound)

    def take(receiver: RTCRtpReceiver) -> None:
        track = receiver.track
        if agent.closed or agent.inbound is not None or track is None or track.kind != "audio":
            return
        set_jitter_prefetch(receiver, prefetch)
        agent.listen(wrap_inbound(track) if wrap_inbound is not None else track)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                take(transceiver.receiver)

    for transceiver in pc.getTransceivers():  # tracks the remote description already brought
        take(transceiver.receiver)

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label == EVENTS_LABEL and not agent.closed:
            agent.use_events_channel(channel)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await agent.close()

    return agent


def agent_for_track(inbound: MediaStreamTrack, models: AgentModels, config: Config,
                    on_event: EventCallback | None = None, *, tools: Iterable[ToolLike] = ()) -> AttachedAgent:
    """The lower-level form: an agent listening to `inbound` (the user's audio). Send its
    `.outbound` track to the user; `close()` it when the call ends. Needs a running event loop."""
    aiortc_adjustments.install()
    agent = AttachedAgent(models, config, on_event, tools=tools)
    agent.listen(inbound)
    return agent
