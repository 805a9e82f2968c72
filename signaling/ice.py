"""ICE settings from config: which local addresses to offer, and which STUN/TURN servers.

aioice gathers host candidates from every interface except 127.0.0.1, and aiortc adds a public
STUN server unless told otherwise. For loopback-only tests and private deployments both must be
controllable: `apply_host_addresses()` replaces aioice's host-address lookup with the configured
list (empty = aioice's own lookup), and `rtc_configuration()` never adds a server that is not
configured.
"""

from __future__ import annotations

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from agent.config import IceConfig

_original_get_host_addresses = aioice.ice.get_host_addresses


def apply_host_addresses(addresses: list[str]) -> None:
    """Make every peer connection in this process gather host candidates only on `addresses`.

    An empty list means every interface, as aioice does, plus 127.0.0.1 (which aioice skips), so
    clients on the same machine connect even when it has no network at all.
    """
    if not addresses:
        def all_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            found = _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
            return found + ["127.0.0.1"] if use_ipv4 else found

        aioice.ice.get_host_addresses = all_host_addresses
        return
    pinned = list(addresses)

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured_host_addresses


def rtc_configuration(config: IceConfig) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in config.servers])
