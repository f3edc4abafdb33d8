// The talk page: the microphone to the relay, the agent's voice to the speakers, the transcript on screen.
// Protocol: mediastream/talk/protocol.py. window.talkStats counts what arrived (the browser test reads it);
// window.talkClientTools maps a client tool's name to an async function (args) -> result.
(() => {
  "use strict";
  const RATE = 24000;
  const LEAD_SECONDS = 0.05; // first piece after a pause starts this far ahead of now
  const root = document.getElementById("talk");
  const $ = (id) => document.getElementById(id);
  const stats = (window.talkStats = {
    audioEvents: 0, audioSamples: 0, peak: 0, sumSquares: 0, clears: 0, framesSent: 0,
    scheduledSeconds: 0, finals: [], events: [], errors: [], closed: null,
  });
  window.talkClientTools = window.talkClientTools || {};

  let ws = null;
  let sessionId = null;
  let nextId = 1;
  const pending = new Map();
  let ctx = null;
  let mic = null;
  let nodes = [];
  let playhead = 0;
  const sources = new Set();
  const openLines = { user: null, assistant: null };

  function status(text) { $("talk-status").textContent = text; }

  function log(text) {
    const item = document.createElement("li");
    item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    const list = $("talk-log");
    list.prepend(item);
    while (list.children.length > 200) list.lastChild.remove();
  }

  function controls(talking) {
    $("talk-start").disabled = talking;
    $("talk-interrupt").disabled = !talking;
    $("talk-stop").disabled = !talking;
  }

  // --- the relay ---------------------------------------------------------------------------------

  function send(method, params) {
    return new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  }

  function openSocket() {
    return new Promise((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(scheme + location.host + root.dataset.relayPath);
      socket.onopen = () => resolve(socket);
      socket.onerror = () => reject(new Error("the relay refused the connection (are you signed in as staff?)"));
      socket.onmessage = (message) => receive(JSON.parse(message.data));
      socket.onclose = () => { if (sessionId) finish("the connection to the server was lost"); };
    });
  }

  function receive(frame) {
    if (frame.event === "talk.event") return onEvent(frame.payload);
    const waiting = pending.get(frame.id);
    if (!waiting) return;
    pending.delete(frame.id);
    if (frame.error) waiting.reject(new Error(frame.error.message));
    else waiting.resolve(frame.result);
  }

  function onEvent(event) {
    if (event.relaySessionId !== sessionId) return;
    if (event.type !== "inputAudio" && event.type !== "audio") {
      stats.events.push(event.type);
      if (stats.events.length > 500) stats.events.shift();
    }
    switch (event.type) {
      case "ready": status("Listening: speak now."); log("ready"); break;
      case "audio": play(event.audioBase64); break;
      case "clear": stats.clears++; stopPlayback(); log("clear"); break;
      case "mark": log(`mark ${event.markName}`); break;
      case "transcript": showTranscript(event.role, event.text, event.final); break;
      case "toolCall": runClientTool(event); break;
      case "toolResult": log(`tool result sent for ${event.callId}`); break;
      case "error": stats.errors.push(event.message); log(`error: ${event.message}`); break;
      case "close": log(`closed (${event.reason})`); finish(event.reason === "error" ? "The session ended with an error." : "The session ended."); break;
      default: break;
    }
  }

  async function runClientTool(event) {
    log(`tool call ${event.name}`);
    const tool = window.talkClientTools[event.name];
    let result;
    try {
      result = tool ? await tool(event.args) : { error: `this page has no client tool called ${event.name}` };
    } catch (error) {
      result = { error: String(error && error.message || error) };
    }
    if (sessionId === event.relaySessionId) {
      send("toolResult", { relaySessionId: sessionId, callId: event.callId, result }).catch((e) => log(`toolResult refused: ${e.message}`));
    }
  }

  // --- the transcript ------------------------------------------------------------------------------

  function showTranscript(role, text, final) {
    let line = openLines[role];
    if (!line) {
      line = document.createElement("li");
      line.className = `talk-line talk-${role}`;
      const who = document.createElement("strong");
      who.textContent = role === "user" ? "You: " : "Agent: ";
      line.append(who, document.createElement("span"));
      $("talk-transcript").append(line);
      openLines[role] = line;
    }
    line.lastChild.textContent = text;
    line.classList.toggle("talk-partial", !final);
    if (final) {
      openLines[role] = null;
      if (!text) line.remove(); // a reply cut off before any of it was heard
      else stats.finals.push({ role, text });
    }
  }

  // --- the agent's voice: each piece scheduled right after the previous one -----------------------

  function play(audioBase64) {
    const bytes = atob(audioBase64);
    const count = bytes.length >> 1;
    if (!count || !ctx) return;
    const buffer = ctx.createBuffer(1, count, RATE);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) {
      let value = bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8);
      if (value >= 32768) value -= 65536;
      const sample = value / 32768;
      samples[i] = sample;
      stats.sumSquares += sample * sample;
      stats.peak = Math.max(stats.peak, Math.abs(sample));
    }
    stats.audioEvents++;
    stats.audioSamples += count;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    playhead = Math.max(playhead, ctx.currentTime + LEAD_SECONDS);
    source.start(playhead);
    playhead += buffer.duration;
    stats.scheduledSeconds += buffer.duration;
    sources.add(source);
    source.onended = () => sources.delete(source);
  }

  function stopPlayback() {
    for (const source of sources) {
      try { source.stop(); } catch (error) { /* already ended */ }
    }
    sources.clear();
    playhead = 0;
  }

  // --- the microphone ------------------------------------------------------------------------------

  async function openMicrophone() {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const worklet = URL.createObjectURL(new Blob([$("talk-worklet").textContent], { type: "text/javascript" }));
    ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    await ctx.audioWorklet.addModule(worklet);
    let source;
    try {
      source = ctx.createMediaStreamSource(mic);
    } catch (error) {
      // This browser cannot bring the microphone to a 24 kHz context: run at its own rate, the worklet resamples.
      await ctx.close();
      ctx = new AudioContext({ latencyHint: "interactive" });
      await ctx.audioWorklet.addModule(worklet);
      source = ctx.createMediaStreamSource(mic);
    }
    await ctx.resume();
    const capture = new AudioWorkletNode(ctx, "pcm16-capture", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    const mute = ctx.createGain();
    mute.gain.value = 0; // the worklet runs only while connected to the output; it must not be heard
    source.connect(capture).connect(mute).connect(ctx.destination);
    nodes = [source, capture, mute];
    capture.port.onmessage = (message) => sendAudio(message.data);
  }

  function sendAudio(buffer) {
    if (!sessionId || !ws || ws.readyState !== WebSocket.OPEN) return;
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    stats.framesSent++;
    send("audio", { relaySessionId: sessionId, audioBase64: btoa(binary), timestamp: Math.round(ctx.currentTime * 1000) })
      .catch((error) => log(`audio refused: ${error.message}`));
  }

  // --- the controls --------------------------------------------------------------------------------

  async function start() {
    controls(true);
    status("Connecting…");
    try {
      await openMicrophone();
      ws = await openSocket();
      const created = await send("create", {});
      sessionId = created.relaySessionId;
      log(`session ${sessionId} (${created.provider}), until ${new Date(created.expiresAt).toLocaleTimeString()}`);
      status("Waiting for the agent…");
    } catch (error) {
      status(`Could not start: ${error.message}`);
      finish(null);
    }
  }

  function interrupt() {
    stopPlayback();
    if (sessionId) send("cancel", { relaySessionId: sessionId, reason: "barge-in" }).catch((e) => log(e.message));
  }

  function stop() {
    if (sessionId) send("stop", { relaySessionId: sessionId }).catch(() => finish("Stopped."));
    else finish("Stopped.");
  }

  function finish(message) {
    stats.closed = message;
    sessionId = null;
    if (message) status(message);
    for (const track of mic ? mic.getTracks() : []) track.stop();
    for (const node of nodes) node.disconnect();
    nodes = [];
    mic = null;
    const closing = ctx;
    ctx = null;
    if (closing) setTimeout(() => closing.close(), Math.max(0, (playhead - closing.currentTime) * 1000));
    if (ws) ws.close();
    ws = null;
    for (const line of Object.keys(openLines)) openLines[line] = null;
    controls(false);
  }

  $("talk-start").addEventListener("click", start);
  $("talk-interrupt").addEventListener("click", interrupt);
  $("talk-stop").addEventListener("click", stop);
})();
