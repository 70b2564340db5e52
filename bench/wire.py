"""RTP packets as they cross the loopback wire, timed by the kernel, not by the bench's peers.

The bench's client peers share the machine's cores with the server, so when they time a packet's
arrival, their own event loop's delays are in that time too. This sniffer, in a process of its
own, reads every UDP packet on `lo` from an AF_PACKET socket with the kernel's receive timestamp
(SO_TIMESTAMPNS): when the packet was handed to loopback, whatever the receiving process was doing.

    python -m bench.wire OUT.json        # runs until SIGTERM, then writes what it saw

OUT: {"packets": [[monotonic s, src port, dst port, payload bytes, rtp seq], ...]}, RTP only
(version 2, payload type 96-127: not RTCP, STUN or DTLS), as delivered (one copy per packet:
loopback also shows each packet on its way out, which a socket filter drops in the kernel).
Needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import signal
import socket
import struct
import sys
import time
from pathlib import Path

ETH_P_IP = 0x0800
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ETH_HEADER = 14
SNAP = 128  # bytes kept of each packet: headers and the RTP header with its extensions

# Classic BPF, so that the kernel drops what this process would (Python reading every loopback
# packet twice would cost the cores it measures): the outgoing copy, and all but UDP.
_SKF_AD_PKTTYPE = -0x1000 + 4
_FILTER = [
    (0x20, 0, 0, _SKF_AD_PKTTYPE & 0xFFFFFFFF),  # ld  pkttype
    (0x15, 3, 0, PACKET_OUTGOING),  # jeq OUTGOING -> drop
    (0x30, 0, 0, ETH_HEADER + 9),  # ldb ip protocol
    (0x15, 0, 1, socket.IPPROTO_UDP),  # jeq UDP -> keep, else drop
    (0x06, 0, 0, SNAP),  # ret SNAP
    (0x06, 0, 0, 0),  # ret 0: drop
]


def _attach_filter(sock: socket.socket) -> None:
    program = b"".join(struct.pack("HBBI", *insn) for insn in _FILTER)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_FILTER), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program here


def rtp_of(frame: bytes) -> tuple[int, int, int, int] | None:
    """(src port, dst port, RTP payload bytes, sequence number) of an Ethernet/IPv4/UDP/RTP frame, else None."""
    ip = frame[ETH_HEADER:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
        return None
    udp = ip[(ip[0] & 0x0F) * 4 :]
    if len(udp) < 8 + 12:
        return None
    sport, dport, length = struct.unpack("!HHH", udp[:6])  # the UDP length: the capture is cut at SNAP
    rtp = udp[8:]
    if rtp[0] >> 6 != 2 or not 96 <= rtp[1] & 0x7F <= 127:
        return None
    csrc = (rtp[0] & 0x0F) * 4
    header = 12 + csrc
    if rtp[0] & 0x10 and len(rtp) >= header + 4:  # header extension (aiortc sends audio level, mid)
        header += 4 + struct.unpack("!H", rtp[header + 2 : header + 4])[0] * 4
    seq = struct.unpack("!H", rtp[2:4])[0]
    return sport, dport, max(0, length - 8 - header), seq


class Wire:
    """This sniffer as a child process of the bench: `await start()`, then `await stop()` gives the
    RTP packets seen between the two, as [(monotonic s, src port, dst port, payload bytes, seq)]."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> bool:
        """False (and nothing runs) where no packet socket can be opened: not root."""
        self.out.unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.wire", str(self.out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 10)
        if line.strip() != b"ready":
            await self._proc.wait()
            self._proc = None
            return False
        return True

    async def stop(self) -> list[tuple[float, int, int, int, int]]:
        if self._proc is None:
            return []
        self._proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self._proc.wait(), 10)
        self._proc = None
        if not self.out.exists():
            return []
        packets = json.loads(self.out.read_text())["packets"]
        self.out.unlink()
        return [tuple(p) for p in packets]  # type: ignore[misc]


def sniff(out: Path) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    _attach_filter(sock)
    sock.bind(("lo", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.settimeout(0.2)
    # SO_TIMESTAMPNS is CLOCK_REALTIME; the bench's times are CLOCK_MONOTONIC.
    offset = time.monotonic() - time.time()
    packets: list[list[float | int]] = []
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    while not stop:
        try:
            data, ancillary, _flags, _address = sock.recvmsg(SNAP, socket.CMSG_SPACE(16))
        except (TimeoutError, InterruptedError):
            continue
        found = rtp_of(data)
        if found is None:
            continue
        stamp = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanos = struct.unpack("qq", value[:16])
                stamp = seconds + nanos / 1e9 + offset
        packets.append([round(stamp if stamp is not None else time.monotonic(), 6), *found])
    out.write_text(json.dumps({"packets": packets}))


if __name__ == "__main__":
    sniff(Path(sys.argv[1]))
