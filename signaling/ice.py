"""ICE settings from config: which local addresses to offer, and which STUN/TURN servers.

aiortc adds a public STUN server unless told otherwise: `rtc_configuration()` never adds a server
that is not configured. Host candidates: the agent's own peers use `ice.host_addresses` through
`use_host_addresses` around their negotiation (see `aiortc_adjustments`); `apply_host_addresses`
sets them for every other peer connection of the process too (e.g. an embedding app that wants
the same pinning).
"""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCIceServer

from agent.config import IceConfig

from .aiortc_adjustments import set_process_host_addresses, use_host_addresses


def apply_host_addresses(addresses: list[str]) -> None:
    """Make every peer connection in this process gather host candidates only on `addresses`.

    An empty list means every interface, as aioice does, plus 127.0.0.1 (which aioice skips), so
    clients on the same machine connect even when it has no network at all.
    """
    set_process_host_addresses(addresses)


def rtc_configuration(config: IceConfig) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in config.servers])


__all__ = ["apply_host_addresses", "rtc_configuration", "use_host_addresses"]
