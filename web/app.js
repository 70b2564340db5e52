// Voice assistant page: mic -> WebRTC -> server; server audio + JSON events back.
// No build step, no dependencies. State for tests lives on window.voice.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $("start"),
    status: $("status"),
    message: $("message"),
    levels: $("levels"),
    record: $("record"),
    exportButton: $("export"),
    exportAudio: $("export-audio"),
    chat: $("chat"),
    chatEmpty: $("chat-empty"),
    textForm: $("text-form"),
    textInput: $("text-input"),
    send: $("send"),
    log: $("log"),
    session: $("session"),
    audio: $("remote-audio"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
  };

  const TOKEN_KEY = "voice.token";
  const LOG_MAX = 50;
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const OFFER_ATTEMPTS = 4; // POST /offer tries while workers answer 503 (full)

  const voice = {
    events: [],        // every parsed server event, in arrival order
    status: "idle",
    message: "",       // the last error / info line shown to the user
    session: null,     // session id from POST /offer
    pc: null,
    dc: null,
    micStream: null,
    remoteStream: null,
    config: null,
    start: () => start(),
    stop: () => stop(),
    sendText: (text) => sendText(text),
    micLevel: 0,       // 0..1 RMS of the mic, updated by the meter
    remoteLevel: () => remoteLevel(),  // 0..1 RMS of the remote audio right now
    handleEvent: (ev) => handleEvent(ev),  // feed a server event (tests render synthetic ones)
    exportSession: () => exportSession(),  // the conversation as the "Save conversation" button saves it
    recorder: null,    // this session's recording, once switched on (see makeRecorder)
    makeRecorder: (keepS) => makeRecorder(keepS),
    levelMarks: () => levelMarks.map((m) => m.kind),  // what the level strip marks now
  };
  window.voice = voice;

  let gen = 0;           // bumps on each start/stop; stale async work checks it
  let running = false;
  let audioCtx = null;
  let micAnalyser = null;
  let remoteAnalyser = null;
  let meterRaf = 0;
  let turnCounter = 0;
  const turns = new Map(); // turn -> {user, assistant, metrics}
  // What "Save conversation" is made of: this session's events that say what happened (not the
  // streamed deltas); it grows by about a kilobyte a turn, while voice.events keeps only the latest.
  const KEPT_TYPES = new Set(["transcript", "reply", "tool_call", "tool_result", "metrics", "error", "timer"]);
  const EVENTS_MAX = 2000;
  let sessionLog = [];
  let sessionStarted = null;  // ISO time
  let micSource = null, remoteSource = null, recorderNode = null, merger = null;
  let pendingTyped = [];   // locally shown typed messages awaiting their transcript event
  let partial = null;      // the bubble showing transcript_partial text, until a transcript adopts it
  let partialTimer = 0;
  function dropPartial() {
    if (partial) partial.remove();
    partial = null;
  }

  // ---------- status / messages ----------

  function setStatus(s) {
    voice.status = s;
    document.body.dataset.status = s;
    ui.status.textContent = s;
  }

  function showMessage(text, kind = "error") {
    voice.message = text || "";
    if (!text) {
      ui.message.hidden = true;
      ui.message.textContent = "";
      return;
    }
    ui.message.hidden = false;
    ui.message.className = "message" + (kind === "info" ? " info" : "");
    ui.message.textContent = text;
  }

  function fail(text) {
    teardown();
    showMessage(text, "error");
    setStatus("error");
    setButton(false);
  }

  function setButton(isRunning) {
    ui.start.textContent = isRunning ? "Stop" : "Start";
    ui.start.classList.toggle("stop", isRunning);
  }

  function setTextEnabled(on) {
    ui.textInput.disabled = !on;
    ui.send.disabled = !on;
  }

  // ---------- log ----------

  function logLine(obj, isError = false) {
    const li = document.createElement("li");
    if (isError) li.className = "error";
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = new Date().toLocaleTimeString([], { hour12: false });
    li.append(t, typeof obj === "string" ? obj : JSON.stringify(obj));
    ui.log.append(li);
    while (ui.log.children.length > LOG_MAX) ui.log.firstElementChild.remove();
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  // ---------- chat ----------

  function chatScroll() {
    ui.chat.scrollTop = ui.chat.scrollHeight;
  }

  function bubble(role, text) {
    if (ui.chatEmpty) { ui.chatEmpty.remove(); ui.chatEmpty = null; }
    const div = document.createElement("div");
    div.className = "msg " + role;
    const span = document.createElement("span");
    span.className = "text";
    span.textContent = text || "";
    div.append(span);
    ui.chat.append(div);
    chatScroll();
    return div;
  }

  function systemNote(text, isError = false) {
    const div = bubble("system", text);
    if (isError) div.classList.add("error");
    return div;
  }

  function turnOf(ev) {
    if (ev.turn !== undefined && ev.turn !== null) return ev.turn;
    return turnCounter;
  }

  function turnEntry(turn) {
    let t = turns.get(turn);
    if (!t) {
      t = { user: null, assistant: null, metrics: null };
      turns.set(turn, t);
    }
    return t;
  }

  function assistantBubble(turn) {
    const t = turnEntry(turn);
    if (!t.assistant) {
      t.assistant = bubble("assistant", "");
      t.assistant.classList.add("streaming");
      t.assistant.dataset.turn = String(turn);
      if (t.language) t.assistant.lang = t.language;  // the reply is in the user's language
    }
    return t.assistant;
  }

  // The turn's language (transcript.language): a badge on the user's words, and `lang` on both
  // bubbles so the browser picks a font and line breaking for it (Chinese has no spaces).
  const LANGUAGE_NAMES = { en: "English", zh: "中文", pt: "Português", ja: "日本語", es: "Español", fr: "Français", de: "Deutsch" };
  function showLanguage(t, language) {
    if (!language) return;
    t.language = language;
    t.user.lang = language;
    if (t.assistant) t.assistant.lang = language;
    let badge = t.user.querySelector(".lang");
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "lang";
      t.user.prepend(badge);
    }
    badge.textContent = LANGUAGE_NAMES[language] || language;
    badge.title = "heard as " + language;
  }

  function ms(v) {
    return typeof v === "number" && isFinite(v) ? Math.round(v) + " ms" : "–";
  }

  function renderMetrics(turn) {
    const t = turnEntry(turn);
    const m = t.metrics;
    if (!m) return;
    const host = t.assistant || t.user;
    if (!host) return;
    let meta = host.querySelector(".meta");
    if (!meta) {
      meta = document.createElement("span");
      meta.className = "meta";
      host.append(meta);
    }
    meta.textContent = "";
    const b = document.createElement("b");
    b.textContent = "voice-to-voice " + ms(m.voice_to_voice_ms);
    meta.append(b, ` · endpoint ${ms(m.endpoint_ms)} · stt ${ms(m.stt_ms)} · llm first token ${ms(m.llm_first_token_ms)} · tts first audio ${ms(m.tts_first_audio_ms)}`);
    drawTimeline(host, m);
    chatScroll();
  }

  // ---------- a turn's timeline ----------
  // A waterfall from the metrics event alone: time runs from the user's speech end (0) to the
  // reply's first audio on the left three quarters, and on through the reply's playback (its
  // pauses for the user, an interruption) on the last quarter. Every number drawn is one of the
  // event's, kept as it came in data-* attributes (tests compare them).
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TL_ROW = 15, TL_LABEL = 40, TL_TOP = 4, TL_AXIS = 14, TL_LATENCY_SHARE = 0.74;
  const STAGES = [
    { key: "stt", at: "stt_at_ms", ms: "stt_ms", label: "stt" },
    { key: "llm", at: "llm_at_ms", ms: "llm_first_token_ms", label: "llm" },
    { key: "tts", at: "tts_at_ms", ms: "tts_first_audio_ms", label: "tts" },
  ];
  const num = (v) => typeof v === "number" && isFinite(v);

  function svg(name, attrs, parent) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (parent) parent.append(el);
    return el;
  }

  function drawTimeline(host, m) {
    let box = host.querySelector("svg.timeline");
    if (!box) {
      box = svg("svg", { class: "timeline", role: "img" });
      host.append(box);
    }
    box.textContent = "";
    box.dataset.final = m.final ? "1" : "0";
    const width = Math.max(220, Math.round(box.getBoundingClientRect().width || host.clientWidth || 320));
    const tools = (m.tools || []).filter(([, at, took]) => num(at) && num(took));
    const rows = ["turn", "stt", "llm", ...(tools.length ? ["tool"] : []), "tts", "reply"];
    const height = TL_TOP + rows.length * TL_ROW + TL_AXIS;
    box.setAttribute("viewBox", `0 0 ${width} ${height}`);
    box.setAttribute("height", height);

    const ends = [m.released_at_ms, ...STAGES.map((s) => num(m[s.at]) && num(m[s.ms]) ? m[s.at] + m[s.ms] : null),
      ...tools.map(([, at, took]) => at + took)].filter(num);
    const start = Math.min(0, ...[m.prepared_at_ms, ...STAGES.map((s) => m[s.at])].filter(num));
    const heard = num(m.heard_at_ms) ? m.heard_at_ms : Math.max(1, ...ends);
    const end = Math.max(heard, ...[m.ended_at_ms, m.interrupted_at_ms].filter(num));
    const plotW = width - TL_LABEL - 4;
    const split = end > heard ? TL_LATENCY_SHARE : 1;
    const x = (t) => TL_LABEL + (t <= heard
      ? ((t - start) / Math.max(1, heard - start)) * split * plotW
      : split * plotW + ((t - heard) / Math.max(1, end - heard)) * (1 - split) * plotW);
    const y = (row) => TL_TOP + rows.indexOf(row) * TL_ROW;
    const label = (row, text) => svg("text", { x: 0, y: y(row) + 10, class: "tl-label" }, box).textContent = text;
    const bar = (row, cls, from, to, data, title) => {
      const r = svg("rect", { class: cls, x: x(from), y: y(row) + 2, width: Math.max(1.5, x(to) - x(from)), height: TL_ROW - 5, ...data }, box);
      svg("title", {}, r).textContent = title;
      return r;
    };
    const mark = (row, cls, at, data, title) => {
      const l = svg("line", { class: cls, x1: x(at), x2: x(at), y1: y(row), y2: y(row) + TL_ROW - 1, ...data }, box);
      svg("title", {}, l).textContent = title;
      return l;
    };
    const value = (row, at, text, cls) => {
      const px = x(at) + 3;
      const t = svg("text", { x: px, y: y(row) + 10, class: cls }, box);
      t.textContent = text;
      if (px > width - 6 * text.length) { t.setAttribute("x", x(at) - 3); t.setAttribute("text-anchor", "end"); }
      return t;
    };

    svg("line", { class: "tl-zero", x1: x(0), x2: x(0), y1: TL_TOP, y2: height - TL_AXIS }, box);
    // The turn's end decided: held (speculative) from its preparation to its release.
    label("turn", "turn");
    if (num(m.prepared_at_ms) && num(m.released_at_ms) && m.prepared_at_ms < m.released_at_ms)
      bar("turn", "tl-held", m.prepared_at_ms, m.released_at_ms, { "data-at": m.prepared_at_ms, "data-to": m.released_at_ms },
        `held from ${ms(m.prepared_at_ms)}: prepared before the turn was over`);
    if (num(m.released_at_ms)) {
      mark("turn", "tl-release", m.released_at_ms, { "data-at": m.released_at_ms, "data-by": m.released_by || "" },
        `turn over at ${ms(m.released_at_ms)}, by ${m.released_by || "?"}`);
      value("turn", m.released_at_ms, `${m.released_by || ""} ${Math.round(m.released_at_ms)}`, "tl-value tl-release-value");
    }
    for (const s of STAGES) {
      label(s.key, s.label);
      if (!num(m[s.at]) || !num(m[s.ms])) continue;
      bar(s.key, "tl-" + s.key, m[s.at], m[s.at] + m[s.ms], { "data-at": m[s.at], "data-ms": m[s.ms] },
        `${s.label}: ${ms(m[s.ms])}, from ${ms(m[s.at])}`);
      value(s.key, m[s.at] + m[s.ms], String(Math.round(m[s.ms])), `tl-value tl-${s.key}-value`);
    }
    if (tools.length) label("tool", "tool");
    for (const [name, at, took] of tools) {
      bar("tool", "tl-tool", at, at + took, { "data-at": at, "data-ms": took, "data-name": name }, `${name}: ${ms(took)}, from ${ms(at)}`);
      value("tool", at + took, `${name} ${Math.round(took)}`, "tl-value tl-tool-value");
    }
    // The reply as heard: from its first audio to its end, with the pauses for the user and any interruption.
    label("reply", "reply");
    if (num(m.heard_at_ms)) {
      svg("line", { class: "tl-heard", x1: x(m.heard_at_ms), x2: x(m.heard_at_ms), y1: TL_TOP, y2: height - TL_AXIS }, box);
      const stop = num(m.ended_at_ms) ? m.ended_at_ms : num(m.interrupted_at_ms) ? m.interrupted_at_ms : m.heard_at_ms;
      bar("reply", "tl-play", m.heard_at_ms, Math.max(stop, m.heard_at_ms), { "data-at": m.heard_at_ms, "data-to": stop },
        `heard from ${ms(m.heard_at_ms)}`);
    }
    for (const [at, resumed] of m.pauses || []) {
      const to = num(resumed) ? resumed : num(m.interrupted_at_ms) ? m.interrupted_at_ms : num(m.ended_at_ms) ? m.ended_at_ms : at;
      bar("reply", "tl-pause", at, Math.max(at, to), { "data-at": at, "data-resumed": num(resumed) ? resumed : "" },
        num(resumed) ? `paused for the user at ${ms(at)}, resumed at ${ms(resumed)}` : `paused for the user at ${ms(at)}`);
    }
    if (num(m.interrupted_at_ms))
      mark("reply", "tl-interrupt", m.interrupted_at_ms, { "data-at": m.interrupted_at_ms }, `interrupted at ${ms(m.interrupted_at_ms)}`);
    // Axis: the speech end, the first audio heard, the end.
    const axisY = height - 3;
    const tick = (at, text, anchor) => { const t = svg("text", { x: x(at), y: axisY, "text-anchor": anchor, class: "tl-axis" }, box); t.textContent = text; return t; };
    tick(0, "0", "start");
    if (num(m.heard_at_ms)) tick(m.heard_at_ms, `heard ${ms(m.heard_at_ms)}`, "end").classList.add("tl-heard-value");
    if (end > heard) tick(end, `${(end / 1000).toFixed(1)} s`, "end");
  }

  let redrawTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(redrawTimer);
    redrawTimer = setTimeout(() => { for (const [turn, t] of turns) if (t.metrics) renderMetrics(turn); }, 150);
  });

  // A timer or reminder: its bubble counts down until it is due (then the assistant says it) or cancelled.
  const timers = new Map();  // id -> {div, due (performance.now() ms), name}
  let timerTick = null;
  function clock(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
  }
  function renderTimers() {
    for (const t of timers.values()) t.div.querySelector(".meta").textContent = clock(t.due - performance.now()) + " left";
    if (!timers.size) { clearInterval(timerTick); timerTick = null; }
  }
  function showTimer(ev) {
    let t = timers.get(ev.id);
    if (ev.status === "set") {
      const name = ev.label ? `reminder: ${ev.label}` : `timer: ${clock(ev.seconds * 1000)}`;
      const div = bubble("timer", name);
      const meta = document.createElement("span");
      meta.className = "meta";
      div.append(meta);
      timers.set(ev.id, { div, due: performance.now() + ev.seconds * 1000 });
      renderTimers();
      if (!timerTick) timerTick = setInterval(renderTimers, 500);
      return;
    }
    if (!t) return;
    timers.delete(ev.id);
    t.div.classList.add(ev.status);
    t.div.querySelector(".meta").textContent = ev.status === "due" ? "due now" : "cancelled";
    renderTimers();
  }

  // ---------- server events ----------

  function handleEvent(ev) {
    voice.events.push(ev);
    if (voice.events.length > EVENTS_MAX) voice.events.splice(0, voice.events.length - EVENTS_MAX);
    if (KEPT_TYPES.has(ev.type)) sessionLog.push(ev);
    logLine(ev, ev.type === "error");
    const turn = turnOf(ev);
    switch (ev.type) {
      case "state":
        if (ev.state) setStatus(ev.state);
        break;
      case "speech_started":
        markLevels("speech");
        break;
      case "speech_stopped":
        break;
      case "transcript_partial": {
        // The user's words so far, shown live; the transcript takes the bubble over, and a
        // partial nobody answers (a backchannel, a cough) fades after a few seconds.
        if (!partial) {
          partial = bubble("user", "");
          partial.classList.add("partial");
        }
        partial.querySelector(".text").textContent = ev.text || "";
        clearTimeout(partialTimer);
        partialTimer = setTimeout(dropPartial, 4000);
        chatScroll();
        break;
      }
      case "transcript": {
        if (typeof ev.turn === "number") turnCounter = Math.max(turnCounter, ev.turn);
        const t = turnEntry(turn);
        const i = pendingTyped.findIndex((p) => p.text === ev.text);
        if (i >= 0) {
          t.user = pendingTyped[i].div;
          pendingTyped.splice(i, 1);
        } else if (!t.user && partial && ev.source !== "text") {
          t.user = partial;
          t.user.classList.remove("partial");
          t.user.querySelector(".text").textContent = ev.text || "";
          clearTimeout(partialTimer);
          partial = null;
        } else if (!t.user) {
          t.user = bubble("user", ev.text || "");
        } else {
          t.user.querySelector(".text").textContent = ev.text || "";
        }
        t.user.dataset.turn = String(turn);
        showLanguage(t, ev.language);
        renderMetrics(turn);
        break;
      }
      case "reply_delta": {
        const b = assistantBubble(turn);
        b.querySelector(".text").textContent += ev.text || "";
        chatScroll();
        break;
      }
      case "reply": {
        if (ev.interrupted && !ev.text) {
          // The turn was cut off before any reply: the user went on talking and the next turn answers.
          const t = turnEntry(turn);
          if (t.assistant) t.assistant.remove();
          t.assistant = null;
          renderMetrics(turn);
          break;
        }
        const b = assistantBubble(turn);
        b.classList.remove("streaming");
        if (ev.interrupted) markLevels("interrupted");
        const span = b.querySelector(".text");
        span.textContent = "";
        if (ev.interrupted) {
          const heard = ev.heard || "";
          const full = ev.text || "";
          span.append(heard);
          if (full.startsWith(heard) && full.length > heard.length) {
            const rest = document.createElement("span");
            rest.className = "unheard";
            rest.textContent = full.slice(heard.length);
            span.append(rest);
          }
          b.classList.add("interrupted");
          if (!b.querySelector(".tag")) {
            const tag = document.createElement("span");
            tag.className = "tag";
            tag.textContent = "interrupted";
            span.after(tag);
          }
        } else {
          span.textContent = ev.text || "";
        }
        renderMetrics(turn);
        break;
      }
      case "tool_call": {
        // What the reply did, in its turn: the tool, its arguments, then how it went.
        const t = turnEntry(turn);
        let args = ev.arguments || "";
        try { args = Object.values(JSON.parse(args || "{}")).join(", "); } catch (e) { /* shown as the model wrote it */ }
        const div = bubble("tool", `${ev.name}(${args})`);
        div.dataset.turn = String(turn);
        (t.tools = t.tools || []).push(div);
        break;
      }
      case "tool_result": {
        const t = turnEntry(turn);
        const div = (t.tools || []).find((d) => !d.dataset.done && d.querySelector(".text").textContent.startsWith(ev.name + "("));
        if (div) {
          div.dataset.done = "1";
          div.classList.add(ev.ok ? "ok" : "failed");
          const meta = document.createElement("span");
          meta.className = "meta";
          meta.textContent = (ev.ok ? "done" : "failed") + " · " + ms(ev.ms);
          div.append(meta);
        }
        break;
      }
      case "timer":
        showTimer(ev);
        break;
      case "metrics":
        turnEntry(turn).metrics = ev;
        renderMetrics(turn);
        break;
      case "error":
        systemNote(`${ev.stage ? ev.stage + " error" : "error"}: ${ev.message || "unknown"}`, true);
        break;
      case "goodbye": {
        const reason = ev.reason || "session ended";
        teardown();
        setStatus("idle");
        setButton(false);
        systemNote("Session ended by the server: " + reason);
        showMessage("Session ended by the server: " + reason, "info");
        break;
      }
      default:
        break;
    }
  }

  // ---------- audio meters ----------

  function rmsOf(analyser, buf) {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    return Math.sqrt(sum / buf.length);
  }

  function remoteLevel() {
    if (!remoteAnalyser) return 0;
    return rmsOf(remoteAnalyser, new Float32Array(remoteAnalyser.fftSize));
  }

  // The level strip: the last seconds of the mic (above the line) and the reply (below), in dB.
  const LEVEL_FLOOR_DB = -60;
  const levelHistory = { mic: [], reply: [] };
  // Moments marked on the strip as they happen: the user starting to speak, a reply interrupted.
  const levelMarks = [];  // {at: sample number, color}
  let levelSamples = 0;
  const MARK_COLORS = { speech: "#16a34a", interrupted: "#dc2626" };
  function markLevels(kind) {
    if (micAnalyser) levelMarks.push({ at: levelSamples, color: MARK_COLORS[kind], kind });
  }
  function levelShare(rms) {
    const db = 20 * Math.log10(Math.max(rms, 1e-6));
    return Math.max(0, Math.min(1, (db - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB));
  }

  function drawLevels() {
    const c = ui.levels;
    const w = c.clientWidth | 0, h = c.clientHeight | 0;
    if (!w || !h) return;
    if (c.width !== w) c.width = w;
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const mid = h / 2;
    for (const [side, color, dir] of [["mic", "#16a34a", -1], ["reply", "#2563eb", 1]]) {
      const hist = levelHistory[side];
      while (hist.length > w) hist.shift();
      g.fillStyle = color;
      for (let i = 0; i < hist.length; i++) {
        const v = hist[i] * (mid - 1);
        g.fillRect(w - hist.length + i, dir < 0 ? mid - v : mid, 1, v);
      }
    }
    g.fillStyle = "rgba(128,128,128,.5)";
    g.fillRect(0, mid, w, 1);
    while (levelMarks.length && levelSamples - levelMarks[0].at > w) levelMarks.shift();
    for (const mark of levelMarks) {
      g.fillStyle = mark.color;
      g.fillRect(w - (levelSamples - mark.at), 0, 2, h);
    }
  }

  function startMeter(stream) {
    try {
      audioCtx = new (window.AudioContext || window.webkitAudioContext)();
      audioCtx.resume().catch(() => {});
      micAnalyser = audioCtx.createAnalyser();
      micAnalyser.fftSize = 1024;
      micSource = audioCtx.createMediaStreamSource(stream);
      micSource.connect(micAnalyser);
    } catch (e) {
      console.warn("mic meter unavailable", e);
      return;
    }
    const buf = new Float32Array(micAnalyser.fftSize);
    const tick = () => {
      if (!micAnalyser) return;
      const level = rmsOf(micAnalyser, buf);
      voice.micLevel = level;
      levelHistory.mic.push(levelShare(level));
      levelHistory.reply.push(levelShare(remoteAnalyser ? rmsOf(remoteAnalyser, buf) : 0));
      levelSamples++;
      drawLevels();
      meterRaf = requestAnimationFrame(tick);
    };
    meterRaf = requestAnimationFrame(tick);
    if (ui.record.checked) startRecording();
  }

  function attachRemoteAnalyser(stream) {
    if (!audioCtx) return;
    try {
      remoteAnalyser = audioCtx.createAnalyser();
      remoteAnalyser.fftSize = 1024;
      remoteSource = audioCtx.createMediaStreamSource(stream);
      remoteSource.connect(remoteAnalyser);
      if (merger) remoteSource.connect(merger, 0, 1);
    } catch (e) {
      console.warn("remote analyser unavailable", e);
    }
  }

  // ---------- recording (opt-in, this session, in this browser only) ----------
  // Both sides, aligned in one audio graph: the mic as sent (left) and the reply as played
  // (right), kept as 16 kHz 16-bit stereo, only the last `keepS` seconds: bounded memory.
  const RECORD_RATE = 16000, RECORD_KEEP_S = 600;

  function makeRecorder(keepS = RECORD_KEEP_S) {
    const maxFrames = Math.round(keepS * RECORD_RATE);
    const chunks = [];  // Int16Array, interleaved left/right
    let frames = 0, dropped = 0, phase = 0;
    const pcm16 = (v) => Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
    return {
      keepS,
      get frames() { return frames; },
      get bytes() { return frames * 4; },
      get droppedSeconds() { return dropped / RECORD_RATE; },
      get seconds() { return frames / RECORD_RATE; },
      push(left, right, rate) {
        // Nearest-sample decimation: a review copy of speech, not a master.
        const step = rate / RECORD_RATE;
        const out = new Int16Array(2 * Math.ceil((left.length - phase) / step));
        let k = 0, t = phase;
        for (; t < left.length; t += step) {
          const i = t | 0;
          out[k++] = pcm16(left[i]);
          out[k++] = pcm16(right[i]);
        }
        phase = t - left.length;
        chunks.push(k === out.length ? out : out.subarray(0, k));
        frames += k / 2;
        while (frames > maxFrames) {
          const over = frames - maxFrames, first = chunks[0], n = first.length / 2;
          if (n <= over) { chunks.shift(); frames -= n; dropped += n; }
          else { chunks[0] = first.subarray(over * 2); frames -= over; dropped += over; }
        }
      },
      wav() {
        const head = new DataView(new ArrayBuffer(44));
        const text = (at, str) => { for (let i = 0; i < str.length; i++) head.setUint8(at + i, str.charCodeAt(i)); };
        text(0, "RIFF"); head.setUint32(4, 36 + frames * 4, true); text(8, "WAVE");
        text(12, "fmt "); head.setUint32(16, 16, true); head.setUint16(20, 1, true); head.setUint16(22, 2, true);
        head.setUint32(24, RECORD_RATE, true); head.setUint32(28, RECORD_RATE * 4, true); head.setUint16(32, 4, true); head.setUint16(34, 16, true);
        text(36, "data"); head.setUint32(40, frames * 4, true);
        return new Blob([head, ...chunks], { type: "audio/wav" });
      },
    };
  }

  async function startRecording() {
    if (!audioCtx || !micSource || recorderNode) return;
    const ctx = audioCtx;
    try {
      await ctx.audioWorklet.addModule("/recorder.js");
    } catch (e) {
      showMessage("Recording is not available in this browser: " + (e.message || e), "info");
      ui.record.checked = false;
      return;
    }
    if (ctx !== audioCtx || !ui.record.checked || recorderNode) return;
    voice.recorder = voice.recorder || makeRecorder();
    const rec = voice.recorder;
    merger = ctx.createChannelMerger(2);
    recorderNode = new AudioWorkletNode(ctx, "two-sides", { numberOfInputs: 1, numberOfOutputs: 0, channelCount: 2, channelCountMode: "explicit", channelInterpretation: "discrete" });
    recorderNode.port.onmessage = (e) => { rec.push(e.data.left, e.data.right, e.data.rate); ui.exportAudio.hidden = false; };
    micSource.connect(merger, 0, 0);
    if (remoteSource) remoteSource.connect(merger, 0, 1);
    merger.connect(recorderNode);
  }

  function stopRecording() {
    if (recorderNode) { recorderNode.port.onmessage = null; try { recorderNode.disconnect(); } catch (_) { /* gone */ } }
    if (merger) { try { merger.disconnect(); } catch (_) { /* gone */ } }
    for (const src of [micSource, remoteSource]) if (src && merger) { try { src.disconnect(merger); } catch (_) { /* not connected */ } }
    recorderNode = null;
    merger = null;
  }

  // ---------- taking the conversation away ----------

  function exportSession() {
    const events = sessionLog;
    const byTurn = new Map();
    const entry = (n) => {
      if (!byTurn.has(n)) byTurn.set(n, { turn: n, source: null, language: null, transcript: null, reply: null, heard: null, interrupted: false, tools: [], metrics: null, errors: [] });
      return byTurn.get(n);
    };
    const timers = [], errors = [];
    for (const ev of events) {
      const n = ev.turn;
      switch (ev.type) {
        case "transcript": Object.assign(entry(n), { transcript: ev.text, source: ev.source || "voice", language: ev.language || null }); break;
        case "reply": Object.assign(entry(n), { reply: ev.text, heard: ev.heard, interrupted: !!ev.interrupted }); break;
        case "tool_call": entry(n).tools.push({ name: ev.name, arguments: ev.arguments, ok: null, ms: null }); break;
        case "tool_result": {
          const call = entry(n).tools.find((c) => c.name === ev.name && c.ok === null);
          if (call) Object.assign(call, { ok: ev.ok, ms: ev.ms });
          break;
        }
        case "metrics": {
          const { type, turn, ...timings } = ev;
          entry(n).metrics = timings;
          break;
        }
        case "error": (typeof n === "number" ? entry(n).errors : errors).push({ stage: ev.stage, message: ev.message }); break;
        case "timer": timers.push({ id: ev.id, status: ev.status, seconds: ev.seconds, label: ev.label }); break;
        default: break;
      }
    }
    return {
      format: "voice-session/1",
      session: voice.session,
      started_at: sessionStarted,
      exported_at: new Date().toISOString(),
      recording: voice.recorder ? { seconds: voice.recorder.seconds, dropped_seconds: voice.recorder.droppedSeconds, rate: RECORD_RATE, channels: ["user", "assistant"] } : null,
      turns: [...byTurn.values()].filter((t) => typeof t.turn === "number").sort((a, b) => a.turn - b.turn),
      timers,
      errors,
    };
  }

  function download(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  const fileStem = () => "voice-" + (voice.session || "session") + "-" + (sessionStarted || new Date().toISOString()).slice(0, 19).replace(/[:T]/g, "-");

  // ---------- connection ----------

  function micErrorText(e) {
    const name = (e && e.name) || "";
    if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError")
      return "Microphone access was denied. Allow the microphone for this page (site settings) and press Start again.";
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError")
      return "No microphone was found. Connect a microphone and press Start again.";
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError")
      return "The microphone could not be opened (is another application using it?).";
    return "Could not access the microphone: " + ((e && e.message) || name || String(e));
  }

  function waitIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", onCand);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const onCand = (e) => { if (!e.candidate) done(); };
      const timer = setTimeout(done, timeoutMs); // send what we have
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", onCand);
    });
  }

  async function readError(resp) {
    let text = "";
    try { text = await resp.text(); } catch (_) { /* ignore */ }
    try {
      const j = JSON.parse(text);
      if (j && j.error) return String(j.error);
    } catch (_) { /* not JSON */ }
    return text.trim() || `${resp.status} ${resp.statusText}`;
  }

  function askToken(why) {
    ui.tokenForm.hidden = false;
    ui.tokenInput.value = "";
    ui.tokenInput.focus();
    showMessage(why, "info");
  }

  async function start() {
    if (running) return;
    running = true;
    const my = ++gen;
    const stale = () => my !== gen;
    setButton(true);
    showMessage("");
    setStatus("connecting");
    voice.session = null;
    ui.session.textContent = "";
    sessionLog = [];
    sessionStarted = new Date().toISOString();
    voice.recorder = null;  // a recording belongs to one session
    ui.exportAudio.hidden = true;
    ui.exportButton.disabled = false;

    // 1. config (with the stored token, if any: the server gives TURN credentials only to a caller that has it)
    let config;
    try {
      const stored = sessionStorage.getItem(TOKEN_KEY);
      const r = await fetch("/config", { cache: "no-store", headers: stored ? { Authorization: "Bearer " + stored } : {} });
      if (!r.ok) throw new Error(await readError(r));
      config = await r.json();
    } catch (e) {
      if (!stale()) fail("Could not reach the server (GET /config): " + (e.message || e));
      return;
    }
    if (stale()) return;
    voice.config = config;
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (config.token_required && !token) {
      teardown();
      setStatus("idle");
      setButton(false);
      askToken("This server needs an access token. Enter it and press Save & start.");
      return;
    }
    ui.tokenForm.hidden = true;

    // 2. microphone
    let stream;
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        const e = new Error("This page needs a secure context (https or localhost) to use the microphone.");
        e.name = "InsecureContext";
        throw e;
      }
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      if (!stale()) fail(e && e.name === "InsecureContext" ? e.message : micErrorText(e));
      return;
    }
    if (stale()) { stream.getTracks().forEach((t) => t.stop()); return; }
    voice.micStream = stream;
    startMeter(stream);

    // 3. peer connection
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: config.ice_servers || [] });
    } catch (e) {
      fail("Could not create the WebRTC connection: " + (e.message || e));
      return;
    }
    voice.pc = pc;
    const dc = pc.createDataChannel("events");
    voice.dc = dc;
    dc.onopen = () => {
      if (stale()) return;
      setTextEnabled(true);
      const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;  // for the clock tool
      if (timezone) dc.send(JSON.stringify({ type: "timezone", timezone }));
      systemNote("Connected. Speak, or type a message.");
    };
    dc.onclose = () => {
      setTextEnabled(false);
      if (!stale() && running) {
        logLine("events channel closed");
        systemNote("Disconnected.");
        teardown();
        setStatus("disconnected");
        showMessage("Disconnected from the server.", "info");
        setButton(false);
      }
    };
    dc.onmessage = (m) => {
      if (stale()) return;
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { logLine("unparsable: " + m.data, true); return; }
      handleEvent(ev);
    };
    for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
    pc.ontrack = (e) => {
      const rs = (e.streams && e.streams[0]) || new MediaStream([e.track]);
      voice.remoteStream = rs;
      ui.audio.srcObject = rs;
      ui.audio.play().catch(() => {});
      attachRemoteAnalyser(rs);
    };
    pc.onconnectionstatechange = () => {
      if (stale()) return;
      const s = pc.connectionState;
      logLine("connection: " + s);
      if (s === "failed") {
        fail("The connection failed (ICE could not connect). Check that the server is reachable and that --ice-hosts / ICE servers are set for this network.");
      } else if (s === "disconnected") {
        setStatus("disconnected");
      } else if (s === "connected" && voice.status === "disconnected") {
        setStatus("listening");
      }
    };

    // 4. offer / answer
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await waitIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
      if (stale()) return;
      const headers = { "Content-Type": "application/json" };
      if (config.token_required) headers.Authorization = "Bearer " + sessionStorage.getItem(TOKEN_KEY);
      const body = JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type });
      // A full worker answers 503 and closes the connection, so a retry may reach another one.
      let r = null;
      for (let attempt = 0; attempt < OFFER_ATTEMPTS; attempt++) {
        if (attempt) await new Promise((done) => setTimeout(done, 150 * attempt));
        if (stale()) return;
        r = await fetch("/offer", { method: "POST", headers, body });
        if (r.status !== 503) break;
      }
      if (stale()) return;
      if (r.status === 401) {
        const err = await readError(r);
        sessionStorage.removeItem(TOKEN_KEY);
        teardown();
        setStatus("idle");
        setButton(false);
        askToken(`The access token was rejected (${err}). Enter it again.`);
        return;
      }
      if (!r.ok) {
        const err = await readError(r);
        if (!stale()) fail(`The server refused the connection (${r.status}): ${err}`);
        return;
      }
      const answer = await r.json();
      if (stale()) return;
      voice.session = answer.session || null;
      ui.session.textContent = voice.session ? "session " + voice.session : "";
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    } catch (e) {
      if (!stale()) fail("Could not connect: " + (e.message || e));
      return;
    }
  }

  function teardown() {
    gen++;
    running = false;
    setTextEnabled(false);
    cancelAnimationFrame(meterRaf);
    stopRecording();
    ui.record.checked = false;  // switched on again for each session that should be recorded
    micAnalyser = null;
    remoteAnalyser = null;
    levelMarks.length = 0;
    micSource = null;
    remoteSource = null;
    for (const id of [...timers.keys()]) showTimer({ id, status: "cancelled" });  // they end with the session
    voice.micLevel = 0;
    if (voice.dc) { try { voice.dc.close(); } catch (_) { /* ignore */ } }
    if (voice.pc) {
      try { voice.pc.getSenders().forEach((s) => s.track && s.track.stop()); } catch (_) { /* ignore */ }
      try { voice.pc.close(); } catch (_) { /* ignore */ }
    }
    if (voice.micStream) voice.micStream.getTracks().forEach((t) => t.stop());
    if (audioCtx) { audioCtx.close().catch(() => {}); audioCtx = null; }
    ui.audio.srcObject = null;
    voice.dc = null;
    voice.pc = null;
    voice.micStream = null;
    voice.remoteStream = null;
    // finish any half-streamed bubbles
    for (const t of turns.values()) if (t.assistant) t.assistant.classList.remove("streaming");
  }

  function stop() {
    if (running) systemNote("Stopped.");
    teardown();
    setStatus("idle");
    setButton(false);
  }

  function sendText(text) {
    text = (text || "").trim();
    if (!text || !voice.dc || voice.dc.readyState !== "open") return false;
    voice.dc.send(JSON.stringify({ type: "text", text }));
    const div = bubble("user", text);
    div.classList.add("typed");
    pendingTyped.push({ text, div });
    if (pendingTyped.length > 20) pendingTyped.shift();
    return true;
  }

  // ---------- wiring ----------

  ui.start.addEventListener("click", () => (running ? stop() : start()));
  ui.record.addEventListener("change", () => (ui.record.checked ? startRecording() : stopRecording()));
  ui.exportButton.addEventListener("click", () => {
    download(new Blob([JSON.stringify(exportSession(), null, 1)], { type: "application/json" }), fileStem() + ".json");
  });
  ui.exportAudio.addEventListener("click", () => { if (voice.recorder) download(voice.recorder.wav(), fileStem() + ".wav"); });
  ui.textForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (sendText(ui.textInput.value)) ui.textInput.value = "";
  });
  ui.tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = ui.tokenInput.value.trim();
    if (!v) return;
    sessionStorage.setItem(TOKEN_KEY, v);
    ui.tokenForm.hidden = true;
    showMessage("");
    start();
  });
  window.addEventListener("pagehide", () => teardown());
  setStatus("idle");
})();
