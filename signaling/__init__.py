"""WebRTC signaling and media wiring for the voice agent.

The public embedding API (see README, "Embedding the agent"):

- `attach_agent(pc, models, config, on_event=None, tools=())`: put the agent on your
  RTCPeerConnection; `tools` are your own async functions the model may call (besides config's).
- `agent_for_track(inbound, models, config, on_event=None, tools=())`: an agent listening to a
  track; send its `.outbound` track.
- `AttachedAgent`: what both return (`.session`, `.timelines`, `.outbound`, `close()`).
- `create_app(config, models)`: the aiohttp app (web client, `/offer`, WHIP, `/metrics`);
  `running_server(config, models)` serves it (see `signaling.server`).
- `apply_host_addresses`, `use_host_addresses`, `rtc_configuration`: ICE settings from
  `config.ice` for your own peers.
- `HeadlessClient`: a WebRTC caller with no browser (speaks PCM, records the answer and events).
"""

from .app import create_app
from .attach import AttachedAgent, agent_for_track, attach_agent
from .client import HeadlessClient
from .ice import apply_host_addresses, rtc_configuration, use_host_addresses
from .server import loopback_config, running_server

__all__ = ["AttachedAgent", "HeadlessClient", "agent_for_track", "apply_host_addresses", "attach_agent", "create_app",
           "loopback_config", "rtc_configuration", "running_server", "use_host_addresses"]
