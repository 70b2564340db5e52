"""bench/wire.py: the loopback sniffer `python -m bench scale` times the server's packets with."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from bench.wire import Wire, rtp_of


def frame(payload: bytes, sport: int = 4000, dport: int = 5000) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = bytes([0x45, 0]) + struct.pack("!H", 20 + len(udp)) + bytes(5) + bytes([socket.IPPROTO_UDP]) + bytes(10)
    return bytes(14) + ip + udp


def rtp(seq: int, body: bytes, extension: bytes = b"") -> bytes:
    first = 0x80 | (0x10 if extension else 0)
    header = bytes([first, 111]) + struct.pack("!HII", seq, 0, 1234)
    if extension:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return header + body


def test_rtp_of_reads_ports_sequence_and_payload_length_past_the_header_extension() -> None:
    assert rtp_of(frame(rtp(7, bytes(40)))) == (4000, 5000, 40, 7)
    assert rtp_of(frame(rtp(8, bytes(90), extension=bytes(8)))) == (4000, 5000, 90, 8)


def test_rtp_of_skips_rtcp_stun_and_other_protocols() -> None:
    rtcp = bytes([0x80, 200]) + bytes(26)  # a sender report: payload type 200
    assert rtp_of(frame(rtcp)) is None
    stun = struct.pack("!HH", 0x0001, 0) + bytes(16)
    assert rtp_of(frame(stun)) is None
    tcp = bytearray(frame(rtp(1, bytes(10))))
    tcp[14 + 9] = socket.IPPROTO_TCP
    assert rtp_of(bytes(tcp)) is None


@pytest.mark.loopback
@pytest.mark.skipif(os.geteuid() != 0, reason="a packet socket needs root")
def test_the_sniffer_times_each_packet_once_on_the_monotonic_clock(tmp_path: Path) -> None:
    async def run() -> tuple[list[tuple[float, int, int, int, int]], float, float, int]:
        wire = Wire(tmp_path / "wire.json")
        assert await wire.start()
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        before = time.monotonic()
        for seq in range(5):
            sender.sendto(rtp(seq, bytes(50 + seq)), receiver.getsockname())
        sender.sendto(b"not rtp at all", receiver.getsockname())
        after = time.monotonic()
        await asyncio.sleep(0.2)
        packets = await wire.stop()
        port = receiver.getsockname()[1]
        receiver.close()
        sender.close()
        return packets, before, after, port

    packets, before, after, port = asyncio.run(run())
    ours = [p for p in packets if p[2] == port]
    assert [p[4] for p in ours] == [0, 1, 2, 3, 4]  # once each (not again on the way out), RTP only
    assert [p[3] for p in ours] == [50, 51, 52, 53, 54]
    assert all(before - 0.01 <= p[0] <= after + 0.01 for p in ours)
