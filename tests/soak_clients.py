"""A process holding N connected client peers until it is killed (for the soak test).

python -m tests.soak_clients URL N  -> prints "ready <session ids>" once all are listening.
"""

from __future__ import annotations

import asyncio
import sys

from kit.rtc_client import Client
from rtc.ice import use_host_addresses


async def main(url: str, n: int) -> None:
    use_host_addresses(["127.0.0.1"])
    clients = [Client(url) for _ in range(n)]
    for client in clients:
        await client.connect()
    for client in clients:
        await client.wait_event("state", state="listening", timeout=30)
    print("ready", " ".join(c.session for c in clients), flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
