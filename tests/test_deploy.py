"""Past one machine, with existing parts: the README's "Deploying" recipe, run on loopback.

- nginx (Debian's) runs deploy/nginx.conf itself, with loopback ports and a test certificate, in
  front of two real `server.py` boxes of one session each: an offer that reaches a full box is
  retried on the other, a third client gets the server's own 503 through nginx, and each client
  then converses straight with the box that answered (the echo pipeline plays back its speech).
- coturn (Debian's) runs deploy/turnserver.conf itself, on loopback: the server mints short-lived
  credentials from TURN_SECRET; a client peer that may only use relay candidates takes them from
  /config and still converses, over a relayed pair; coturn refuses a wrong or expired credential.
- /config gives TURN credentials (never the secret), and with VOICE_TOKEN only to a caller that
  sends the token; the credential is coturn's REST-API scheme.
Nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice import stun, turn
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

from kit.rtc_client import Client, to_48k
from kit.speech import concat, silence, speak
from rtc.ice import use_host_addresses
from rtc.turn import TurnConfig, turn_credential
from settings import SettingsError, load_settings
from tests.browser import ServerProcess, free_port, get_json, poll
from tests.test_media import _best_correlation

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
HAVE_SPEECH = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None
SECRET = "test-secret-f00d-never-sent"
ECHO_ARGS = ["--pipeline", "echo", "--ice-hosts", "127.0.0.1", "--host", "127.0.0.1"]

needs_nginx = pytest.mark.skipif(
    not (Path(NGINX).exists() and HAVE_SPEECH), reason="needs Debian's nginx, espeak-ng and sox (scripts/setup.sh --test)"
)
needs_coturn = pytest.mark.skipif(
    not (Path(TURNSERVER).exists() and HAVE_SPEECH), reason="needs Debian's coturn, espeak-ng and sox (scripts/setup.sh --test)"
)


def from_template(path: Path, replacements: dict[str, str]) -> str:
    """The documented file with each of `replacements` made exactly once (so the two cannot drift apart)."""
    text = path.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{path.name} no longer has {old!r} exactly once: update this test with the recipe"
        text = text.replace(old, new)
    return text


def wait_for_tcp(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    def accepting() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    poll(accepting, timeout, what=f"127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def converses(client: Client, text: str = "Testing one two three, can you hear me?") -> None:
    """The client speaks; the server hears it, and the echo pipeline's playback of it comes back."""
    speech = speak(text)
    sent = await client.mic.say(to_48k(concat(silence(0.3), speech, silence(0.2))))
    t_stop, _ = await client.wait_event("speech_stopped", after=sent, timeout=15)
    await client.wait_event("state", state="listening", after=t_stop, timeout=15)  # the playback has ended
    # The echo comes after the speech's end left the client (the speech_stopped event may reach the
    # client after the echo's first packets); its last packets may still be on their way.
    since = sent + 0.3 + len(speech) / 16000
    deadline = time.monotonic() + 5
    while (corr := _best_correlation(client.audio(start=since)[::3], speech)[0]) <= 0.6 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert corr > 0.6, f"what came back does not match what was said (correlation {corr:.2f})"


@pytest.fixture(autouse=True)
def _loopback_candidates() -> None:
    use_host_addresses(["127.0.0.1"])  # the clients' host candidates: loopback is all there is


# ---------- nginx in front of two boxes ----------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Front:
    boxes: tuple[ServerProcess, ServerProcess]
    url: str  # https://127.0.0.1:<port>, through nginx
    http_url: str  # the plain-http server block (redirects)
    ssl: ssl.SSLContext  # trusts the test certificate
    access_log: Path

    def offers(self) -> list[str]:
        return [line for line in self.access_log.read_text().splitlines() if '"POST /offer ' in line]

    def sessions(self) -> list[int]:
        return [box.healthz()["sessions"] for box in self.boxes]


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    """Two one-session echo boxes, and nginx running deploy/nginx.conf in front of them."""
    args = [*ECHO_ARGS, "--max-sessions", "1"]
    with ServerProcess(args, tmp_path / "box-a.log") as a, ServerProcess(args, tmp_path / "box-b.log") as b:
        cert, key = self_signed(tmp_path)
        https_port, http_port = free_port(), free_port()
        temp_paths = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = from_template(
            ROOT / "deploy" / "nginx.conf",
            {
                "worker_processes auto;": "worker_processes 1;",
                "http {\n": "http {\n" + temp_paths,
                "access_log /var/log/nginx/voice.access.log voice;": f"access_log {tmp_path}/access.log voice;",
                "server 10.0.0.11:8080 ": f"server 127.0.0.1:{a.port} ",
                "server 10.0.0.12:8080 ": f"server 127.0.0.1:{b.port} ",
                "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
                "listen 80;": f"listen 127.0.0.1:{http_port};",
                "/etc/letsencrypt/live/voice.example.org/fullchain.pem": str(cert),
                "/etc/letsencrypt/live/voice.example.org/privkey.pem": str(key),
            },
        )
        (tmp_path / "nginx.conf").write_text(conf)
        log = tmp_path / "nginx.log"
        with open(log, "wb") as out:
            cmd = [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", f"daemon off; pid {tmp_path}/nginx.pid;"]
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            # readiness by TCP only: an HTTP request would move nginx's round robin
            wait_for_tcp(https_port, proc, log)
            yield Front(
                (a, b),
                f"https://127.0.0.1:{https_port}",
                f"http://127.0.0.1:{http_port}",
                ssl.create_default_context(cafile=str(cert)),
                tmp_path / "access.log",
            )
        finally:
            stop(proc)


@needs_nginx
async def test_nginx_retries_an_offer_a_full_box_refused_on_the_other_and_each_client_talks_to_its_box(front: Front) -> None:
    a, b = front.boxes
    upstream = f"upstream=127.0.0.1:{a.port}, 127.0.0.1:{b.port} upstream_status=503, 200"
    clients: list[Client] = []
    try:
        # Box A is full: its one session is a client that went to it directly.
        first = Client(a.base)
        clients.append(first)
        await first.connect()
        assert front.sessions() == [1, 0]
        # The second client offers through nginx, over TLS, with a browser's Origin: nginx asks A
        # first (round robin's first pick), A says 503, nginx asks B, which answers.
        second = Client(front.url, ssl=front.ssl)
        clients.append(second)
        await second.connect(headers={"Origin": front.url})
        assert front.sessions() == [1, 1], "box B took the second session"
        # nginx writes a request's log line as it finishes it, which can be after the client has the answer.
        poll(lambda: len(front.offers()) == 1, 5, what="nginx to log the second offer")
        assert upstream in front.offers()[0], f"the 503 was retried on B: {front.offers()}"
        # Media goes straight to the box that answered, not through nginx: both converse at once.
        await asyncio.gather(*(c.wait_event("state", state="listening", timeout=15) for c in clients))
        await asyncio.gather(converses(first), converses(second, "The quick brown fox jumps over the lazy dog."))

        # Both full: nginx asked both, and the server's own 503 (JSON, with its message) reaches the client.
        third = Client(front.url, ssl=front.ssl)
        clients.append(third)
        with pytest.raises(RuntimeError, match=r"offer refused: 503 \{'error': 'server is full"):
            await third.connect()
        poll(lambda: len(front.offers()) == 2, 5, what="nginx to log the third offer")  # (CI read the second's line twice)
        assert "upstream_status=503, 503" in front.offers()[-1], front.offers()
        assert front.sessions() == [1, 1]

        # A frees up: the next offer gets there, as no box was marked down for having been full (max_fails=0).
        await first.close()
        poll(lambda: front.sessions() == [0, 1], 15, what="box A's session to close")
        fourth = Client(front.url, ssl=front.ssl)
        clients.append(fourth)
        await fourth.connect()
        assert front.sessions() == [1, 1]
        await fourth.wait_event("state", state="listening", timeout=15)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    # The plain-http server block sends browsers to https (the microphone needs a secure context).
    async with aiohttp.ClientSession() as http, http.get(f"{front.http_url}/", allow_redirects=False) as resp:
        assert resp.status == 301 and resp.headers["Location"].startswith("https://")


# ---------- coturn: a client that can only relay ----------


@dataclass
class Coturn:
    port: int
    relay_ports: range
    log: Path


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """coturn running deploy/turnserver.conf with loopback addresses, the test's secret and its own files."""
    port = free_port()  # a free TCP port; coturn listens on UDP and TCP
    relay_from = 40000 + (port % 20000)  # a small relay range of its own, so parallel runs don't collide
    conf = from_template(
        ROOT / "deploy" / "turnserver.conf",
        {
            "listening-port=3478\n": f"listening-port={port}\nlistening-ip=127.0.0.1\nrelay-ip=127.0.0.1\n",
            "min-port=49160\n": f"min-port={relay_from}\n",
            "max-port=49999\n": f"max-port={relay_from + 20}\n",
            "static-auth-secret=change-me-to-a-long-random-string\n": f"static-auth-secret={SECRET}\n",
            "log-file=/var/log/turnserver.log\n": f"log-file={tmp_path}/turn.log\n",
            # test-only: the peers are on loopback, there is no certificate, and allocations are logged
            "no-cli\n": f"no-cli\nallow-loopback-peers\nno-tls\nverbose\npidfile={tmp_path}/turn.pid\nuserdb={tmp_path}/turndb\n",
        },
    )
    (tmp_path / "turnserver.conf").write_text(conf)
    out_path = tmp_path / "turnserver.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([TURNSERVER, "-c", str(tmp_path / "turnserver.conf")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_tcp(port, proc, out_path)
        yield Coturn(port, range(relay_from, relay_from + 21), tmp_path / "turn.log")
    finally:
        stop(proc)


def relay_only(ice_servers: list[dict[str, Any]]) -> RTCPeerConnection:
    """A peer connection built from /config's ice_servers, as the page builds it, allowed only relay candidates."""
    servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY))


def selected_pair(client: Client) -> Any:
    """aioice's nominated candidate pair of the client's (bundled) ICE transport."""
    ice = client.pc.getTransceivers()[0].receiver.transport.transport
    return ice._connection._nominated[1]


@needs_coturn
async def test_a_client_that_can_only_relay_converses_through_coturn_with_minted_credentials(coturn: Coturn, tmp_path: Path) -> None:
    args = [*ECHO_ARGS, "--turn-urls", f"turn:127.0.0.1:{coturn.port}"]
    with ServerProcess(args, tmp_path / "server.log", env={"TURN_SECRET": SECRET}) as server:
        config = get_json(f"{server.base}/config")
        assert SECRET not in json.dumps(config)
        (entry,) = [s for s in config["ice_servers"] if "credential" in s]
        assert entry["urls"] == [f"turn:127.0.0.1:{coturn.port}"] and re.fullmatch(r"\d+:voice-[0-9a-f]{8}", entry["username"])

        client = Client(server.base, pc=relay_only(config["ice_servers"]))
        try:
            await client.connect()
            offered = re.findall(r"a=candidate:.* typ (\w+)", client.pc.localDescription.sdp)
            assert offered and set(offered) == {"relay"}, f"the client offered only relay candidates: {offered}"
            await client.wait_event("state", state="listening", timeout=15)
            await converses(client)
            pair = selected_pair(client)
            assert pair.local_candidate.type == "relay", f"the selected pair relays through coturn: {pair}"
            assert pair.local_candidate.host == "127.0.0.1" and pair.local_candidate.port in coturn.relay_ports, pair
        finally:
            await client.close()
        assert SECRET not in server.log()
    # coturn saw the allocation made with the minted username
    assert f"username=<{entry['username']}>" in coturn.log.read_text(errors="replace")


async def allocate(port: int, entry: dict[str, Any]) -> tuple[str, int]:
    """A TURN allocation on coturn with `entry`'s credential, then deleted; its relayed address."""
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Sink(asyncio.DatagramProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

    transport, _ = await turn.create_turn_endpoint(Sink, ("127.0.0.1", port), entry["username"], entry["credential"])
    relayed = transport.get_extra_info("sockname")
    transport.close()
    await asyncio.wait_for(lost, 5)  # deleted
    return relayed


@needs_coturn
async def test_coturn_refuses_a_wrong_or_expired_credential(coturn: Coturn) -> None:
    minted = TurnConfig((f"turn:127.0.0.1:{coturn.port}",), SECRET, ttl_s=60)
    relayed = await allocate(coturn.port, minted.ice_server())  # a fresh one is good
    assert relayed[0] == "127.0.0.1" and relayed[1] in coturn.relay_ports
    expired = minted.ice_server(now=time.time() - 120)
    forged = TurnConfig(minted.urls, "not-the-secret", ttl_s=60).ice_server()
    for entry in (expired, forged):
        with pytest.raises(stun.TransactionFailed, match="401"):
            await allocate(coturn.port, entry)


# ---------- /config and the credential itself (no external programs) ----------


def test_the_credential_is_coturns_rest_api_scheme() -> None:
    # HMAC-SHA1 test vector: key "key", message "The quick brown fox jumps over the lazy dog"
    digest = bytes.fromhex("de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9")
    assert turn_credential("key", "The quick brown fox jumps over the lazy dog") == base64.b64encode(digest).decode()
    config = TurnConfig(("turn:turn.example.org:3478", "turns:turn.example.org:5349?transport=tcp"), "s3cret", ttl_s=600)
    entry = config.ice_server(now=1_700_000_000.7)
    assert entry["urls"] == ["turn:turn.example.org:3478", "turns:turn.example.org:5349?transport=tcp"]
    assert re.fullmatch(r"1700000600:voice-[0-9a-f]{8}", entry["username"]), entry["username"]
    assert entry["credential"] == turn_credential("s3cret", entry["username"])
    assert config.ice_server(now=1_700_000_000)["username"] != entry["username"], "each credential has a label of its own"
    assert "s3cret" not in repr(config)


async def test_config_mints_turn_credentials_and_with_a_token_only_for_its_holder(start_server) -> None:
    turn_settings = {"turn_urls": "turn:127.0.0.1:3478", "turn_secret": SECRET, "turn_ttl_s": 900}
    open_server = await start_server(pipeline="echo", ice_servers='[{"urls": "stun:127.0.0.1:3478"}]', **turn_settings)
    guarded = await start_server(pipeline="echo", voice_token="tok-123", **turn_settings)

    async def config(server: Any, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/config", headers=headers) as resp:
            assert resp.headers["Cache-Control"] == "no-store"
            text = await resp.text()
        assert SECRET not in text
        return json.loads(text)

    before = int(time.time())
    first, second = await config(open_server), await config(open_server)
    stun_entry, entry = first["ice_servers"]
    assert stun_entry == {"urls": "stun:127.0.0.1:3478"}, "ICE_SERVERS come first, as they are"
    expiry = int(entry["username"].split(":")[0])
    assert before + 900 <= expiry <= int(time.time()) + 900
    assert entry["credential"] == turn_credential(SECRET, entry["username"])
    assert second["ice_servers"][1]["username"] != entry["username"], "minted afresh for each caller"

    for token in (None, "wrong"):
        refused = await config(guarded, token)
        assert refused == {"ice_servers": [], "token_required": True}, "no relay for a caller without the token"
    given = await config(guarded, "tok-123")
    assert [s["urls"] for s in given["ice_servers"]] == [["turn:127.0.0.1:3478"]]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TURN_URLS": "turn:turn.example.org:3478"}, "TURN_SECRET"),
        ({"TURN_SECRET": "s3cret"}, "TURN_URLS"),
        ({"TURN_URLS": "stun:turn.example.org:3478", "TURN_SECRET": "s3cret"}, "TURN_URLS"),
        ({"TURN_URLS": "turn:a:3478?transport=sctp", "TURN_SECRET": "s3cret"}, "TURN_URLS"),
        ({"TURN_URLS": "turn:a:3478", "TURN_SECRET": "s3cret", "TURN_TTL_S": "0"}, "TURN_TTL_S"),
    ],
)
def test_turn_settings_are_checked(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings([], env=env)


def test_turn_settings_keep_the_secret_out_of_logs() -> None:
    s = load_settings([], env={"TURN_URLS": "turn:a:3478, turns:a:5349?transport=tcp", "TURN_SECRET": SECRET})
    assert s.turn_url_list == ["turn:a:3478", "turns:a:5349?transport=tcp"] and s.turn_ttl_s == 3600
    assert SECRET not in str(s.public()) and s.public()["TURN_SECRET"] == "set"
