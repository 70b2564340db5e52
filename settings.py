"""Every setting of the product: one dataclass, from CLI flags, environment and `.env`.

Precedence: CLI flag > environment variable > `.env` file > default. Each field
declares its environment name; the CLI flag is the same name in lower case
with dashes (`LLM_BASE_URL` -> `--llm-base-url`). `python settings.py --markdown`
prints the README's configuration table, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


def _opt(default: Any, help: str, secret: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret, "choices": choices})


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable."""


@dataclass
class Settings:
    # server
    host: str = _opt("127.0.0.1", "Address the HTTP server binds to.")
    port: int = _opt(8080, "HTTP port.")
    pipeline: str = _opt(
        "assistant",
        "What a session runs: `assistant` (STT → LLM → TTS) or `echo` (mic test: plays back each utterance after half a second of silence).",
        choices=("assistant", "echo"),
    )
    log_level: str = _opt("info", "Logging level.", choices=("debug", "info", "warning", "error"))
    log_format: str = _opt(
        "text", "Log lines as `text` or `json` (one object per line, with the session id as a field).", choices=("text", "json")
    )
    log_content: bool = _opt(False, "Log transcripts and replies (off: logs carry no user content).")
    # access and limits
    voice_token: str = _opt(
        "", "If set, `POST /offer` needs `Authorization: Bearer <token>`; the page asks for it once per tab.", secret=True
    )
    allowed_origins: str = _opt(
        "",
        "Comma-separated origins allowed to POST offers from a browser (`*`: any). Empty: the page's own origin only. Requests without an Origin header (non-browser clients) are not affected.",
    )
    max_sessions: int = _opt(
        10, "Concurrent sessions per worker; more are refused with 503 (and `Connection: close`, so a retry may reach another worker)."
    )
    workers: str = _opt(
        "1",
        "Server processes sharing the port (SO_REUSEPORT): each answers offers itself and owns its sessions, engines and UDP media; the kernel spreads new connections. `auto`: one per core. A worker that dies is restarted; only its own sessions are lost.",
    )
    max_session_s: float = _opt(3600.0, "Longest session, in seconds (0: unlimited).")
    idle_timeout_s: float = _opt(300.0, "A session with no speech or typed text for this long says goodbye and closes (0: never).")
    connect_timeout_s: float = _opt(15.0, "An answered offer must connect within this many seconds.")
    no_media_timeout_s: float = _opt(5.0, "A connected client that sends no audio for this long is taken for gone (a killed browser).")
    max_turns_per_minute: int = _opt(20, "Turns one session may start per minute; more are refused with an error event.")
    max_reply_chars: int = _opt(1500, "Longest reply in characters; the rest is not generated.")
    # WebRTC
    ice_hosts: str = _opt(
        "",
        "Comma-separated local addresses to gather ICE host candidates on (e.g. `127.0.0.1` on a loopback-only machine). Empty: every interface, as aioice does.",
    )
    ice_servers: str = _opt(
        "[]",
        'JSON list of STUN/TURN servers for server and page, e.g. `[{"urls": "stun:stun.example.org:3478"}]`. Empty list: none (fine on localhost/LAN).',
    )
    turn_urls: str = _opt(
        "",
        "Comma-separated TURN server URLs (`turn:turn.example.org:3478`, `turns:turn.example.org:5349?transport=tcp`) for clients (and the server) behind NATs or firewalls that block direct UDP; each page and each answered offer gets short-lived credentials minted from `TURN_SECRET` (coturn's `use-auth-secret`). Empty: no TURN.",
    )
    turn_secret: str = _opt(
        "", "Shared secret of the TURN server (coturn's `static-auth-secret`); only credentials derived from it are sent.", secret=True
    )
    turn_ttl_s: int = _opt(
        3600,
        "Lifetime of a minted TURN credential, in seconds. It need only last until the relay is allocated (the page asks `/config` anew at each Start, the server mints one per offer): coturn keeps a relay made with it going after it expires.",
    )
    inbound_buffer: str = _opt(
        "deadline",
        "How the server receives the browser's audio. `deadline`: packets are ordered and each 20 ms frame is released as soon as it is here or, if it is missing, at its deadline, concealed (Opus FEC or packet-loss concealment), so loss and jitter cost no words and no lasting delay. `aiortc`: aiortc's own jitter buffer and decoder (a lost packet stalls it; no concealment), the old path.",
        choices=("deadline", "aiortc"),
    )
    inbound_delay_min_ms: int = _opt(
        40, "`deadline` path: the least time a missing packet is waited for, past when it would have arrived on the fastest path seen."
    )
    inbound_delay_max_ms: int = _opt(
        200,
        "`deadline` path: the most time a missing packet is waited for. Between the two bounds the wait follows the measured jitter (95th percentile of lateness over the last second).",
    )
    rtp_jitter_frames: int = _opt(
        2,
        "`aiortc` path only: Opus frames (20 ms each) aiortc's receiver holds back to reorder late packets before decoding. aiortc's own default is 4 (80 ms before the VAD hears anything).",
    )
    # speech segmentation (webrtcvad)
    vad_aggressiveness: int = _opt(3, "webrtcvad aggressiveness 0 (least) … 3 (most eager to call audio non-speech).")
    vad_frame_ms: int = _opt(20, "VAD frame size in ms: 10, 20 or 30.")
    vad_start_ms: int = _opt(100, "Voiced audio needed to declare speech started (a shorter cough neither starts a turn nor interrupts).")
    vad_silence_ms: int = _opt(
        1200,
        "The longest pause inside a turn: after this much silence the turn is over even if the end-of-turn model said the user had not finished.",
    )
    vad_prefix_ms: int = _opt(300, "Audio kept from before speech start so the first syllable is not clipped.")
    vad_min_level_dbfs: float = _opt(-50.0, "Frames quieter than this (dBFS) never count as speech, whatever webrtcvad says.")
    vad_max_utterance_s: float = _opt(30.0, "Longest utterance; longer speech is cut and sent on.")
    # turn-taking
    turn_pause_ms: int = _opt(
        100,
        "Silence after which the reply is prepared at once (transcribed, written and voiced, but held, not played); the end-of-turn model is asked once the silence is 200 ms long (or this long, if longer). Speech before release throws the reply away unheard. 0: nothing starts before `VAD_SILENCE_MS`.",
    )
    turn_detector: str = _opt(
        "smart-turn",
        "End-of-turn model asked at each pause: `smart-turn` (Smart Turn v3.2, embedded) releases the held reply as soon as it says the user has finished; `none` waits for `VAD_SILENCE_MS`.",
        choices=("smart-turn", "none"),
    )
    turn_complete_threshold: float = _opt(0.5, "Probability of 'finished' above which the end-of-turn model releases the reply.")
    unfinished_silence_ms: int = _opt(
        3000,
        "Silence after words that visibly stop mid-phrase (`What is the capital of`, `How many legs does`) before it releases the reply anyway: the speaker is probably thinking. At least `VAD_SILENCE_MS`.",
    )
    partial_every_ms: int = _opt(
        1000,
        "While the user speaks, a transcription pass over their words so far after each this many ms of speech, shown as `transcript_partial`. Only with the embedded STT (a remote one would bill every pass), only while it is idle, and cancelled at a pause. 0: passes only at pauses.",
    )
    interrupt_min_ms: int = _opt(
        800,
        "Speech over a reply first pauses it; speech this long cancels it even before its words are known. Shorter speech is transcribed: words other than a backchannel (`mm-hmm`, `yeah`, `okay` …) cancel it, a backchannel, cough or noise resumes it where it paused. 0: cancel at once (no pause).",
    )
    interrupt_pause_ms: int = _opt(
        40,
        "Voiced audio over a reply that pauses it at once, before it counts as speech (`VAD_START_MS`); if no speech follows within 200 ms the reply resumes. 0 (or ≥ `VAD_START_MS`): pause when speech starts.",
    )
    echo_gate_db: float = _opt(
        20.0,
        "While the reply is playing, inbound audio counts as speech only if it is louder than the loudest recent outbound frame minus this many dB, so the assistant's own voice leaking back into the microphone does not interrupt it. 0: off.",
    )
    # conversation
    system_prompt: str = _opt("", "System prompt for the LLM. Empty: a built-in prompt for short spoken answers.")
    barge_in: bool = _opt(True, "Let the user interrupt the assistant by speaking.")
    history_turns: int = _opt(16, "Turns (user + assistant pairs) of history kept per session; the system prompt is always kept.")
    history_chars: int = _opt(6000, "Upper bound on the characters of history sent to the LLM.")
    # engines: speech to text
    stt_engine: str = _opt(
        "local", "Speech-to-text engine: `local` (embedded) or `openai` (any OpenAI-compatible endpoint).", choices=("local", "openai")
    )
    stt_base_url: str = _opt("", "STT endpoint base URL (openai engine), e.g. `https://api.groq.com/openai/v1`.")
    stt_api_key: str = _opt("", "STT API key (openai engine).", secret=True)
    stt_model: str = _opt(
        "",
        "STT model. openai: e.g. `whisper-large-v3-turbo`; local: `tiny.en`, `base` or a CTranslate2 model directory. Empty: the engine's default (local: `tiny.en` for English alone; English and others: `tiny.en` first, `base` for what it is unsure of; `base` for any other `LANGUAGES`).",
    )
    languages: str = _opt(
        "en",
        "Languages the assistant listens and answers in: comma-separated ISO 639-1 codes (`en,zh`). Each utterance is heard as one of them and answered in it; the first is assumed until the user speaks another. One language: the recogniser is told it (fastest). Several need a multilingual STT model (local: `base`, the default then). (`STT_LANGUAGE`, its older name, is still read.)",
    )
    stt_timeout_s: float = _opt(15.0, "Timeout of one transcription.")
    repeat_below_logprob: float = _opt(
        float("-inf"),
        "An utterance whose transcript's mean token log-probability (Whisper's, local STT) is below this is not answered: the assistant asks, in the user's language, to hear it again. `-inf`: never. `python -m bench.hearing` chose `-0.68` and, on another machine, `-0.77` (docs/measurements.md).",
    )
    stt_beam_size: int = _opt(5, "Beam size of the local Whisper decoder (1 = greedy).")
    stt_threads: int = _opt(0, "CPU threads for local Whisper; 0 = all available cores.")
    # engines: language model
    llm_engine: str = _opt("local", "LLM engine: `local` (embedded llama.cpp) or `openai`.", choices=("local", "openai"))
    llm_base_url: str = _opt("", "LLM endpoint base URL (openai engine).")
    llm_api_key: str = _opt("", "LLM API key (openai engine).", secret=True)
    llm_model: str = _opt(
        "",
        "LLM model. openai: e.g. `llama-3.1-8b-instant`; local: `auto`, preset `quality` (1.5B), `default` (0.5B), `tiny` or a GGUF path. Empty: the engine's default (local: `auto` = `quality` on 2 or more cores, else `default`).",
    )
    llm_timeout_s: float = _opt(20.0, "Timeout for the first token and between tokens of a reply.")
    llm_max_tokens: int = _opt(
        100, "Longest reply in tokens (about 75 words, 30 s of speech; the default prompt asks for one or two sentences)."
    )
    llm_threads: int = _opt(0, "CPU threads for local llama.cpp; 0 = all available cores.")
    llm_context: int = _opt(4096, "Context window (tokens) of each slot of the local LLM; history + reply must fit.")
    llm_parallel: int = _opt(
        4,
        "Slots of the embedded LLM, each keeping one conversation's context cached; llama.cpp writes up to this many replies at once (continuous batching). Several sessions' first sentences are written together; the rest of a reply whose first sentence is out steps aside at a word boundary while another session's first sentence is written, and goes on once that is done or its own audio runs short. With `WORKERS` > 1, the box's one model server does this for every worker. 1: one reply at a time.",
    )
    # Greedy by default: sampling was never more often right on the evaluation set (docs/decisions/0005).
    llm_temperature: float = _opt(0.0, "Sampling temperature of the local LLM (0 = greedy: the same question gets the same answer).")
    # tools
    tools: str = _opt(
        "clock,arithmetic,timers",
        "Built-in tools, comma-separated: `clock` (the date and time where the user is: the page says, else `TIMEZONE`), `arithmetic` (exact), `timers` (timers and reminders, said aloud when due, once nobody is speaking). Empty: none, the LLM only talks. The LLM is offered them as `tools` (the endpoint must support function calling), or the router calls them (`TOOL_ROUTER`).",
    )
    mcp_servers: str = _opt(
        "",
        "MCP servers whose tools the LLM may also call, `;`-separated: a Streamable HTTP URL (`http://127.0.0.1:8931/mcp`) or a command that speaks MCP on stdio (`npx -y @modelcontextprotocol/server-everything`). Each is connected once at start; one that cannot be reached is logged and left out.",
    )
    tool_router: str = _opt(
        "auto",
        "How the built-in tools are called: `on`, from the user's words by rules (English), their results said in fixed sentences; `off`, by the LLM itself, through `tools`; `auto`, `on` for the embedded LLM, whose small model does not call them (docs/decisions/0014), `off` for the openai engine.",
    )
    tool_timeout_s: float = _opt(
        5.0, "How long a tool may run before the assistant says it could not do it (an `error` event, stage `tool`)."
    )
    timezone: str = _opt("", "IANA time zone of the clock tool until the page reports the user's (`Europe/Lisbon`). Empty: UTC.")
    # engines: text to speech
    tts_engine: str = _opt(
        "local",
        "Text-to-speech engine: `local` (embedded piper), `espeak` (embedded, robotic, instant) or `openai`.",
        choices=("local", "espeak", "openai"),
    )
    tts_base_url: str = _opt("", "TTS endpoint base URL (openai engine).")
    tts_api_key: str = _opt("", "TTS API key (openai engine).", secret=True)
    tts_model: str = _opt("", "TTS model (openai: e.g. `tts-1`). Empty: the engine's default.")
    tts_voice: str = _opt("", "TTS voice (openai: e.g. `alloy`; local: a piper voice name or .onnx path). Empty: the engine's default.")
    tts_voices: str = _opt(
        "",
        "Voices for the other languages in `LANGUAGES`, `code=voice` comma-separated (`zh=cmn,pt=pt-br`): for `local`, a piper voice (.onnx path), a Kokoro voice (`kokoro:jf_gongitsune`; Mandarin and Portuguese only) or an espeak-ng voice; for `espeak`, an espeak-ng voice; for `openai`, a voice name. A language without one: `local` speaks Mandarin and Portuguese with Kokoro (`kokoro:jf_gongitsune`) and other languages with espeak-ng's voice for them, `espeak` with espeak-ng's, `openai` with `TTS_VOICE`.",
    )
    tts_format: str = _opt(
        "pcm",
        "Audio format asked of the openai TTS endpoint; non-PCM formats are decoded as they stream.",
        choices=("pcm", "mp3", "opus", "aac", "flac", "wav"),
    )
    tts_speed: float = _opt(1.0, "Speaking speed (1.0 normal; local piper: inverse length scale).")
    tts_timeout_s: float = _opt(15.0, "Timeout for the first audio and between chunks of one sentence.")
    tts_threads: int = _opt(0, "CPU threads for the local piper voice; 0 = all available cores.")
    # embedded engines
    model_cache_dir: str = _opt(
        "", "Where split models are assembled and verified once. Empty: `$XDG_CACHE_HOME/voice-assistant` or `~/.cache/voice-assistant`."
    )
    engine_queue_size: int = _opt(
        4,
        "Requests that may wait for each embedded engine; more are refused at once as busy. Each engine takes the one needed soonest first: a new turn's transcription, first sentence and first audio go ahead of the rest of a reply whose audio is already queued.",
    )
    # conveniences
    groq_api_key: str = _opt(
        "",
        "Convenience: with an `openai` STT/LLM stage and no base URL/key of its own, use Groq (`whisper-large-v3-turbo`, `llama-3.1-8b-instant`).",
        secret=True,
    )
    openai_api_key: str = _opt(
        "",
        "Convenience: with an `openai` stage and no base URL/key of its own, use OpenAI (`whisper-1`, `gpt-4o-mini`, `tts-1`).",
        secret=True,
    )

    @property
    def language_list(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(code.strip().lower() for code in self.languages.split(",") if code.strip()))

    @property
    def mcp_server_list(self) -> list[str]:
        return [spec.strip() for spec in self.mcp_servers.split(";") if spec.strip()]

    @property
    def tool_list(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.strip().lower() for name in self.tools.split(",") if name.strip()))

    @property
    def routes_tools(self) -> bool:
        """The built-in tools are called by the router (TOOL_ROUTER), not by the LLM."""
        return self.tool_router == "on" or (self.tool_router == "auto" and self.llm_engine == "local")

    @property
    def voice_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.tts_voices.split(",") if item.strip())
        return {code.strip().lower(): voice.strip() for code, voice in pairs}

    @property
    def ice_host_list(self) -> list[str]:
        return [h.strip() for h in self.ice_hosts.split(",") if h.strip()]

    @property
    def turn_url_list(self) -> list[str]:
        return [u.strip() for u in self.turn_urls.split(",") if u.strip()]

    @property
    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)

    @property
    def ice_server_list(self) -> list[dict[str, Any]]:
        return json.loads(self.ice_servers)

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise SettingsError(f"{f.name.upper()} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}")
        try:
            servers = json.loads(self.ice_servers)
            if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
                raise ValueError("expected a list of objects with 'urls'")
        except ValueError as exc:
            raise SettingsError(f"ICE_SERVERS is not a valid JSON list of servers: {exc}") from None
        bad_urls = [u for u in self.turn_url_list if not re.fullmatch(r"turns?:[^\s:?]+(:\d+)?(\?transport=(udp|tcp))?", u)]
        if bad_urls:
            raise SettingsError(f"TURN_URLS must be turn:host[:port][?transport=udp|tcp] or turns:...; got {bad_urls[0]!r}")
        if bool(self.turn_url_list) != bool(self.turn_secret):
            raise SettingsError("TURN_URLS and TURN_SECRET go together: set both (TURN with short-lived credentials) or neither")
        if self.turn_ttl_s <= 0:
            raise SettingsError("TURN_TTL_S must be a positive number of seconds")
        if self.vad_frame_ms not in (10, 20, 30):
            raise SettingsError("VAD_FRAME_MS must be 10, 20 or 30")
        if not 0 <= self.vad_aggressiveness <= 3:
            raise SettingsError("VAD_AGGRESSIVENESS must be 0..3")
        if self.turn_pause_ms < 0 or (self.turn_pause_ms and self.turn_pause_ms >= self.vad_silence_ms):
            raise SettingsError("TURN_PAUSE_MS must be 0 (off) or shorter than VAD_SILENCE_MS")
        if not 0.0 < self.turn_complete_threshold < 1.0:
            raise SettingsError("TURN_COMPLETE_THRESHOLD must be between 0 and 1")
        if self.unfinished_silence_ms < self.vad_silence_ms:
            raise SettingsError("UNFINISHED_SILENCE_MS must be at least VAD_SILENCE_MS")
        if self.interrupt_min_ms < 0 or self.echo_gate_db < 0 or self.partial_every_ms < 0:
            raise SettingsError("INTERRUPT_MIN_MS, ECHO_GATE_DB and PARTIAL_EVERY_MS must not be negative")
        if not 0 <= self.inbound_delay_min_ms <= self.inbound_delay_max_ms <= 2000:
            raise SettingsError("INBOUND_DELAY_MIN_MS and INBOUND_DELAY_MAX_MS must satisfy 0 <= min <= max <= 2000")
        if not 0 <= self.rtp_jitter_frames <= 8:
            raise SettingsError("RTP_JITTER_FRAMES must be 0..8")
        if not (self.workers == "auto" or (self.workers.isdigit() and 1 <= int(self.workers) <= 64)):
            raise SettingsError(f"WORKERS must be a number from 1 to 64 or auto; got {self.workers!r}")
        if not self.language_list or not all(re.fullmatch(r"[a-z]{2}", code) for code in self.language_list):
            raise SettingsError(f"LANGUAGES must be comma-separated two-letter ISO 639-1 codes (en,zh); got {self.languages!r}")
        if any("=" not in item for item in self.tts_voices.split(",") if item.strip()):
            raise SettingsError(f"TTS_VOICES must be code=voice pairs, comma-separated (zh=cmn); got {self.tts_voices!r}")
        from pipeline.tools import BUILT_IN, timezone_named

        if unknown := [name for name in self.tool_list if name not in BUILT_IN]:
            raise SettingsError(f"TOOLS must name built-in tools ({', '.join(BUILT_IN)}); got {', '.join(unknown)}")
        if self.tool_timeout_s <= 0:
            raise SettingsError("TOOL_TIMEOUT_S must be a positive number of seconds")
        if self.tool_router not in ("auto", "on", "off"):
            raise SettingsError(f"TOOL_ROUTER must be auto, on or off; got {self.tool_router!r}")
        if self.timezone and getattr(timezone_named(self.timezone), "key", None) != self.timezone:
            raise SettingsError(f"TIMEZONE must be an IANA time zone such as Europe/Lisbon; got {self.timezone!r}")
        if not 1 <= self.llm_parallel <= 16:
            raise SettingsError("LLM_PARALLEL must be 1..16")
        if not 0 <= self.port < 65536:
            raise SettingsError("PORT must be 0..65535 (0: any free port)")

    def public(self) -> dict[str, Any]:
        """Settings safe to log: secrets show only whether they are set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.upper()] = ("set" if value else "unset") if f.metadata.get("secret") else value
        return out


def _convert(f: Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{f.name.upper()} must be true or false; got {raw!r}")
    try:
        return {"int": int, "float": float}.get(kind, str)(raw)
    except ValueError:
        raise SettingsError(f"{f.name.upper()} must be a {kind}; got {raw!r}") from None


def load_settings(argv: list[str] | None = None, env: dict[str, str] | None = None, dotenv_path: str | None = ".env") -> Settings:
    """Build and validate Settings. `env` defaults to os.environ plus `.env`."""
    if env is None:
        env = {}
        if dotenv_path and os.path.exists(dotenv_path):
            from dotenv import dotenv_values

            env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        env.update(os.environ)
    parser = argparse.ArgumentParser(description="Real-time voice assistant server")
    for f in fields(Settings):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, help=f.metadata["help"])
    parser.add_argument("--stt-language", dest="stt_language", default=None, help=argparse.SUPPRESS)  # LANGUAGES' older name
    args = parser.parse_args(argv if argv is not None else [])
    values: dict[str, Any] = {}
    if args.languages is None and "LANGUAGES" not in env and (old := args.stt_language or env.get("STT_LANGUAGE")):
        values["languages"] = old
    for f in fields(Settings):
        raw = getattr(args, f.name)
        if raw is None:
            raw = env.get(f.name.upper())
        if raw is not None:
            values[f.name] = _convert(f, raw)
    settings = Settings(**values)
    settings.validate()
    return settings


def markdown_table() -> str:
    rows = ["| Variable | CLI flag | Default | What it does |", "|---|---|---|---|"]
    for f in fields(Settings):
        default = f.default if f.default is not MISSING else ""
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{f.name.upper()}` | `--{f.name.replace('_', '-')}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown_table())
    else:
        print(json.dumps(load_settings(sys.argv[1:]).public(), indent=2))
