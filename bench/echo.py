"""The echo path's round trip and the outbound pacing, measured at a real client peer.

python -m bench.echo [--trials N]

The server (a separate process, `--pipeline echo`) plays back each utterance once
it ends. Round trip = end of the client's speech (client media time) -> first
audible echo frame received; minus the configured end-of-speech silence, it is
what the media path itself costs (the echo starts 50 ms before the speech onset). Jitter = arrival interval of the server's
20 ms frames at the client, minus 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from kit.rtc_client import Client, to_48k
from kit.speech import concat, silence, speak, voiced_bounds
from rtc.ice import use_host_addresses
from tests.browser import ServerProcess

SILENCE_MS = 500
PHRASES = ["Testing one two three.", "Can you hear me?", "This is a microphone check.", "Hello from the echo test."]


async def measure(base: str, trials: int) -> dict[str, object]:
    client = Client(base)
    await client.connect()
    await client.wait_event("state", state="listening", timeout=20)
    round_trips: list[float] = []
    for i in range(trials):
        speech = speak(PHRASES[i % len(PHRASES)])
        sent = await client.mic.say(to_48k(concat(speech, silence(0.2))))
        speech_end = sent + voiced_bounds(speech)[1]
        t_back, _ = await client.wait_event("state", state="listening", after=speech_end + 0.3, timeout=20)
        audible = [t for t in client.audible_times(300) if speech_end < t < t_back]
        round_trips.append((audible[0] - speech_end) * 1000)
        await asyncio.sleep(0.3)
    arrivals = np.array([f.t for f in client.frames])
    await client.close()
    gaps = np.diff(arrivals[len(arrivals) // 10 :]) * 1000  # skip the start-up burst
    jitter = np.abs(gaps - 20.0)
    rt = np.array(round_trips)
    return {
        "trials": trials,
        "round_trip_ms": {"p50": float(np.median(rt)), "max": float(rt.max()), "all": [round(x, 1) for x in rt]},
        "path_ms_beyond_silence": {"p50": float(np.median(rt) - SILENCE_MS - 50), "max": float(rt.max() - SILENCE_MS - 50)},
        "frames": len(arrivals),
        "jitter_ms": {"p50": float(np.median(jitter)), "p99": float(np.percentile(jitter, 99)), "max": float(jitter.max())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    use_host_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        server_args = ["--pipeline", "echo", "--ice-hosts", "127.0.0.1", "--vad-silence-ms", str(SILENCE_MS)]
        with ServerProcess(server_args, Path(tmp) / "server.log") as server:
            result = asyncio.run(measure(server.base, args.trials))
    rt, path, jit = result["round_trip_ms"], result["path_ms_beyond_silence"], result["jitter_ms"]
    print(f"echo round trip (speech end -> echo audible at client), {args.trials} trials, silence {SILENCE_MS} ms:")
    print(
        f"  p50 {rt['p50']:.0f} ms, max {rt['max']:.0f} ms; beyond the silence and the 50 ms lead: p50 {path['p50']:.0f} ms, max {path['max']:.0f} ms"
    )
    print(
        f"outbound frame arrival jitter at the client ({result['frames']} frames): p50 {jit['p50']:.2f} ms, p99 {jit['p99']:.2f} ms, max {jit['max']:.1f} ms"
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"echo-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
