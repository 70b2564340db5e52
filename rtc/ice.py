"""ICE set-up: which servers to use and which local addresses to offer.

aiortc falls back to a public STUN server when given no configuration, so a
configuration is always passed (empty by default: nothing leaves the machine).
aioice gathers host candidates on every interface except 127.0.0.1 and has no
option to choose them; `use_host_addresses` replaces its address lookup,
process-wide, which is the only hook it offers.
"""

from __future__ import annotations

from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_original_get_host_addresses = aioice.ice.get_host_addresses


def rtc_configuration(ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in ice_servers]
    return RTCConfiguration(iceServers=servers)


def use_host_addresses(hosts: list[str]) -> None:
    """Gather host candidates on exactly `hosts`; an empty list restores aioice's own lookup."""
    if not hosts:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    chosen = list(hosts)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [h for h in chosen if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
