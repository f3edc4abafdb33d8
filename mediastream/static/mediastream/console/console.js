/*
 * The live call console (mediastream.console), plain JavaScript without a build step.
 *
 * Opens the call's console socket, rebuilds its view from the snapshot every
 * connection starts with (so a reconnect catches up from the event log), then
 * applies each live event. The controls send requests on the same socket and
 * show each reply when it comes. Untrusted text is only ever set as textContent.
 */
(function () {
  "use strict";

  var root = document.getElementById("call-console");
  if (!root) return;

  var RECONNECT_DELAYS = [500, 1000, 2000, 5000];
  var MAX_LOG = 200;
  var OUTCOMES = {
    played: "Played",
    interrupted: "Interrupted",
    failed: "Failed",
    unconfirmed: "Sent (playback not confirmed)",
    rejected: "Rejected: the call's queue is full",
    no_stream: "Not said: the call has no live stream"
  };

  function part(role) { return root.querySelector('[data-role="' + role + '"]'); }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clockTime(ms) {
    if (!ms) return "";
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function mmss(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    return pad(Math.floor(seconds / 60)) + ":" + pad(seconds % 60);
  }
  function ms(value) { return value === null || value === undefined ? "—" : Math.round(value) + " ms"; }

  // --- the view's state, rebuilt from each snapshot ---------------------------------

  var state;
  function resetState() {
    state = {
      call: null,
      clockOffset: 0,
      transcript: new Map(),   // key -> {speaker, text, kind, at, note}
      playing: new Map(),      // item_id -> text
      queued: new Map(),       // item_id -> text
      finishedItems: new Set(),
      dtmf: [],
      turns: new Map(),        // stream_sid:turn_id -> turn
      health: null,            // the latest stream.health data
      log: []
    };
  }
  resetState();

  function transcriptKey(event) {
    var data = event.data || {};
    if (event.event === "transcript.partial") return "partial:" + event.stream_sid;
    if (data.item_id) return "item:" + data.item_id;
    return "row:" + (event.id !== null && event.id !== undefined ? event.id : event.at + ":" + (data.text || ""));
  }

  function turn(event) {
    var data = event.data || {};
    var key = event.stream_sid + ":" + data.turn_id;
    if (!state.turns.has(key)) {
      state.turns.set(key, {id: data.turn_id, text: "", firstToken: null, firstAudio: null, done: null, tools: [], outcome: "…"});
    }
    return state.turns.get(key);
  }

  function apply(event) {
    var data = event.data || {};
    var text = data.text || "";
    switch (event.event) {
      case "transcript.partial":
        if (text) state.transcript.set(transcriptKey(event), {speaker: "Caller", text: text, kind: "partial", at: event.at});
        else state.transcript.delete(transcriptKey(event));
        break;
      case "transcript.final":
        state.transcript.delete("partial:" + event.stream_sid);
        state.transcript.set(transcriptKey(event), {speaker: "Caller", text: text, kind: "final", at: event.at});
        break;
      case "playback.queued":
        if (!state.finishedItems.has(data.item_id) && !state.playing.has(data.item_id)) {
          state.queued.set(data.item_id, text || "(audio)");
        }
        break;
      case "playback.started":
        state.queued.delete(data.item_id);
        if (!state.finishedItems.has(data.item_id)) {
          state.playing.set(data.item_id, text || "(audio)");
          if (text) state.transcript.set(transcriptKey(event), {speaker: "Agent", text: text, kind: "speaking", at: event.at});
        }
        break;
      case "playback.finished":
        state.queued.delete(data.item_id);
        state.playing.delete(data.item_id);
        state.finishedItems.add(data.item_id);
        finishTranscript(event);
        break;
      case "dtmf":
        state.dtmf.push({digit: data.digit, at: event.at});
        break;
      case "agent.turn.started":
        var started = turn(event);
        started.text = text || (data.dtmf ? "key " + data.dtmf : data.resume ? "(resumed)" : "");
        break;
      case "agent.first_token": turn(event).firstToken = data.ms; break;
      case "agent.first_audio": turn(event).firstAudio = data.ms; break;
      case "agent.tool.called": turn(event).tools.push(data.name || "?"); break;
      case "agent.tool.result":
        var withTool = turn(event);
        if (data.ok === false) withTool.tools.push((data.name || "?") + " failed");
        break;
      case "agent.reply.finished":
        var finished = turn(event);
        finished.done = data.ms;
        finished.outcome = data.interrupted ? "interrupted" : "finished";
        break;
      case "agent.reply.cancelled":
        var cancelled = turn(event);
        cancelled.done = data.ms;
        cancelled.outcome = "cancelled: " + (data.reason || "");
        break;
      case "stream.health":
        state.health = data;
        break;
      case "stream.stopped":
        state.playing.clear();
        state.queued.clear();
        break;
    }
    state.log.push(event);
    if (state.log.length > MAX_LOG) state.log.shift();
  }

  function finishTranscript(event) {
    var data = event.data || {};
    var key = transcriptKey(event);
    var entry = state.transcript.get(key);
    var outcome = data.outcome;
    if (!data.text && !entry) return;
    if (!entry) {
      entry = {speaker: "Agent", text: data.text, kind: "final", at: event.at};
      state.transcript.set(key, entry);
    }
    if (outcome === "interrupted") {
      entry.kind = "interrupted";
      entry.note = data.heard_text ? "interrupted; heard: " + data.heard_text : "interrupted";
    } else if (outcome === "played" || outcome === "unconfirmed") {
      entry.kind = "final";
      entry.note = outcome === "unconfirmed" ? "not confirmed" : "";
    } else {
      entry.kind = "interrupted";
      entry.note = (OUTCOMES[outcome] || outcome) + (data.error ? ": " + data.error : "");
    }
  }

  // --- rendering ------------------------------------------------------------------------

  function renderTranscript() {
    var list = part("transcript");
    var nearBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    var existing = new Map();
    Array.prototype.forEach.call(list.children, function (item) { existing.set(item.dataset.key, item); });
    var previous = null;
    state.transcript.forEach(function (entry, key) {
      var item = existing.get(key);
      existing.delete(key);
      if (!item) {
        item = el("li");
        item.dataset.key = key;
        item.appendChild(el("span", "time"));
        item.appendChild(el("span", "speaker"));
        item.appendChild(el("span", "text"));
        item.appendChild(el("span", "note"));
      }
      item.dataset.kind = entry.kind;
      item.dataset.speaker = entry.speaker.toLowerCase();
      item.children[0].textContent = clockTime(entry.at);
      item.children[1].textContent = entry.speaker + (entry.kind === "partial" ? " (partial):" : ":");
      item.children[2].textContent = entry.text;
      item.children[3].textContent = entry.kind === "speaking" ? "(speaking)" : entry.note ? "(" + entry.note + ")" : "";
      var wanted = previous ? previous.nextSibling : list.firstChild;
      if (wanted !== item) list.insertBefore(item, wanted);
      previous = item;
    });
    existing.forEach(function (item) { item.remove(); });
    if (nearBottom) list.scrollTop = list.scrollHeight;
  }

  function renderPlayback() {
    var playing = Array.from(state.playing.values());
    part("playing").textContent = playing.length ? playing.join(" / ") : "nothing";
    var queued = part("queued");
    queued.replaceChildren();
    state.queued.forEach(function (text) { queued.appendChild(el("li", "", text)); });
    part("dtmf").textContent = state.dtmf.length
      ? state.dtmf.map(function (press) { return press.digit + " (" + clockTime(press.at) + ")"; }).join(", ")
      : "—";
  }

  function renderTurns() {
    var body = part("turns");
    body.replaceChildren();
    state.turns.forEach(function (t) {
      var row = el("tr");
      [t.id, t.text, ms(t.firstToken), ms(t.firstAudio), ms(t.done), t.tools.join(", ") || "—", t.outcome].forEach(
        function (value) { row.appendChild(el("td", "", value)); }
      );
      body.appendChild(row);
    });
  }

  function renderHealth() {
    var health = state.health;
    if (state.call) {
      // Once the stream has ended, its row holds the final counters (health ticks stop before it).
      var streams = state.call.streams || [];
      var last = streams[streams.length - 1];
      if (last && !last.live && last.stats) health = Object.assign({}, health || {}, last.stats);
    }
    health = health || {};
    part("frames-in").textContent = health.media_frames === undefined || health.media_frames === null ? "—" : health.media_frames;
    part("sequence-gaps").textContent = health.sequence_gaps === undefined || health.sequence_gaps === null ? "—" : health.sequence_gaps;
    part("mark-rtt").textContent = health.mark_rtt_ms === undefined || health.mark_rtt_ms === null ? "—" : ms(health.mark_rtt_ms);
  }

  function renderCall() {
    var call = state.call;
    if (!call) return;
    var live = (call.streams || []).filter(function (s) { return s.live; });
    part("status").textContent = call.status + (live.length ? " (stream live)" : "");
    part("stream").textContent = live.length ? live[0].stream_sid : (call.streams || []).length ? "ended" : "none";
    root.dataset.terminal = call.terminal ? "true" : "false";
    root.querySelectorAll("[data-action]").forEach(function (button) { button.disabled = !!call.terminal; });
    renderDuration();
  }

  function renderDuration() {
    var call = state.call;
    if (!call) return;
    var streams = call.streams || [];
    var from = call.answered_at || (streams.length ? streams[0].started_at : null);
    var text = "—";
    if (call.duration !== null && call.duration !== undefined) text = mmss(call.duration);
    else if (from && call.ended_at) text = mmss((call.ended_at - from) / 1000);
    else if (from && !call.terminal) text = mmss((Date.now() + state.clockOffset - from) / 1000) + " (live)";
    part("duration").textContent = text;
  }

  function renderLog() {
    var list = part("log");
    list.replaceChildren();
    for (var i = state.log.length - 1; i >= 0; i--) {
      var event = state.log[i];
      list.appendChild(el("li", "", clockTime(event.at) + " " + event.event + " " + JSON.stringify(event.data || {})));
    }
  }

  function renderAll() {
    renderCall();
    renderTranscript();
    renderPlayback();
    renderTurns();
    renderHealth();
    renderLog();
  }

  // --- the socket -------------------------------------------------------------------------

  var socket = null;
  var attempts = 0;
  var nextId = 1;
  var pending = new Map();   // request id -> function(reply)

  function setConnection(text, stateName) {
    var node = part("connection");
    node.textContent = text;
    node.dataset.state = stateName;
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + root.dataset.socketPath);
    socket.onopen = function () { setConnection("Connected: following the call live.", "open"); };
    socket.onmessage = function (message) { receive(JSON.parse(message.data)); };
    socket.onclose = function (close) {
      failPending("The connection was lost before the answer came.");
      if (close.code === 4404) {
        setConnection("There is no such call.", "closed");
        return;
      }
      var delay = RECONNECT_DELAYS[Math.min(attempts, RECONNECT_DELAYS.length - 1)];
      attempts += 1;
      setConnection("Disconnected; reconnecting in " + (delay / 1000) + " s…", "closed");
      window.setTimeout(connect, delay);
    };
  }

  function receive(message) {
    if (message.type === "snapshot") {
      attempts = 0;
      resetState();
      state.call = message.call;
      state.clockOffset = message.server_time - Date.now();
      message.events.forEach(apply);
      renderAll();
    } else if (message.type === "event") {
      apply(message.event);
      renderAll();
    } else if (message.type === "call") {
      state.call = message.call;
      renderCall();
      renderHealth();
    } else if (message.type === "reply") {
      var handler = pending.get(message.id);
      pending.delete(message.id);
      if (handler) handler(message);
      else if (!message.ok) show(part("action-result"), message.error, false);
    } else if (message.type === "error") {
      setConnection(message.error, "closed");
    }
  }

  function failPending(error) {
    pending.forEach(function (handler) { handler({ok: false, error: error}); });
    pending.clear();
  }

  function request(body, handler) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      handler({ok: false, error: "Not connected to the call; try again in a moment."});
      return;
    }
    var id = nextId++;
    body.id = id;
    pending.set(id, handler);
    socket.send(JSON.stringify(body));
  }

  function show(output, text, ok) {
    if (!output) return;
    output.textContent = text;
    output.dataset.ok = ok ? "true" : "false";
  }

  // --- the controls ---------------------------------------------------------------------

  function say() {
    var input = part("say-text");
    var output = part("say-result");
    var text = input.value.trim();
    if (!text) { show(output, "Type what to say first.", false); return; }
    show(output, "Saying…", true);
    output.dataset.outcome = "pending";
    request({action: "say", text: text}, function (reply) {
      if (!reply.ok) { output.dataset.outcome = "error"; show(output, reply.error, false); return; }
      var result = reply.result;
      output.dataset.outcome = result.outcome;
      var line = OUTCOMES[result.outcome] || result.outcome;
      if (result.error) line += ": " + result.error;
      show(output, line, result.outcome === "played" || result.outcome === "unconfirmed");
    });
    input.value = "";
  }

  function simple(action, pendingText, describe, body) {
    var output = part("action-result");
    show(output, pendingText, true);
    request(Object.assign({action: action}, body || {}), function (reply) {
      show(output, reply.ok ? describe(reply.result) : reply.error, reply.ok);
    });
  }

  var handlers = {
    say: say,
    interrupt: function () {
      simple("interrupt", "Interrupting…", function (result) {
        return result.live ? "Interrupted (" + result.count + " cut off)." : "Nothing to interrupt: the call has no live stream.";
      });
    },
    hang_up: function () {
      if (!window.confirm("Hang up this call?")) return;
      simple("hang_up", "Hanging up…", function (result) { return "Hung up (Twilio: " + result.status + ")."; });
    },
    transfer: function () {
      var to = part("transfer-to").value.trim();
      if (!to) { show(part("action-result"), "Enter where to transfer the call.", false); return; }
      if (!window.confirm("Transfer this call to " + to + "?")) return;
      simple("transfer", "Transferring…", function (result) {
        return "Transferring to " + result.to + " (Twilio: " + result.status + ").";
      }, {to: to});
    }
  };

  root.querySelectorAll("[data-action]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      event.preventDefault();
      handlers[button.dataset.action]();
    });
  });
  // Enter in a console field acts on it instead of submitting the admin's change form.
  [["say-text", "say"], ["transfer-to", "transfer"]].forEach(function (pair) {
    var input = part(pair[0]);
    if (!input) return;
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        handlers[pair[1]]();
      }
    });
  });

  window.setInterval(renderDuration, 1000);
  connect();
})();
