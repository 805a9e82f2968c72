"""WebRTC signaling and media wiring for the voice agent.

The public embedding API (see README, "Embedding the agent"):

- `attach_agent(pc, models, config, on_event=None)`: put the agent on your RTCPeerConnection.
- `agent_for_track(inbound, models, config, on_event=None)`: an agent listening to a track;
  send its `.outbound` track.
- `AttachedAgent`: what both return (`.session`, `.timelines`, `.outbound`, `close()`).
- `create_app(config, models)`: the aiohttp app (web client, `/offer`, WHIP, `/metrics`).
- `apply_host_addresses`, `rtc_configuration`: ICE settings from `config.ice` for your own peers.
"""

from .app import create_app
from .attach import AttachedAgent, agent_for_track, attach_agent
from .ice import apply_host_addresses, rtc_configuration

__all__ = ["AttachedAgent", "agent_for_track", "apply_host_addresses", "attach_agent", "create_app",
           "rtc_configuration"]
