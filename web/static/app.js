// icey-server web UI: Symple signalling, WebRTC viewer and publisher
// (Broadcast), paths, HUD, events, ops.
//
// Element ids that tests and tools drive (do not rename):
//   #btn-watch          Watch the selected path (a recvonly call to its server peer)
//   #btn-hangup         end a Watch call
//   #broadcast          Broadcast to the selected path (camera + microphone, sendonly call);
//                       shown only when the path's server peer has the "publish" capability
//   #broadcast-stop     stop broadcasting (hang up and stop the camera and microphone)
//   #path-picker        <select> of the server's paths (shown when there are several);
//                       choosing one switches Watch to it and the URL to /{path}/ (/ for main)
//   #video              the received picture; #local-preview the camera preview (muted) while broadcasting
//   #publish-state      on relay/record paths: "publishing" (this page), "live" (someone
//                       publishes), "waiting for a publisher", ...; data-state holds the
//                       server's raw path state (idle|starting|up|reconnecting|down|
//                       waiting-publisher|publishing) or "self" while this page publishes
//   #call-state         the call status line; #stage[data-state] idle|connecting|playing|waiting|error
//   #live, #hud, #hud-codec, #hud-res, #hud-fps, #hud-bitrate, #hud-jb, #hud-stalled  the bar under the picture
//   #rec-indicator      "REC" while the server records the selected path (/api/status paths[].recording)
//   #record-note        "recorded to the server" under Broadcast on a record-mode path
//   #recordings         the selected path's recordings (hidden when there are none and the path does
//                       not record); #recordings-list of li.recording[data-name][data-complete] with
//                       button.rec-play, a.rec-download[download], button.rec-delete (finalized files
//                       only; a file still being written reads "recording…"); #recordings-count,
//                       #recordings-refresh, #recordings-note; Play opens the file in
//                       #recording-player (a <video controls>, in #recording-viewer with
//                       #recording-title and #recording-close)
//   #banner, #banner-title, #banner-text; #conn-text; #peers (li.peer.server[data-peer="icey|…"][data-path]
//                       with button[data-action="watch"|"broadcast"]); #events (li.ev-*); #ops-*
//   #motion-overlay     over #video while a Watch call gets icey:vision from its path's server peer:
//                       div.motion-box per detection (absolutely placed inside the displayed picture,
//                       letterbox-aware; data-label, data-confidence, aria-label) and #heatmap (a canvas
//                       of grid.width×grid.height pixels, one per cell, stretched over the picture;
//                       class "off" when toggled off); the overlay fades ~1 s after the last event
//                       (class "fading"), then the boxes are removed
//   #btn-heatmap        toggles the heat map (aria-pressed; shown once vision events arrive, on by default)
//   #voice-meter        icey:speech level bar (role meter, data-level = the raw level 0..1, data-active
//                       "true"|"false"; shown once speech events arrive); #voice-level its fill
//   #intel              the detections card; #intel-events (li.ev-motion[data-score] with
//                       a.ev-link.ev-snapshot / a.ev-link.ev-clip opening in a new tab, li.ev-speech for
//                       speech start and end), #intel-count, #intel-clear
// Globals for tests: window.icey {connected, pc, server, path, servers, iceFailureText, selectPath,
// refreshRecordings() → Promise of the list, onMessage(m) (the Symple message handler), pictureRect()
// → the displayed picture {x, y, width, height} in #stage's padding box} and window.iceyState {path, paths, publishing, watching,
// call, lastState, lastDetail, publishState, error, recording (the selected path records now),
// recordings (the last list fetched for the selected path), intel {vision, speech, ignored (counts),
// boxes, heatmap, level, active, lastScore}}, updated as things happen. publishing/watching turn true when this page's call is connected.
import { SympleClient, SERVER, address, isServerPeer } from "./symple.js";

const $ = (id) => document.getElementById(id);

// The path this page shows: the first element of the URL path (/front/ →
// front), else the default path "main".
const MAIN = "main";
const PATH_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
function pathFromURL() {
  const first = location.pathname.split("/").filter(Boolean)[0] || "";
  let p = "";
  try { p = decodeURIComponent(first); } catch {}
  return p && p !== "index.html" && PATH_RE.test(p) ? p : MAIN;
}
function urlForPath(p) {
  return (p === MAIN ? "/" : `/${encodeURIComponent(p)}/`) + location.search + location.hash;
}

// --- Token: taken from ?token=, then removed from the address bar (and kept
// for this tab only, so a reload still works).
const token = (() => {
  const params = new URLSearchParams(location.search);
  let t = params.get("token");
  if (t !== null) {
    params.delete("token");
    const q = params.toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + location.hash);
    try { sessionStorage.setItem("icey.token", t); } catch {}
  } else {
    try { t = sessionStorage.getItem("icey.token"); } catch {}
  }
  return t || "";
})();
const authHeaders = token ? { "X-Icey-Token": token } : {};

// An optional per-path publish token (?publishToken=…), handled like the
// access token: taken out of the address bar and kept for this tab. It is
// sent in a Broadcast's call:offer data as "token" (without it the server
// uses the login token).
const publishToken = (() => {
  const params = new URLSearchParams(location.search);
  let t = params.get("publishToken");
  if (t !== null) {
    params.delete("publishToken");
    const q = params.toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + location.hash);
    try { sessionStorage.setItem("icey.publishToken", t); } catch {}
  } else {
    try { t = sessionStorage.getItem("icey.publishToken"); } catch {}
  }
  return t || "";
})();

const state = {
  client: null,
  path: pathFromURL(), // the selected path
  servers: new Map(), // path -> server peer presence data plus {addr, path}
  pathStates: new Map(), // path -> {state, detail, at, via: "icey"|"status"}
  get server() { return this.servers.get(this.path) || null; }, // the selected path's server peer
  connected: false,
  authFailed: false,
  retry: 0,
  retryTimer: null,
  call: null, // {kind, pc, phase, pendingRemote: [], localStream}
  lastUptime: null,
  ready: null, // the last /api/ready report
  turnRefused: [], // recent turn.refused events from /api/events: {at, reason}
  statusMode: "", // /api/status mode ("record": the default path records publishes)
  statusPaths: new Map(), // path -> its /api/status paths[] entry
  recordings: [], // the selected path's recordings, as /api/recordings returned them
  recordingsFor: null, // the path state.recordings belong to
  recordingsSeq: 0, // the latest /api/recordings request (older answers are dropped)
};

// ---------------------------------------------------------------- UI helpers

function setConn(kind, text) {
  const el = $("conn");
  el.className = `pill pill-${kind}`;
  $("conn-text").textContent = text;
}

function banner(title, text, info = false) {
  $("banner-title").textContent = title;
  $("banner-text").textContent = text;
  $("banner").classList.toggle("info", info);
  $("banner").hidden = false;
}
function clearBanner() { $("banner").hidden = true; }
$("banner-close").onclick = clearBanner;

function setCallState(text, err = false) {
  const el = $("call-state");
  el.textContent = text;
  el.classList.toggle("err", err);
}

function setStage(s, text) {
  $("stage").dataset.state = s;
  if (text) $("ph-text").textContent = text;
}

const MAX_EVENTS = 200;
function logEvent(kind, text) {
  const li = document.createElement("li");
  li.className = `ev-${kind}`;
  const t = document.createElement("time");
  t.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const k = document.createElement("span");
  k.className = "ev-kind";
  k.textContent = kind;
  const x = document.createElement("span");
  x.className = "ev-text";
  x.textContent = text;
  li.append(t, k, x);
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}
$("events-clear").onclick = () => { $("events").textContent = ""; };

// ---------------------------------------------------------------- signalling

// With a token, it rides on the upgrade too, so the server admits this
// socket as authenticated at once (outside the small pool of sockets that
// have not logged in yet).
function wsURL(token) {
  const u = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
  return token ? `${u}?token=${encodeURIComponent(token)}` : u;
}

function connect() {
  clearTimeout(state.retryTimer);
  setConn("wait", state.retry ? "Reconnecting…" : "Connecting…");
  const user = "web-" + Math.random().toString(36).slice(2, 7);
  const c = new SympleClient({ url: wsURL(token), user, name: "Browser", token, data: { peerType: "viewer", agent: "icey-web" } });
  state.client = c;

  c.addEventListener("welcome", (e) => {
    state.connected = true;
    state.retry = 0;
    clearBanner();
    setConn("ok", "Connected");
    logEvent("system", `connected as ${address(e.detail.peer)} (rooms: ${(e.detail.rooms || []).join(", ")})`);
    renderPeers();
  });
  c.addEventListener("autherror", (e) => {
    const msg = e.detail.message || "Authentication failed";
    if (msg === "Authentication failed") {
      state.authFailed = true;
      setConn("bad", "Auth failed");
      banner("Authentication failed",
        token ? "The access token in the link was not accepted. Ask the operator for a current link (…/?token=…)."
              : "This server requires an access token. Open the link with ?token=<your token> (ask the operator).");
      setStage("error", "Authentication required");
      logEvent("error", "authentication failed: the server needs a valid access token");
    } else {
      logEvent("error", `${e.detail.status}: ${msg}`);
    }
  });
  c.addEventListener("error", (e) => logEvent("error", `${e.detail.status}: ${e.detail.message}`));
  c.addEventListener("presence", (e) => onPresence(e.detail));
  c.addEventListener("message", (e) => onMessage(e.detail));
  c.addEventListener("event", (e) => {
    const m = e.detail;
    if (!fromServer(m)) {
      // Another peer's event (the server sets "from" to its real address):
      // shown for what it is, never acted on.
      logEvent("peer", `event ${short(m.name || "")} from ${m.from}`);
      return;
    }
    if (m.name === "shutdown") {
      logEvent("system", m.message || "server shutting down");
      banner("Server is restarting", "The server is shutting down; this page reconnects automatically.", true);
    } else {
      logEvent("icey", `event ${m.name || ""} ${short(m.data)}`);
    }
  });
  c.addEventListener("close", (e) => {
    const wasConnected = state.connected;
    state.connected = false;
    state.servers.clear();
    if (state.call) endCall(wasConnected ? "signalling connection lost" : "disconnected", true);
    renderPeers();
    if (state.authFailed) return; // retrying cannot help until the link changes
    const delay = Math.min(15000, 1000 * 2 ** Math.min(state.retry, 4)) * (0.8 + Math.random() * 0.4);
    state.retry++;
    const secs = Math.round(delay / 1000);
    if (wasConnected) {
      logEvent("system", `connection closed (${e.detail.code}${e.detail.reason ? ": " + e.detail.reason : ""})`);
      setConn("wait", `Reconnecting in ${secs}s…`);
    } else {
      setConn("bad", "Server unreachable");
      banner("Server unreachable",
        `Cannot reach the signalling server at ${wsURL()}. Is icey-server running and reachable from this device? Retrying in ${secs}s…`);
      setStage("error", "Server unreachable");
    }
    state.retryTimer = setTimeout(connect, delay);
  });
  c.connect();
}

function onPresence(m) {
  const d = m.data || {};
  if (isServerPeer(m)) {
    const path = serverPath(m.from, d);
    const had = state.servers.get(path);
    if (d.online === false) state.servers.delete(path);
    else state.servers.set(path, { ...(had || {}), ...d, addr: m.from, path });
    if (path === state.path && !state.call) idleStage();
    renderPaths();
  } else if (!m.probe) {
    logEvent("presence", `${d.name || d.user || m.from} ${d.online === false ? "left" : "is online"}`);
  }
  renderPeers();
}

// serverPath: the path a server peer serves: data.path, else its id
// ("server" is the default path).
function serverPath(addr, d) {
  if (d && typeof d.path === "string" && d.path) return d.path;
  const id = (d && d.id) || String(addr).split("|")[1] || "";
  return id === "server" ? MAIN : id;
}

function serverAddrs() {
  return new Set([...state.servers.values()].map((p) => p.addr));
}

// fromServer: did the server itself send this frame? The server routes
// every peer's frame with "from" rewritten to that peer's real address
// ("user|randomid"), so only the server's own frames come without "from"
// (the shutdown event) or from one of its virtual peers: "icey|server" and
// "icey|<path>", known from their presence (type "server", which the server
// never lets a peer claim). A peer that calls itself "icey" still gets a
// random id and a presence of type "Peer".
function fromServer(m) {
  return m.from === undefined || m.from === null || m.from === SERVER || serverAddrs().has(m.from);
}

function onMessage(m) {
  const sub = m.subtype || m.type || "";
  if (sub.startsWith("call:") && fromServer(m) && m.from) {
    // Only the peer this page is calling speaks for the call.
    if (!state.call || m.from === state.call.peer) return onCall(sub.slice(5), m.data || {});
    return logEvent("call", `${sub} from ${m.from} ignored (not the peer of the current call)`);
  }
  if (sub.startsWith("icey:")) {
    if (fromServer(m) && m.from) {
      if (sub === "icey:state") return onPathState(m.from, m.data || {});
      if (sub === "icey:vision" || sub === "icey:speech") return onIntel(sub, m);
      return logEvent("icey", `${sub.slice(5)} ${short(m.data)}`);
    }
    return logEvent("peer", `${short(sub)} from ${m.from || "?"} ignored (only the server sends icey: messages)`);
  }
  if (m.type === "join:ok" || m.type === "leave:ok") return logEvent("system", `${m.type} ${m.room}`);
  logEvent("system", `${sub} from ${m.from || "?"}`);
}

function short(v) {
  if (v === undefined || v === null) return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 160 ? s.slice(0, 157) + "…" : s;
}

// ---------------------------------------------------------------- peers

function caps(peer) { return (peer && peer.capabilities) || []; }

// sortedServers: the default path first, then the others by name.
function sortedServers() {
  return [...state.servers.values()].sort((a, b) => (a.path === MAIN ? -1 : b.path === MAIN ? 1 : a.path.localeCompare(b.path)));
}

function renderPeers() {
  const list = $("peers");
  list.textContent = "";
  const c = state.client;
  const peers = [];
  if (state.connected) for (const s of sortedServers()) peers.push({ ...s, _server: true });
  if (state.connected && c) {
    const servers = serverAddrs();
    for (const [addr, p] of c.roster) if (!servers.has(addr) && p.type !== "server" && p.online !== false) peers.push(p);
  }
  $("peer-count").textContent = String(peers.length);
  if (!peers.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = state.connected ? "No peers yet." : "Not connected.";
    list.append(li);
  }
  for (const p of peers) list.append(peerItem(p));
  renderControls();
}

// renderControls: Watch and Broadcast for the selected path, the path
// picker, the publish state line, and window.iceyState.
function renderControls() {
  const peer = state.server;
  const call = state.call;
  const canView = caps(peer).includes("view");
  const canPublish = caps(peer).includes("publish");
  $("btn-watch").disabled = !state.connected || !canView || !!call;
  $("btn-watch").hidden = !!call && call.kind === "view";
  $("btn-hangup").hidden = !call || call.kind !== "view";
  // Broadcast is offered where the path takes a publisher; Watch stays next
  // to it on relay paths.
  const publishing = !!call && call.kind === "publish";
  $("broadcast").hidden = publishing || !canPublish;
  $("broadcast").disabled = !state.connected || !canPublish || !!call;
  $("broadcast-stop").hidden = !publishing;
  renderRecordState();
  renderPublishState();
  syncIceyState();
}

function peerItem(p) {
  const li = document.createElement("li");
  li.className = "peer" + (p._server ? " server" : "") + (p._server && p.path === state.path ? " selected" : "");
  li.dataset.peer = p._server ? p.addr : `${p.user}|${p.id}`;
  if (p._server) li.dataset.path = p.path;
  const av = document.createElement("div");
  av.className = "avatar";
  av.textContent = (p.name || p.user || "?").slice(0, 1).toUpperCase();
  const main = document.createElement("div");
  main.className = "peer-main";
  const name = document.createElement("div");
  name.className = "peer-name";
  name.textContent = p.name || p.user;
  const meta = document.createElement("div");
  meta.className = "peer-meta";
  if (p._server) {
    const mode = document.createElement("span");
    mode.className = "tag";
    mode.textContent = p.mode || "?";
    meta.append(mode, document.createTextNode(caps(p).join(" · ")));
    if (p.path !== MAIN || state.servers.size > 1) meta.append(document.createTextNode(` — /${p.path === MAIN ? "" : p.path + "/"}`));
  } else {
    meta.textContent = p.peerType || p.type || "peer";
  }
  main.append(name, meta);
  li.append(av, main);
  if (p._server) {
    const actions = document.createElement("div");
    actions.className = "peer-actions";
    const call = state.call;
    if (call && call.peer === p.addr) {
      const b = document.createElement("span");
      b.className = "in-call";
      b.textContent = call.kind === "view" ? "watching" : "broadcasting";
      actions.append(b);
    } else {
      // On another path's peer these switch to that path first.
      const go = (kind) => () => (p.path === state.path ? startCall(kind) : selectPath(p.path, kind));
      if (caps(p).includes("view")) actions.append(button("Watch", "watch", go("view")));
      if (caps(p).includes("publish")) actions.append(button("Broadcast", "broadcast", go("publish")));
    }
    li.append(actions);
  }
  return li;
}

// ---------------------------------------------------------------- paths

// renderPaths fills #path-picker: shown when the server has several paths
// (or this page's path is not one of them), with the selected path chosen.
function renderPaths() {
  const sel = $("path-picker");
  const servers = sortedServers();
  const paths = servers.map((p) => p.path);
  const missing = !paths.includes(state.path);
  sel.textContent = "";
  for (const p of servers) {
    const o = document.createElement("option");
    o.value = p.path;
    const mode = p.mode ? ` (${p.mode})` : "";
    o.textContent = p.path === MAIN ? `main${mode}` : `${p.path}${mode}`;
    sel.append(o);
  }
  if (missing) {
    const o = document.createElement("option");
    o.value = state.path;
    o.textContent = `${state.path} (not available)`;
    sel.append(o);
  }
  sel.value = state.path;
  sel.hidden = !(servers.length > 1 || (missing && servers.length > 0));
  $("path-picker-label").hidden = sel.hidden;
  syncIceyState();
}

// selectPath makes p the page's path: the URL becomes /{p}/ (/ for main),
// a call on the old path is hung up, and Watch moves to the new path (or
// `then` — "view" or "publish" — starts there).
function selectPath(p, then = null) {
  if (!PATH_RE.test(p)) return;
  const old = state.call;
  if (p !== state.path) {
    state.path = p;
    try { history.replaceState(null, "", urlForPath(p)); } catch {}
    logEvent("system", `path ${p}`);
    const ps = state.pathStates.get(p);
    setPathState(ps ? ps.state : null, ps ? ps.detail : "");
    closeRecording();
    state.recordings = [];
    state.recordingsFor = null;
    renderRecordings();
    refreshRecordings();
  }
  let kind = then;
  if (old && old.path !== p) {
    endCall(`switched to path ${p}`, false, false);
    if (!kind && old.kind === "view") kind = "view";
  }
  renderPaths();
  renderPeers();
  if (!state.call) idleStage();
  if (kind && !state.call && caps(state.server).includes(kind)) startCall(kind);
}

$("path-picker").onchange = (e) => selectPath(e.target.value);

// idleStage: the picture area when no call runs on the selected path.
function idleStage() {
  if (state.call) return;
  const peer = state.server;
  if (!state.connected) return;
  if (!peer) {
    setStage("idle", state.servers.size
      ? `There is no stream named “${state.path}” on this server. Pick another path.`
      : "Waiting for the server…");
    return;
  }
  const c = caps(peer);
  const what = c.includes("view") && c.includes("publish") ? "press Watch or Broadcast"
    : c.includes("publish") ? "press Broadcast to publish your camera" : "press Watch";
  setStage("idle", `${peer.name || "Icey Server"} is ready — ${what}`);
}

// onPathState: the server's icey:state for a path this page calls.
function onPathState(from, d) {
  const path = typeof d.path === "string" && d.path ? d.path : serverPath(from, [...state.servers.values()].find((p) => p.addr === from));
  const st = String(d.state || "");
  logEvent("icey", `state ${path}: ${st}${d.detail ? " — " + short(d.detail) : ""}`);
  state.pathStates.set(path, { state: st, detail: d.detail || "", at: Date.now(), via: "icey" });
  if (state.call && state.call.path === path) state.call.gotState = true;
  if (path === state.path) setPathState(st, d.detail || "");
}

// setPathState applies the selected path's state: the publish state line,
// and for a viewer, the "waiting for a publisher" cover over the picture
// (the call stays up; the picture comes back when a publisher starts).
function setPathState(st, detail = "") {
  iceyState.lastState = st || null;
  iceyState.lastDetail = detail || "";
  const call = state.call;
  if (call && call.kind === "view" && call.path === state.path) {
    if (st === "waiting-publisher") {
      if (call.phase === "connected") {
        setStage("waiting", `Waiting for a publisher on “${call.path}”… The picture comes back when someone broadcasts.`);
        setCallState("Connected — waiting for a publisher");
        $("live").hidden = true;
      }
    } else if ((st === "publishing" || st === "up") && call.phase === "connected") {
      setStage("playing");
      setCallState("Playing live stream");
      $("live").hidden = false;
    }
  }
  renderControls();
}

// publishWords: what #publish-state says, and its data-state.
function publishWords() {
  const call = state.call;
  if (call && call.kind === "publish" && call.path === state.path) {
    return call.phase === "connected" ? ["publishing", "self"] : ["starting broadcast…", "self-starting"];
  }
  const st = iceyState.lastState;
  switch (st) {
    case "publishing":
    case "up": return ["live", st];
    case "waiting-publisher": return ["waiting for a publisher", st];
    case "idle": return [caps(state.server).includes("publish") ? "waiting for a publisher" : "idle", st];
    case "starting": return ["starting", st];
    case "reconnecting": return ["reconnecting", st];
    case "down": return ["down", st];
    default: return [st ? st : "checking…", st || "unknown"];
  }
}

function renderPublishState() {
  const el = $("publish-state");
  const peer = state.server;
  // Only paths that take a publisher (relay, record) have this line.
  const show = !!peer && (caps(peer).includes("publish") || (peer.mode && peer.mode !== "stream"));
  el.hidden = !show;
  const [words, ds] = publishWords();
  // The words are a text node beside the dot, so el.textContent is exactly them.
  if (el.dataset.state !== ds || el.textContent !== words) {
    el.dataset.state = ds;
    el.replaceChildren(el.querySelector(".ps-dot") || document.createElement("i"), document.createTextNode(words));
  }
  iceyState.publishState = show ? words : "";
}

// window.iceyState: a plain object for tests, updated as things happen.
const iceyState = {
  path: state.path,
  paths: [],
  publishing: false, // this page's broadcast is connected
  watching: false, // this page's Watch call is connected
  call: null, // "view" | "publish" while a call runs
  lastState: null, // the selected path's last state (icey:state, else /api/status)
  lastDetail: "",
  publishState: "", // the words #publish-state shows ("" when hidden)
  error: "", // the last error shown to the user
  recording: false, // the server records the selected path right now
  recordings: [], // the selected path's recordings (the last /api/recordings answer)
  // icey:vision / icey:speech of the watched path: accepted counts, ignored ones, what shows now.
  intel: { vision: 0, speech: 0, ignored: 0, boxes: 0, heatmap: true, level: 0, active: false, lastScore: null },
};
window.iceyState = iceyState;

function syncIceyState() {
  const call = state.call;
  iceyState.path = state.path;
  iceyState.paths = sortedServers().map((p) => p.path);
  iceyState.call = call ? call.kind : null;
  iceyState.watching = !!call && call.kind === "view" && call.phase === "connected";
  iceyState.publishing = !!call && call.kind === "publish" && call.phase === "connected";
}

function button(label, action, fn) {
  const b = document.createElement("button");
  b.className = "btn btn-sm" + (action === "watch" ? " btn-primary" : "");
  b.textContent = label;
  b.dataset.action = action;
  b.onclick = fn;
  return b;
}

// ---------------------------------------------------------------- calls

// iceServers loads /api/config into call.cfg (kept to explain an ICE
// failure later) and returns the STUN/TURN servers it names.
async function iceServers(call) {
  try {
    const r = await fetch("/api/config", { headers: authHeaders, cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const cfg = await r.json();
    call.cfg = cfg;
    const out = [];
    const host = (h) => (h && h.includes(":") && !h.startsWith("[") ? `[${h}]` : h);
    if (cfg.stun && cfg.stun.urls && cfg.stun.urls.length) out.push({ urls: cfg.stun.urls });
    if (cfg.turn && cfg.turn.enabled && cfg.turn.host) {
      out.push({ urls: [`turn:${host(cfg.turn.host)}:${cfg.turn.port}`], username: cfg.turn.username, credential: cfg.turn.credential });
    }
    return out;
  } catch (err) {
    logEvent("error", `could not load /api/config (${err.message}); trying without STUN/TURN`);
    return [];
  }
}

function waitFor(phase, ms) {
  return new Promise((resolve, reject) => {
    const call = state.call;
    const timer = setTimeout(() => reject(new Error(`no ${phase} from the server within ${ms / 1000}s`)), ms);
    call.waiters[phase] = (v) => { clearTimeout(timer); resolve(v); };
    call.rejecter = (e) => { clearTimeout(timer); reject(e); };
  });
}

// startCall starts a call to the selected path's server peer: "view"
// (Watch: a recvonly offer) or "publish" (Broadcast: the camera and
// microphone in a sendonly offer). Same protocol both ways: call:init →
// call:accept → call:offer → call:answer, candidates both ways.
async function startCall(kind) {
  const peer = state.server;
  if (state.call || !state.client || !state.client.online || !peer) return;
  if (!caps(peer).includes(kind)) return;
  clearBanner();
  iceyState.error = "";
  const call = { kind, peer: peer.addr, path: peer.path, pc: null, phase: "init", pendingRemote: [], remoteSet: false, waiters: {},
    rejecter: null, localStream: null, initSent: false, gotState: false,
    cfg: null, serverCands: [], localCands: [], iceErrors: [], failing: false, startedAt: Date.now() };
  state.call = call;
  renderPeers();
  const where = peer.path === MAIN ? "" : ` on “${peer.path}”`;
  try {
    const ice = iceServers(call);
    if (kind === "publish") {
      setStage("connecting", "Asking for your camera and microphone…");
      setCallState("Waiting for permission to use the camera and microphone…");
      let stream;
      try {
        stream = await getCamera();
      } catch (err) {
        if (state.call === call) endCall(cameraErrorText(err), true, true, "Cannot broadcast");
        return;
      }
      if (state.call !== call) { for (const t of stream.getTracks()) t.stop(); return; }
      call.localStream = stream;
      showPreview(stream);
      setStage("previewing");
    } else {
      setStage("connecting", "Connecting to the live stream…");
    }
    setCallState("Calling the server…");
    logEvent("call", `${kind === "view" ? "watch" : "broadcast"}${where}: call:init`);
    call.initSent = true;
    state.client.sendCall("init", {}, call.peer);
    await waitFor("accept", 10000);
    if (state.call !== call) return;
    setCallState("Accepted — negotiating media…");
    const pc = new RTCPeerConnection({ iceServers: await ice });
    call.pc = pc;
    if (kind === "view") {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
    } else {
      for (const t of call.localStream.getTracks()) {
        const tr = pc.addTransceiver(t, { direction: "sendonly", streams: [call.localStream] });
        preferCodec(tr, t.kind, t.kind === "video" ? "video/h264" : "audio/opus");
      }
    }
    pc.ontrack = (e) => {
      if (kind !== "view") return;
      const v = $("video");
      if (!v.srcObject) v.srcObject = e.streams[0] || new MediaStream();
      if (!e.streams[0]) v.srcObject.addTrack(e.track);
      v.play().catch(() => {});
    };
    pc.onicecandidate = (e) => {
      if (state.call !== call) return;
      const c = e.candidate;
      if (c && c.candidate) call.localCands.push(c.candidate);
      if (!state.client.online) return;
      state.client.sendCall("candidate", c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
                                            : { candidate: "" }, call.peer);
    };
    pc.onicecandidateerror = (e) => {
      if (state.call !== call || !e.url) return;
      call.iceErrors.push({ url: e.url, code: e.errorCode, text: e.errorText || "" });
    };
    pc.oniceconnectionstatechange = () => {
      if (state.call !== call) return;
      const s = pc.iceConnectionState;
      logEvent("call", `ICE ${s}`);
      if (s === "failed") failICE(call);
    };
    pc.onconnectionstatechange = () => {
      if (state.call !== call) return;
      const s = pc.connectionState;
      if (s === "connected") {
        call.phase = "connected";
        setCallState(kind === "view" ? "Playing live stream" : `Broadcasting${where}`);
        setStage("playing");
        $("live").textContent = kind === "view" ? "LIVE" : "ON AIR";
        $("live").title = kind === "view" ? "This browser is receiving the live stream from the server right now"
                                          : "This browser is sending its camera to the server right now";
        $("live").hidden = false;
        $("hud").hidden = kind !== "view";
        $("btn-snap").disabled = kind !== "view";
        if (kind === "view") startStats(call);
        logEvent("call", kind === "view" ? `watching ${call.path}` : `broadcasting to ${call.path}`);
        // A viewer that arrives while the path waits for its publisher.
        const ps = state.pathStates.get(call.path);
        setPathState(ps ? ps.state : iceyState.lastState, ps ? ps.detail : "");
        pollOps();
      } else if (s === "failed") {
        failICE(call);
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    const offer = { type: "offer", sdp: pc.localDescription.sdp };
    if (kind === "publish" && publishToken) offer.token = publishToken;
    state.client.sendCall("offer", offer, call.peer);
    logEvent("call", "call:offer sent");
    const answer = await waitFor("answer", 15000);
    if (state.call !== call) return;
    for (const line of answer.sdp.split(/\r?\n/)) if (line.startsWith("a=candidate:")) call.serverCands.push(line.slice(2));
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    call.remoteSet = true;
    for (const c of call.pendingRemote) await addRemoteCandidate(pc, c);
    call.pendingRemote = [];
    setCallState("Connecting media (ICE/DTLS)…");
    // Without any path the browser may sit in "checking" for a long time.
    setTimeout(() => { if (state.call === call && call.phase !== "connected") failICE(call, "no connection within 20 s"); }, 20000);
  } catch (err) {
    if (state.call === call) endCall(err.message, true, true);
  }
}

// getCamera asks for the camera and microphone; with one of them missing
// it broadcasts what there is.
async function getCamera() {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    const e = new Error("no mediaDevices");
    e.name = window.isSecureContext === false ? "InsecureContext" : "NotSupportedError";
    throw e;
  }
  try {
    return await md.getUserMedia({ video: true, audio: true });
  } catch (err) {
    if (err.name !== "NotFoundError" && err.name !== "OverconstrainedError" && err.name !== "NotReadableError") throw err;
    for (const one of [{ video: true }, { audio: true }]) {
      try {
        const s = await md.getUserMedia(one);
        logEvent("error", `broadcasting ${one.video ? "without a microphone" : "without a camera"} (${err.name})`);
        return s;
      } catch {}
    }
    throw err;
  }
}

// cameraErrorText: a getUserMedia failure in words a user can act on.
function cameraErrorText(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return "Camera and microphone access was denied. Allow them for this site (the camera icon in the address bar), then press Broadcast again.";
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return "No camera or microphone was found. Connect one, then press Broadcast again.";
    case "NotReadableError":
    case "TrackStartError":
      return "The camera or microphone is in use by another application, or the system blocked it. Close that application, then press Broadcast again.";
    case "AbortError":
      return "The camera or microphone stopped while starting. Press Broadcast to try again.";
    case "InsecureContext":
      return "This browser allows the camera only on secure pages: open this page over https:// (or on localhost).";
    case "NotSupportedError":
      return "This browser cannot capture a camera (no getUserMedia). Use a recent Chrome, Edge, Firefox or Safari.";
    default:
      return `The camera or microphone could not be opened: ${(err && (err.message || err.name)) || "unknown error"}.`;
  }
}

// preferCodec puts a codec (H.264 for video, Opus for audio) first in a
// transceiver's preferences, keeping the others as fallbacks, when the
// browser supports setCodecPreferences and the codec.
function preferCodec(tr, kind, mime) {
  if (!tr || typeof tr.setCodecPreferences !== "function") return;
  const score = (c) => {
    if (c.mimeType.toLowerCase() !== mime) return 0;
    const f = c.sdpFmtpLine || "";
    return 1 + (/packetization-mode=1/.test(f) ? 2 : 0) + (/profile-level-id=42e01f/i.test(f) ? 1 : 0);
  };
  for (const api of [window.RTCRtpSender, window.RTCRtpReceiver]) {
    const cs = api && api.getCapabilities && api.getCapabilities(kind);
    if (!cs || !cs.codecs || !cs.codecs.some((c) => score(c) > 0)) continue;
    const sorted = cs.codecs.map((c, i) => ({ c, i, s: score(c) })).sort((a, b) => b.s - a.s || a.i - b.i).map((x) => x.c);
    try { tr.setCodecPreferences(sorted); return; } catch {}
  }
}

function showPreview(stream) {
  const v = $("local-preview");
  v.muted = true;
  v.srcObject = stream;
  v.hidden = false;
  v.play().catch(() => {});
}

function hidePreview() {
  const v = $("local-preview");
  v.srcObject = null;
  v.hidden = true;
}

// failICE ends the call with the likely cause of an ICE failure, from what
// is known rather than guessed: where this page was loaded from, the
// candidates the server offered and this browser gathered, the relay in
// /api/config, and the turn/webrtc checks of /api/ready.
async function failICE(call, reason = "") {
  if (call.failing || state.call !== call) return;
  call.failing = true;
  let ev;
  try { ev = await iceEvidence(call); } catch { ev = null; }
  if (state.call !== call) return;
  endCall(iceFailureText(ev || { pageHost: location.hostname, server: [], local: [], iceErrors: [] }, reason), true, true);
}

function timeout(p, ms) {
  return Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), ms))]);
}

async function iceEvidence(call) {
  let ready = state.ready;
  try {
    const r = await timeout(fetch("/api/ready", { headers: authHeaders, cache: "no-store" }), 2000);
    ready = await r.json();
    state.ready = ready;
  } catch {}
  return {
    pageHost: location.hostname,
    server: call.serverCands.map(parseCandidate).filter(Boolean),
    local: call.localCands.map(parseCandidate).filter(Boolean),
    iceErrors: call.iceErrors,
    turnRefused: state.turnRefused.filter((r) => r.at >= call.startedAt).map((r) => r.reason),
    cfg: call.cfg,
    ready,
  };
}

// parseCandidate reads "candidate:<f> <c> <proto> <prio> <addr> <port> typ <type> ...".
function parseCandidate(line) {
  const f = String(line).replace(/^a=/, "").split(/\s+/);
  if (f.length < 8 || f[6] !== "typ") return null;
  return { protocol: f[2].toLowerCase(), address: f[4], port: f[5], type: f[7] };
}

function isLoopbackHost(h) {
  h = String(h || "").replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || /^127\./.test(h) || h === "::1";
}

function isPrivateIP(a) {
  return /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|169\.254\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(a) ||
    /^(f[cd]|fe80)/i.test(a) || /\.local$/i.test(a);
}

function uniq(xs) { return [...new Set(xs)]; }

// iceFailureText is the message for an ICE failure given the evidence.
// Exposed on window.icey so tests can check the wording for situations a
// loopback-only test machine cannot produce.
function iceFailureText(ev, reason = "") {
  const checks = {};
  for (const c of (ev.ready && ev.ready.checks) || []) checks[c.name] = c;
  const says = (name, evenPass = false) => {
    const c = checks[name];
    return c && c.detail && (evenPass || c.result !== "pass") ? ` The server's ${name} check says: "${c.detail}".` : "";
  };
  const server = ev.server || [], local = ev.local || [];
  const addrList = uniq(server.map((c) => c.address));
  const addrs = addrList.slice(0, 4).join(", ") + (addrList.length > 4 ? ` and ${addrList.length - 4} more` : "");
  const many = addrList.length > 1 ? "es" : "";
  const udpPorts = uniq(server.filter((c) => c.protocol === "udp").map((c) => c.port)).join(", ");
  const cfg = ev.cfg;
  const turn = cfg && cfg.turn && cfg.turn.enabled && cfg.turn.host ? cfg.turn : null;
  const relayURL = turn ? `turn:${turn.host}:${turn.port}` : "";
  const pageLocal = isLoopbackHost(ev.pageHost);
  const readyHint = "check the webrtc check in /api/ready";
  let cause, fix;
  if (!server.length) {
    cause = "the server offered no ICE candidate at all, so this browser had no address to send media to.";
    fix = pageLocal
      ? `You opened this page on ${ev.pageHost}: start the server with --host 127.0.0.1 so it offers a loopback candidate, or ${readyHint}.`
      : `Set webrtc.publicIps (or --host) to an address browsers can reach, and ${readyHint}.`;
  } else if (pageLocal && !server.some((c) => isLoopbackHost(c.address))) {
    cause = `you opened this page on ${ev.pageHost}, but the server offered only ${addrs}, no candidate this browser could use.`;
    fix = `Start the server with --host 127.0.0.1 (this machine only) and without webrtc.publicIps, so that it offers a loopback candidate, or ${readyHint}.`;
  } else if (pageLocal && !local.length) {
    cause = `the server offered ${addrs}, but this browser gathered no local address to send media from (browsers leave out loopback-only interfaces).`;
    fix = `Open the page from a device with a network connection, or ${readyHint}.`;
  } else if (pageLocal) {
    cause = `the server offered ${addrs}${udpPorts ? ` (UDP ${udpPorts})` : ""}, but every connectivity check failed.`;
    fix = `Check that no local firewall blocks UDP${udpPorts ? " " + udpPorts : ""}, and ${readyHint}.`;
  } else if (!turn) {
    const priv = server.every((c) => isPrivateIP(c.address) || isLoopbackHost(c.address));
    cause = `the server offered only the ${priv ? "private " : ""}address${many} ${addrs}, which this browser's network cannot reach, ` +
      `and no TURN relay is configured${cfg ? "" : " (or /api/config could not be loaded)"}.`;
    fix = "Enable TURN on the server (turn.enabled, with turn.externalIp set to its public address) and open the TURN port (UDP and TCP)" +
      `${udpPorts ? ` and UDP ${udpPorts}` : ""} in its firewall, or set webrtc.publicIps to an address this browser can reach.` + says("turn");
  } else if (!local.some((c) => c.type === "relay")) {
    const err = (ev.iceErrors || []).find((e) => e.url && e.url.startsWith("turn"));
    cause = `the TURN relay at ${relayURL} gave this browser no relay address${err ? ` (error ${err.code}${err.text ? ": " + err.text : ""})` : ""}.`;
    fix = `Open UDP/TCP ${turn.port} to the server and make sure turn.externalIp (${turn.host}) is its public address.` + says("turn");
  } else {
    cause = `this browser got a relay address from ${relayURL}, but the relay could not reach the server's media address${many} ${addrs}.`;
    const refused = uniq(ev.turnRefused || []).filter(Boolean);
    if (refused.length) cause += ` The relay refused to forward during this call (turn.refused: ${refused.slice(0, 2).join("; ")}).`;
    fix = (server.every((c) => isPrivateIP(c.address) || isLoopbackHost(c.address))
      ? "Those are private addresses, which the relay refuses unless turn.allowLocalRelay is set (see turn.refused in Events); set webrtc.publicIps or turn.allowLocalRelay."
      : `Open UDP${udpPorts ? " " + udpPorts : ""} on the server to the relay.`) + says("turn");
  }
  return `ICE failed${reason ? ` (${reason})` : ""}: ${cause} ${fix}${says("webrtc", pageLocal)}`;
}

async function addRemoteCandidate(pc, c) {
  try { await pc.addIceCandidate(c); } catch (err) { logEvent("error", `remote candidate rejected: ${err.message}`); }
}

function onCall(action, data) {
  const call = state.call;
  logEvent("call", `call:${action}${data.reason ? " — " + data.reason : ""}`);
  if (!call) return;
  switch (action) {
    case "accept":
      if (call.waiters.accept) call.waiters.accept(data);
      break;
    case "answer":
      if (call.waiters.answer) call.waiters.answer(data);
      break;
    case "candidate": {
      const cand = (data.candidate || "").replace(/^a=/, "");
      if (!cand) return; // end of candidates: the answer already carried them
      const init = { candidate: cand, sdpMid: data.sdpMid ?? "0", sdpMLineIndex: data.sdpMLineIndex ?? 0 };
      if (call.pc && call.remoteSet) addRemoteCandidate(call.pc, init);
      else call.pendingRemote.push(init);
      break;
    }
    case "reject":
      endCall(rejectText(call, data.reason, data.message), true, true, call.kind === "publish" ? "Broadcast refused" : "Call refused");
      break;
    case "hangup":
      if (data.reason === "connection failed" || data.reason === "handshake timeout") failICE(call, data.reason);
      else endCall(hangupText(data.reason), true, data.reason !== "hangup");
      break;
  }
}

// rejectText: a call:reject {reason, message} in words. The server's
// reasons are fixed words (busy, not allowed, unauthorized, not found,
// capacity); message says more.
function rejectText(call, reason = "", message = "") {
  const kind = call.kind;
  const on = call.path === MAIN ? "this server" : `“${call.path}”`;
  const more = message ? ` (${message})` : "";
  if (reason === "busy") {
    if (kind === "publish" && !/already in a call/i.test(message)) {
      return `Someone else is already broadcasting on ${on}. A path takes one publisher at a time: wait until they stop, or pick another path.`;
    }
    return "The server says this browser is already in a call.";
  }
  if (reason === "capacity") return kind === "publish" ? "The server is at its capacity; try again in a moment."
    : "The server is at its viewer capacity; try again in a moment.";
  if (reason === "unauthorized" || /unauthori[sz]ed|forbidden|401|403/i.test(reason)) {
    return kind === "publish"
      ? `You are not allowed to broadcast on ${on}: it needs a publish token. Open the page with ?publishToken=<token> (ask the operator).`
      : `You are not allowed to watch ${on}: the server needs an access token. Open the page with ?token=<token> (ask the operator).`;
  }
  if (reason === "not allowed") {
    return kind === "publish" ? `${on === "this server" ? "This server" : `The path ${on}`} does not take broadcasts${more}. Pick a path that offers Broadcast.`
      : `${on === "this server" ? "This server" : `The path ${on}`} cannot be watched${more}.`;
  }
  if (reason === "not found") return `There is no path ${on} on this server${more}. Pick another path.`;
  if (kind === "publish") return `Broadcast is not available on ${on}${reason ? ` (${reason}${message ? ": " + message : ""})` : ""}.`;
  return `The server declined the call: ${reason || "no reason given"}${more}.`;
}

function hangupText(reason = "") {
  if (reason.startsWith("source unavailable")) {
    return `Source unavailable: ${reason.replace(/^source unavailable:?\s*/, "") || "the camera or file is not delivering media"}. ` +
      "The server keeps retrying; press Watch again in a moment.";
  }
  if (reason === "shutdown") return "The server is shutting down; it will be back shortly.";
  if (reason === "source closed") return "The stream ended on the server (source closed).";
  return `Call ended by the server: ${reason || "no reason given"}.`;
}

function endCall(reason, fromServer = false, isError = false, title = "Call ended") {
  const call = state.call;
  if (!call) return;
  state.call = null;
  if (call.rejecter) call.rejecter(new Error(reason));
  if (!fromServer && call.initSent && state.client && state.client.online) {
    try { state.client.sendCall("hangup", { reason: "hangup" }, call.peer); } catch {}
  }
  stopStats();
  resetIntel();
  if (call.pc) call.pc.close();
  if (call.localStream) for (const t of call.localStream.getTracks()) t.stop();
  hidePreview();
  const v = $("video");
  v.srcObject = null;
  $("hud").hidden = true;
  $("hud-stalled").hidden = true;
  $("live").hidden = true;
  $("btn-snap").disabled = true;
  // This page's publisher no longer speaks for the path: until the server
  // says otherwise (/api/status), its state is unknown.
  if (call.kind === "publish" && call.path === state.path) {
    state.pathStates.delete(call.path);
    iceyState.lastState = null;
    iceyState.lastDetail = "";
  }
  const again = call.kind === "publish" ? "press Broadcast to start again" : "press Watch to start again";
  setStage("idle", state.server ? `Call ended — ${again}` : "Waiting for the server…");
  setCallState(isError ? reason : "Idle", isError);
  if (isError) {
    banner(title, reason);
    iceyState.error = reason;
  }
  logEvent(isError ? "error" : "call", `call ended: ${reason}`);
  renderPeers();
  setTimeout(pollOps, 500);
}

// ---------------------------------------------------------------- HUD stats

let statsTimer = null;
function stopStats() { clearInterval(statsTimer); statsTimer = null; }

function startStats(call) {
  stopStats();
  let prev = null; // {t, bytes, frames}
  let lastRise = performance.now();
  statsTimer = setInterval(async () => {
    if (state.call !== call || !call.pc) return stopStats();
    // No publisher: no frames are expected, and the count restarts when one comes.
    if ((state.pathStates.get(call.path) || {}).state === "waiting-publisher") lastRise = performance.now();
    let report;
    try { report = await call.pc.getStats(); } catch { return; }
    let v = null;
    const codecs = new Map();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") v = s;
      if (s.type === "codec") codecs.set(s.id, s);
    });
    if (!v) return;
    const now = performance.now();
    const frames = v.framesDecoded || 0;
    const codec = codecs.get(v.codecId);
    $("hud-codec").textContent = codec ? codec.mimeType.replace(/^video\//, "") : "–";
    $("hud-res").textContent = v.frameWidth ? `${v.frameWidth}×${v.frameHeight}` : "–";
    if (prev) {
      const dt = (now - prev.t) / 1000;
      const fps = v.framesPerSecond ?? (frames - prev.frames) / dt;
      $("hud-fps").textContent = Math.round(fps);
      const kbps = ((v.bytesReceived - prev.bytes) * 8) / dt / 1000;
      $("hud-bitrate").textContent = kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
      if (frames > prev.frames) lastRise = now;
    }
    // Average over the last interval (the counters are cumulative).
    const jbDelay = v.jitterBufferDelay || 0, jbCount = v.jitterBufferEmittedCount || 0;
    const dCount = jbCount - (prev ? prev.jbCount : 0);
    if (dCount > 0) {
      const ms = ((jbDelay - (prev ? prev.jbDelay : 0)) / dCount) * 1000;
      $("hud-jb").textContent = `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
    }
    const stalled = now - lastRise > 2000;
    if (stalled !== !$("hud-stalled").hidden) logEvent(stalled ? "error" : "call", stalled ? "video stalled: no new frames decoded" : "video resumed");
    $("hud-stalled").hidden = !stalled;
    prev = { t: now, bytes: v.bytesReceived || 0, frames, jbDelay, jbCount };
  }, 1000);
}


// ---------------------------------------------------------------- intelligence

// The server analyses each path once and sends every page watching it
// icey:vision (motion: normalized boxes and a grid of cell differences) and
// icey:speech (voice activity) from the path's server peer
// (docs/intelligence.md). Drawn over the displayed picture: the
// <video> letterboxes it (object-fit: contain), so boxes are placed inside
// the bars, never on them.
const INTEL_FADE_MS = 1000; // boxes and heat map fade this long after the last vision event
const INTEL_FADE_OUT_MS = 400; // the fade itself (.motion-overlay transition)
const MAX_INTEL_EVENTS = 100;
const intel = { last: null, fadeTimer: null, clearTimer: null, heatmap: true, speechActive: false };

function clamp01(v) {
  v = Number(v);
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
}

// intelAccepted: a vision or speech event for this page: from the server
// peer of the path this page watches (and about that path, when it says).
function intelAccepted(m) {
  const call = state.call;
  const d = m.data;
  if (!call || call.kind !== "view" || call.path !== state.path || m.from !== call.peer) return false;
  if (!d || typeof d !== "object") return false;
  return d.source === undefined || d.source === null || d.source === "" || d.source === call.path;
}

function onIntel(sub, m) {
  if (!intelAccepted(m)) {
    // The server's, but not for the picture on screen (no Watch call, or
    // another path): only logged in the rail, as other icey: messages.
    iceyState.intel.ignored++;
    return logEvent("icey", `${sub.slice(5)} ${short(m.data)}`);
  }
  if (sub === "icey:vision") onVision(m.data);
  else onSpeech(m.data);
}

// pictureRect: where the picture shows in #stage's padding box (the
// overlay's box), given the element and the picture's size (the decoded
// size, else the event's frame size).
function pictureRect(fw = 0, fh = 0) {
  const v = $("video");
  const ew = v.clientWidth, eh = v.clientHeight;
  const w = v.videoWidth || fw, h = v.videoHeight || fh;
  if (!(ew > 0 && eh > 0 && w > 0 && h > 0)) return null;
  const s = Math.min(ew / w, eh / h);
  const pw = w * s, ph = h * s;
  return { x: v.offsetLeft + (ew - pw) / 2, y: v.offsetTop + (eh - ph) / 2, width: pw, height: ph };
}

function normRegion(r) {
  if (!r || typeof r !== "object") return null;
  const x = clamp01(r.x), y = clamp01(r.y);
  const w = Math.min(clamp01(r.width), 1 - x), h = Math.min(clamp01(r.height), 1 - y);
  return w > 0 && h > 0 ? { x, y, width: w, height: h } : null;
}

function normGrid(g) {
  if (!g || typeof g !== "object" || !Array.isArray(g.cells)) return null;
  const w = Math.floor(Number(g.width)), h = Math.floor(Number(g.height));
  if (!(w > 0 && h > 0 && w <= 512 && h <= 512) || g.cells.length < w * h) return null;
  return { width: w, height: h, cells: g.cells.slice(0, w * h).map(clamp01) };
}

function onVision(E) {
  const data = (E.data && typeof E.data === "object") ? E.data : {};
  const frame = (E.frame && typeof E.frame === "object") ? E.frame : {};
  const boxes = [];
  for (const d of Array.isArray(E.detections) ? E.detections.slice(0, 32) : []) {
    const r = normRegion(d && d.region);
    if (r) boxes.push({ ...r, label: typeof d.label === "string" ? d.label.slice(0, 24) : "motion", confidence: clamp01(d.confidence) });
  }
  const score = Number.isFinite(Number(data.score)) ? Number(data.score) : null;
  intel.last = { boxes, grid: normGrid(data.grid), fw: Number(frame.width) || 0, fh: Number(frame.height) || 0 };
  iceyState.intel.vision++;
  iceyState.intel.lastScore = score;
  const ov = $("motion-overlay");
  ov.hidden = false;
  ov.classList.remove("fading");
  $("btn-heatmap").hidden = false;
  drawHeatmap(intel.last.grid);
  layoutIntel();
  clearTimeout(intel.fadeTimer);
  clearTimeout(intel.clearTimer);
  intel.fadeTimer = setTimeout(() => {
    ov.classList.add("fading");
    intel.clearTimer = setTimeout(clearMotion, INTEL_FADE_OUT_MS);
  }, INTEL_FADE_MS);
  visionEntry(score, boxes.length, data);
}

// clearMotion removes the faded boxes and heat map.
function clearMotion() {
  clearTimeout(intel.fadeTimer);
  clearTimeout(intel.clearTimer);
  intel.last = null;
  $("motion-boxes").textContent = "";
  drawHeatmap(null);
  $("motion-overlay").classList.remove("fading");
  iceyState.intel.boxes = 0;
}

// drawHeatmap: one canvas pixel per grid cell (stretched over the picture
// by CSS, smoothly): transparent where nothing moved, yellow to red, more
// opaque, the more a cell changed (relative to the strongest cell).
function drawHeatmap(g) {
  const c = $("heatmap");
  if (!g) {
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
    return;
  }
  if (c.width !== g.width) c.width = g.width;
  if (c.height !== g.height) c.height = g.height;
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(g.width, g.height);
  const max = g.cells.reduce((a, v) => (v > a ? v : a), 0.1);
  for (let i = 0; i < g.cells.length; i++) {
    const v = g.cells[i];
    if (v <= 0.002) continue;
    const t = Math.min(1, v / max);
    img.data[i * 4] = 255;
    img.data[i * 4 + 1] = Math.round(220 * (1 - t));
    img.data[i * 4 + 2] = 0;
    img.data[i * 4 + 3] = Math.round(255 * (0.18 + 0.5 * t));
  }
  ctx.putImageData(img, 0, 0);
}

// layoutIntel places the boxes and the heat map over the displayed picture
// (again whenever the element or the picture changes size).
function layoutIntel() {
  const last = intel.last;
  const holder = $("motion-boxes");
  const heat = $("heatmap");
  heat.classList.toggle("off", !intel.heatmap);
  iceyState.intel.heatmap = intel.heatmap;
  const r = last && pictureRect(last.fw, last.fh);
  if (!r) {
    holder.textContent = "";
    iceyState.intel.boxes = 0;
    return;
  }
  const px = (v) => `${Math.round(v * 100) / 100}px`;
  Object.assign(heat.style, { left: px(r.x), top: px(r.y), width: px(r.width), height: px(r.height) });
  heat.hidden = !last.grid;
  while (holder.children.length > last.boxes.length) holder.lastChild.remove();
  while (holder.children.length < last.boxes.length) {
    const d = document.createElement("div");
    d.className = "motion-box";
    d.setAttribute("role", "img");
    holder.append(d);
  }
  last.boxes.forEach((b, i) => {
    const d = holder.children[i];
    const conf = b.confidence.toFixed(2);
    d.dataset.label = `${b.label} ${conf}`;
    d.dataset.confidence = conf;
    d.setAttribute("aria-label", `${b.label} at ${Math.round(b.x * 100)}%, ${Math.round(b.y * 100)}% of the picture, confidence ${conf}`);
    d.classList.toggle("top", b.y < 0.08);
    Object.assign(d.style, { left: px(r.x + b.x * r.width), top: px(r.y + b.y * r.height), width: px(b.width * r.width), height: px(b.height * r.height) });
  });
  iceyState.intel.boxes = last.boxes.length;
  $("motion-overlay").setAttribute("aria-label", `Motion detections: ${last.boxes.length} region${last.boxes.length === 1 ? "" : "s"}`);
}

if (typeof ResizeObserver === "function") new ResizeObserver(() => { if (intel.last) layoutIntel(); }).observe($("video"));
$("video").addEventListener("resize", () => { if (intel.last) layoutIntel(); }); // the picture's size changed
window.addEventListener("resize", () => { if (intel.last) layoutIntel(); });

$("btn-heatmap").onclick = () => {
  intel.heatmap = !intel.heatmap;
  $("btn-heatmap").setAttribute("aria-pressed", String(intel.heatmap));
  layoutIntel();
};

function onSpeech(S) {
  const type = String(S.type || "");
  const level = clamp01(S.level);
  const active = type === "speech:end" ? false : typeof S.active === "boolean" ? S.active : type === "speech:start";
  iceyState.intel.speech++;
  iceyState.intel.level = level;
  iceyState.intel.active = active;
  const m = $("voice-meter");
  m.hidden = false;
  m.dataset.level = String(level);
  m.dataset.active = String(active);
  m.setAttribute("aria-valuenow", String(level));
  m.setAttribute("aria-valuetext", `${active ? "speaking" : "silent"}, level ${level.toFixed(3)}`);
  // Speech levels are small (mean |sample|): a square root spreads them over the bar.
  $("voice-level").style.width = `${Math.round(Math.sqrt(level) * 1000) / 10}%`;
  if (type === "speech:start" && !intel.speechActive) intelEntry("speech", `speech started · level ${level.toFixed(3)}`);
  if (type === "speech:end") intelEntry("speech", `speech ended${S.peak !== undefined && Number.isFinite(Number(S.peak)) ? ` · peak ${clamp01(S.peak).toFixed(3)}` : ""}`);
  intel.speechActive = active;
}

// artifactURL: a snapshot's or clip's address, only when it is the
// server's own (a path under /), with the token as for recordings.
function artifactURL(a) {
  const u = a && typeof a.url === "string" ? a.url : "";
  if (!u.startsWith("/") || u.startsWith("//") || u.startsWith("/\\")) return "";
  return token ? u + (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : u;
}

function visionEntry(score, n, data) {
  const li = intelEntry("motion", `${score === null ? "motion" : `score ${score.toFixed(3)}`} · ${n} region${n === 1 ? "" : "s"}`);
  if (score !== null) li.dataset.score = String(score);
  const text = li.querySelector(".ev-text");
  const when = li.querySelector("time").textContent;
  for (const [key, label] of [["snapshot", "snapshot"], ["clip", "clip"]]) {
    const href = artifactURL(data[key]);
    if (!href) continue;
    const a = document.createElement("a");
    a.className = `ev-link ev-${key}`;
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = label;
    a.setAttribute("aria-label", `${label === "clip" ? "Clip" : "Snapshot"} of the motion at ${when} (opens in a new tab)`);
    text.append(a);
  }
}

// intelEntry adds a line to #intel-events, as logEvent does to #events.
function intelEntry(kind, text) {
  const li = document.createElement("li");
  li.className = `ev-${kind}`;
  const t = document.createElement("time");
  const now = new Date();
  t.dateTime = now.toISOString();
  t.textContent = now.toLocaleTimeString([], { hour12: false });
  const k = document.createElement("span");
  k.className = "ev-kind";
  k.textContent = kind;
  const x = document.createElement("span");
  x.className = "ev-text";
  x.textContent = text;
  li.append(t, k, x);
  const list = $("intel-events");
  list.prepend(li);
  while (list.children.length > MAX_INTEL_EVENTS) list.lastChild.remove();
  $("intel-count").textContent = String(list.children.length);
  $("intel").hidden = false;
  return li;
}
$("intel-clear").onclick = () => { $("intel-events").textContent = ""; $("intel-count").textContent = "0"; };

// resetIntel: the call ended: nothing shows over the picture any more (the
// detections list stays).
function resetIntel() {
  clearMotion();
  $("motion-overlay").hidden = true;
  $("btn-heatmap").hidden = true;
  const m = $("voice-meter");
  m.hidden = true;
  m.dataset.level = "0";
  m.dataset.active = "false";
  m.setAttribute("aria-valuenow", "0");
  m.setAttribute("aria-valuetext", "silent");
  $("voice-level").style.width = "0";
  intel.speechActive = false;
  iceyState.intel.level = 0;
  iceyState.intel.active = false;
}

// ---------------------------------------------------------------- controls

$("btn-watch").onclick = () => startCall("view");
$("btn-hangup").onclick = () => endCall("hung up", false, false);
$("broadcast").onclick = () => startCall("publish");
$("broadcast-stop").onclick = () => { if (state.call && state.call.kind === "publish") endCall("broadcast stopped", false, false); };

const video = $("video");
video.muted = true;
function renderMute() {
  $("mute-label").textContent = video.muted ? "Unmute" : "Mute";
  $("mute-x").toggleAttribute("hidden", !video.muted);
  $("mute-wave").toggleAttribute("hidden", video.muted);
  $("btn-mute").setAttribute("aria-pressed", String(video.muted));
}
$("btn-mute").onclick = () => { video.muted = !video.muted; if (!video.muted) video.play().catch(() => {}); renderMute(); };
renderMute();

$("btn-full").onclick = () => {
  const player = $("player");
  if (document.fullscreenElement) return document.exitFullscreen();
  if (player.requestFullscreen) player.requestFullscreen().catch(() => {});
  else if (video.webkitEnterFullscreen) video.webkitEnterFullscreen(); // iOS Safari
};

$("btn-snap").onclick = () => {
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    if (!blob) return;
    const a = document.createElement("a");
    const ts = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    a.href = URL.createObjectURL(blob);
    a.download = `icey-snapshot-${ts}.png`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 5000);
    logEvent("system", `snapshot saved (${canvas.width}×${canvas.height})`);
  }, "image/png");
};

// ---------------------------------------------------------------- ops panel

function fact(dl, k, v) {
  const dt = document.createElement("dt");
  dt.textContent = k;
  const dd = document.createElement("dd");
  dd.textContent = v;
  dl.append(dt, dd);
}

function uptime(sec) {
  const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

// ---------------------------------------------------------------- status explained

// advice turns a check that warns or fails into plain words and what to do.
// Each entry: [check name, result or "*", detail pattern or null, what it means, what to do].
const ADVICE = [
  ["config", "warn", null, "Some keys in the config file are not recognised and were ignored.",
    "Check their spelling (they are listed below) against deploy/config.example.json."],
  ["config", "fail", null, "The config file cannot be used.", "Fix the file named above; the server says what is wrong with it."],
  ["source", "warn", null, "The camera or source is reconnecting. Viewers stay connected and resume by themselves.",
    "Nothing yet. If it lasts, check that the camera is on and reachable from the server."],
  ["source", "fail", null, "No media is arriving from the source, so there is nothing to watch.",
    "Check the source address and its credentials (--source / media.source), or that the file exists."],
  ["turn", "warn", /externalIp/i, "Viewers on other networks may fail to connect: the built-in TURN relay does not know this server's public address.",
    "Set turn.externalIp (--turn-external-ip) to the server's public IP. Fine as it is for viewers on this machine or LAN."],
  ["turn", "warn", /demo credentials|turn\.secret/i, "The built-in TURN relay uses fixed demo credentials that anyone could reuse.",
    "Set turn.secret (ICEY_TURN_SECRET) before exposing the server; viewers on this machine or LAN are not affected."],
  ["turn", "warn", /disabled/i, "TURN is off: viewers behind strict NATs or firewalls may not connect.",
    "Enable it (drop --no-turn, set turn.enabled) if remote viewers cannot connect."],
  ["turn", "fail", null, "The TURN relay could not start.", "Pick a free --turn-port, or stop what already uses it."],
  ["webrtc", "warn", /bound to loopback/i, "Only browsers on this machine can watch: the media port listens on loopback.",
    "Nothing, to try it out here. To serve other devices, start with --host 0.0.0.0 (or a LAN address)."],
  ["webrtc", "warn", /besides loopback/i, "Only browsers on this machine can watch: it has no network address besides loopback.",
    "Attach the server to a network (in a container: publish the UDP port or use host networking), or set webrtc.publicIps."],
  ["webrtc", "*", null, "Browsers may find no network path to the server's media port.",
    "Bind with --host to an address browsers can reach, or set webrtc.publicIps to the server's public address."],
  ["ports", "fail", null, "A port is in use or configured twice.", "Choose free ports with --port, --webrtc-port and --turn-port."],
  ["tls", "fail", null, "TLS is misconfigured.", "Set both tls.cert and tls.key to a readable, valid certificate and key, or neither."],
  ["recordings", "warn", null, "The recordings disk is nearly full.", "Free some space, or point media.recordDir at a larger disk."],
  ["recordings", "fail", null, "Recordings cannot be written.", "Make media.recordDir writable by the server."],
  ["intelligence", "warn", null, "An analyser is enabled but cannot run.", "Install what it needs (see above) or disable it."],
  ["web_root", "*", null, "The --web-root directory cannot be used.",
    "Fix the directory named above, or unset --web-root (webRoot, ICEY_WEB_ROOT) to serve the built-in UI."],
  ["shutdown", "*", null, "The server is shutting down and takes no new viewers.", "Nothing: a supervisor (Docker, Kubernetes) starts it again."],
];
const WARNING_ADVICE = [
  [/externalIp is unset/i, "Set turn.externalIp (--turn-external-ip) to the server's public IP if viewers on other networks will watch."],
  [/demo credentials|turn\.secret/i, "Set turn.secret (ICEY_TURN_SECRET) before exposing the server."],
  [/TURN is disabled/i, "Enable TURN (drop --no-turn) if remote viewers cannot connect."],
  [/unknown config key/i, "Check the key's spelling; unknown keys are ignored."],
];

function adviceFor(c) {
  for (const [name, result, re, means, todo] of ADVICE) {
    if (name !== c.name) continue;
    if (result !== "*" && result !== c.result) continue;
    if (re && !re.test(c.detail || "")) continue;
    return { means, todo };
  }
  return { means: c.result === "fail" ? "This check fails." : "This check warns.", todo: "Read the detail; the server names what it found." };
}

function explainItem(cls, title, means, raw, todo) {
  const li = document.createElement("li");
  li.className = cls;
  const head = document.createElement("b");
  head.textContent = title;
  li.append(head, document.createTextNode(" — " + means));
  if (raw) {
    const r = document.createElement("span");
    r.className = "raw";
    r.textContent = raw;
    li.append(r);
  }
  if (todo) {
    const w = document.createElement("span");
    w.className = "what";
    const b = document.createElement("b");
    b.textContent = "What to do: ";
    w.append(b, document.createTextNode(todo));
    li.append(w);
  }
  return li;
}

// explainStatus fills the status badge's popover and the one-line summary
// from a readiness report: what each warning or failure means, in plain
// words, and what to do about it.
function explainStatus(rep) {
  const box = $("ops-explain"), sum = $("ops-summary");
  box.textContent = "";
  sum.className = "ops-summary";
  const p = document.createElement("p");
  if (!rep || !rep.status) {
    p.textContent = "The server's status is unknown: its ops API did not answer.";
    box.append(p);
    sum.textContent = "";
    return;
  }
  const bad = (rep.checks || []).filter((c) => c.result === "fail" || c.result === "warn");
  const warnings = rep.warnings || [];
  const n = bad.length + warnings.length;
  const notes = bad.length || warnings.length; // a check and its warning are one thing to look at
  if (rep.status === "ok") {
    p.textContent = "Everything is fine: every check passes and there are no warnings.";
    sum.textContent = "";
  } else if (rep.ready !== false) {
    p.textContent = "Degraded means: the server works and viewers can watch now, but something should be looked at before you rely on it beyond this machine or network.";
    sum.textContent = `Viewers can watch. ${notes} thing${notes === 1 ? "" : "s"} to look at before production: hover or tap ${rep.status}.`;
    sum.classList.add("degraded");
  } else {
    p.textContent = "Not ready: viewers cannot watch until what fails below is fixed.";
    sum.textContent = `Not ready: ${bad.filter((c) => c.result === "fail").map((c) => c.name).join(", ") || "a check fails"}. Hover or tap ${rep.status} for what to do.`;
    sum.classList.add("error");
  }
  box.append(p);
  if (!n) return;
  const ul = document.createElement("ul");
  for (const c of bad) {
    const a = adviceFor(c);
    ul.append(explainItem(c.result, `${c.name} check`, a.means, c.detail, a.todo));
  }
  for (const w of warnings) {
    const hit = WARNING_ADVICE.find(([re]) => re.test(w));
    ul.append(explainItem("warn", "Warning", w, "", hit ? hit[1] : ""));
  }
  box.append(ul);
}

// The popover opens on hover or keyboard focus, and stays open after a tap
// or click until the next tap, Escape or a tap elsewhere.
(() => {
  const btn = $("ops-status"), box = $("ops-explain");
  let pinned = false, hover = false, leaveTimer = null;
  const render = () => {
    const open = pinned || hover;
    box.classList.toggle("open", open);
    btn.setAttribute("aria-expanded", String(open));
  };
  // A short grace lets the pointer travel from the badge into the popover.
  const enter = () => { clearTimeout(leaveTimer); hover = true; render(); };
  const leave = () => { clearTimeout(leaveTimer); leaveTimer = setTimeout(() => { hover = false; render(); }, 200); };
  for (const el of [btn, box]) { el.addEventListener("mouseenter", enter); el.addEventListener("mouseleave", leave); }
  btn.addEventListener("focus", () => { if (btn.matches(":focus-visible")) { hover = true; render(); } });
  btn.addEventListener("blur", () => { hover = false; render(); });
  btn.addEventListener("click", (e) => { e.stopPropagation(); pinned = !pinned; hover = false; render(); });
  box.addEventListener("click", (e) => e.stopPropagation());
  document.addEventListener("click", () => { if (pinned) { pinned = false; render(); } });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && (pinned || hover)) { pinned = false; hover = false; render(); } });
})();

async function pollOps() {
  const note = $("ops-note");
  let ready = null, status = null;
  try {
    const [r1, r2] = await Promise.all([
      fetch("/api/ready", { headers: authHeaders, cache: "no-store" }),
      fetch("/api/status", { headers: authHeaders, cache: "no-store" }),
    ]);
    ready = await r1.json().catch(() => null);
    if (ready) state.ready = ready;
    if (r2.status === 401) note.textContent = "Status needs the access token (open the page with ?token=…).";
    else if (r2.ok) { status = await r2.json(); note.textContent = ""; }
    else note.textContent = `/api/status: HTTP ${r2.status}`;
  } catch {
    $("ops-status").textContent = "unreachable";
    $("ops-status").className = "badge error";
    note.textContent = "The ops API is unreachable.";
    explainStatus(null);
    return;
  }
  const rep = status || ready || {};
  const badge = $("ops-status");
  badge.textContent = rep.status || "?";
  badge.className = `badge ${rep.status || ""}`;
  explainStatus(ready || rep);

  const dl = $("ops-facts");
  dl.textContent = "";
  if (rep.mode) fact(dl, "Mode", rep.mode);
  if (status) {
    if (status.version) fact(dl, "Version", status.version);
    fact(dl, "Uptime", uptime(status.uptimeSec || 0));
    if (status.sessions) fact(dl, "Sessions", `${status.sessions.active} active · ${status.sessions.total} total`);
    const st = status.stream || {};
    if (st.source || st.sourceKind) {
      let src = st.source && st.source !== st.sourceKind ? `${st.source} (${st.sourceKind || "?"})` : st.source || st.sourceKind;
      if (st.state) src += ` — ${st.state}${st.fps ? `, ${Math.round(st.fps)} fps` : ""}`;
      fact(dl, "Source", src);
    }
    state.statusMode = typeof status.mode === "string" ? status.mode : "";
    if (status.record && typeof status.record === "object") fact(dl, "Recordings", recordFact(status.record));
    if (Array.isArray(status.paths)) applyStatusPaths(status.paths, dl);
    else renderRecordState();
    if (state.lastUptime !== null && status.uptimeSec < state.lastUptime) logEvent("system", "server restarted (uptime reset)");
    state.lastUptime = status.uptimeSec;
  }
  if (ready) fact(dl, "Ready", ready.ready ? "yes" : "no");

  const checks = $("ops-checks");
  checks.textContent = "";
  for (const c of rep.checks || []) {
    const li = document.createElement("li");
    const icon = document.createElement("span");
    icon.className = c.result;
    icon.textContent = c.result === "pass" ? "✓" : c.result === "warn" ? "!" : "✕";
    const name = document.createElement("span");
    name.textContent = c.name;
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = c.detail || "";
    li.append(icon, name, detail);
    checks.append(li);
  }
  const warns = $("ops-warnings");
  warns.textContent = "";
  for (const w of rep.warnings || []) {
    const li = document.createElement("li");
    li.textContent = w;
    warns.append(li);
  }
}

// applyStatusPaths takes each path's state from /api/status: the state of
// paths this page has no call on (a call's path hears icey:state), and a
// one-line summary in the ops panel when there are several paths.
function applyStatusPaths(paths, dl) {
  const wasRecording = pathRecordingNow(state.path);
  state.statusPaths = new Map(paths.filter((p) => p && typeof p.name === "string").map((p) => [p.name, p]));
  if (pathRecordingNow(state.path) !== wasRecording) scheduleRecordingsRefresh(); // a file started or ended
  renderRecordState();
  for (const p of paths) {
    if (!p || typeof p.name !== "string") continue;
    const call = state.call;
    const live = state.pathStates.get(p.name);
    if (call && call.path === p.name && call.gotState && live && live.via === "icey") continue;
    if (!p.state) continue;
    state.pathStates.set(p.name, { state: p.state, detail: "", at: Date.now(), via: "status" });
    if (p.name === state.path && iceyState.lastState !== p.state) setPathState(p.state, "");
  }
  if (paths.length > 1) {
    fact(dl, "Paths", paths.map((p) => `${p.name} ${p.state || "?"}${p.viewers ? ` · ${p.viewers} viewer${p.viewers === 1 ? "" : "s"}` : ""}`).join(", "));
  }
}

// ---------------------------------------------------------------- recordings

// pathRecordingNow: /api/status says the server records path p right now.
function pathRecordingNow(p) {
  const e = state.statusPaths.get(p);
  return !!e && e.recording === true;
}

// pathRecords: p records (a record-mode path, a path with record: true, or
// one recording now), so its panel shows even before the first file.
function pathRecords(p) {
  const e = state.statusPaths.get(p);
  const peer = state.servers.get(p);
  return pathRecordingNow(p) || (!!e && (e.record === true || e.mode === "record")) ||
    (!!peer && peer.mode === "record") || (p === MAIN && state.statusMode === "record");
}

// recordMode: a Broadcast to p is recorded (record mode: the default path
// records what is published to it).
function recordMode(p) {
  const e = state.statusPaths.get(p);
  const peer = state.servers.get(p);
  return (!!peer && peer.mode === "record") || (!!e && e.mode === "record") || (p === MAIN && state.statusMode === "record");
}

function recordFact(rec) {
  const parts = [];
  if (rec.dir) parts.push(String(rec.dir));
  const n = [rec.files, rec.count, rec.recordings].find((v) => typeof v === "number");
  if (n !== undefined) parts.push(`${n} file${n === 1 ? "" : "s"}`);
  if (typeof rec.bytes === "number") parts.push(formatBytes(rec.bytes));
  return parts.join(" · ") || "on";
}

// renderRecordState: the REC dot, the Broadcast label on a recorded path,
// and whether the panel shows.
function renderRecordState() {
  const rec = pathRecordingNow(state.path);
  $("rec-indicator").hidden = !rec;
  iceyState.recording = rec;
  const recorded = recordMode(state.path);
  const label = $("broadcast").querySelector("span");
  const want = recorded ? "Broadcast (recorded)" : "Broadcast";
  if (label && label.textContent !== want) label.textContent = want;
  $("broadcast").title = recorded ? "Send your camera to this path; the server records it to a file"
    : "Send your camera and microphone to this path";
  $("record-note").hidden = !recorded || !caps(state.server).includes("publish");
  renderRecordingsVisibility();
}

function renderRecordingsVisibility() {
  const show = state.recordings.length > 0 || pathRecords(state.path);
  $("recordings").hidden = !show;
}

// mediaURL: a recording's address for <video src> and download links, which
// cannot send the token header: it rides as ?token=.
function mediaURL(r) {
  let u = typeof r.url === "string" && r.url.startsWith("/") && !r.url.startsWith("//") ? r.url
    : `/recordings/${encodeURIComponent(r.path || state.path)}/${encodeURIComponent(r.name)}`;
  if (token) u += (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  return u;
}

function formatBytes(n) {
  if (!(n >= 0)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i && n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function formatDuration(sec) {
  if (!(sec >= 0)) return "–";
  const s = Math.round(sec), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (v) => String(v).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

function formatStart(t) {
  const d = new Date(t);
  if (isNaN(d)) return String(t || "?");
  return d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function recordingsNote(text) {
  $("recordings-note").textContent = text;
  $("recordings-note").hidden = !text;
}

// refreshRecordings fetches the selected path's recordings and renders
// them; it resolves to the list (an empty one when the server has none or
// no recordings API).
async function refreshRecordings() {
  const path = state.path;
  const seq = ++state.recordingsSeq;
  let list = null, note = "";
  try {
    const r = await fetch(`/api/recordings?path=${encodeURIComponent(path)}`, { headers: authHeaders, cache: "no-store" });
    if (r.ok) {
      const body = await r.json();
      list = Array.isArray(body) ? body.filter((x) => x && typeof x.name === "string") : [];
    } else if (r.status === 404) {
      list = []; // a server without recordings
    } else if (r.status === 401 || r.status === 403) {
      list = [];
      note = "Recordings need the access token (open the page with ?token=…).";
    } else {
      note = `Recordings: HTTP ${r.status}`;
    }
  } catch {
    note = "Recordings could not be loaded.";
  }
  if (seq !== state.recordingsSeq || path !== state.path) return state.recordings; // a newer request or another path
  if (list) {
    state.recordings = list;
    state.recordingsFor = path;
  }
  recordingsNote(note);
  renderRecordings();
  return state.recordings;
}

let recordingsTimer = null;
function scheduleRecordingsRefresh() {
  clearTimeout(recordingsTimer);
  recordingsTimer = setTimeout(refreshRecordings, 200);
}

function onRecordingEvent(type, d) {
  const p = typeof d.path === "string" ? d.path : "";
  if (p && type === "recording.started") {
    state.statusPaths.set(p, { ...(state.statusPaths.get(p) || { name: p }), recording: true });
    renderRecordState();
  }
  if (!p || p === state.path) scheduleRecordingsRefresh();
}

function renderRecordings() {
  const list = $("recordings-list");
  const recs = state.recordings;
  iceyState.recordings = recs;
  $("recordings-count").textContent = String(recs.length);
  list.textContent = "";
  if (!recs.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = pathRecordingNow(state.path) ? "The first file appears here shortly." : "No recordings on this path yet.";
    list.append(li);
  }
  const playing = $("recording-player").dataset.name || "";
  for (const r of recs) list.append(recordingItem(r, r.name === playing));
  renderRecordingsVisibility();
}

function recordingItem(r, playing) {
  const li = document.createElement("li");
  li.className = "recording" + (r.complete === false ? " writing" : "") + (playing ? " playing" : "");
  li.dataset.name = r.name;
  li.dataset.complete = String(r.complete !== false);
  const main = document.createElement("div");
  main.className = "rec-main";
  const when = document.createElement("time");
  when.className = "rec-start";
  if (r.start) when.dateTime = String(r.start);
  when.textContent = formatStart(r.start);
  when.title = r.name;
  const meta = document.createElement("span");
  meta.className = "rec-meta";
  const dur = document.createElement("span");
  dur.className = "rec-duration";
  dur.textContent = formatDuration(r.durationSec);
  const size = document.createElement("span");
  size.className = "rec-size";
  size.textContent = formatBytes(r.bytes);
  meta.append(dur, document.createTextNode(" · "), size);
  main.append(when, meta);
  const actions = document.createElement("div");
  actions.className = "rec-actions";
  if (r.complete === false) {
    const w = document.createElement("span");
    w.className = "rec-writing";
    w.textContent = "recording…";
    actions.append(w);
  } else {
    const play = document.createElement("button");
    play.type = "button";
    play.className = "btn btn-sm rec-play";
    play.textContent = "Play";
    play.onclick = () => playRecording(r);
    const dl = document.createElement("a");
    dl.className = "btn btn-sm rec-download";
    dl.href = mediaURL(r);
    dl.download = r.name;
    dl.textContent = "Download";
    const del = document.createElement("button");
    del.type = "button";
    del.className = "btn btn-sm rec-delete";
    del.textContent = "Delete";
    del.title = `Delete ${r.name} from the server`;
    del.onclick = () => deleteRecording(r);
    actions.append(play, dl, del);
  }
  li.append(main, actions);
  return li;
}

function playRecording(r) {
  const v = $("recording-player");
  v.dataset.name = r.name;
  v.src = mediaURL(r);
  $("recording-title").textContent = `${formatStart(r.start)} — ${r.name}`;
  $("recording-viewer").hidden = false;
  for (const li of $("recordings-list").querySelectorAll("li.recording")) li.classList.toggle("playing", li.dataset.name === r.name);
  v.play().catch(() => {}); // the controls stay for the user if autoplay is refused
}

function closeRecording() {
  const v = $("recording-player");
  v.pause();
  v.removeAttribute("src");
  delete v.dataset.name;
  v.load();
  $("recording-viewer").hidden = true;
  for (const li of $("recordings-list").querySelectorAll("li.recording.playing")) li.classList.remove("playing");
}
$("recording-close").onclick = closeRecording;
$("recordings-refresh").onclick = () => refreshRecordings();
$("recording-player").addEventListener("error", () => {
  if ($("recording-player").getAttribute("src")) recordingsNote("This recording cannot be played here; try Download.");
});

async function deleteRecording(r) {
  if (!confirm(`Delete the recording ${r.name}? This cannot be undone.`)) return;
  const p = r.path || state.path;
  if ($("recording-player").dataset.name === r.name) closeRecording();
  try {
    const res = await fetch(`/api/recordings/${encodeURIComponent(p)}/${encodeURIComponent(r.name)}`, { method: "DELETE", headers: authHeaders });
    if (res.ok || res.status === 404) {
      logEvent("system", `deleted recording ${r.name}`);
      recordingsNote("");
    } else {
      recordingsNote(`Could not delete ${r.name}: HTTP ${res.status}`);
      logEvent("error", `delete recording ${r.name}: HTTP ${res.status}`);
    }
  } catch (err) {
    recordingsNote(`Could not delete ${r.name}: the server is unreachable.`);
  }
  return refreshRecordings();
}

// ---------------------------------------------------------------- start

// For tests and debugging in the console.
window.icey = {
  iceFailureText,
  get pc() { return state.call && state.call.pc; },
  get connected() { return state.connected; },
  get server() { return state.server; },
  get path() { return state.path; },
  get servers() { return sortedServers(); },
  selectPath,
  refreshRecordings,
  onMessage,
  pictureRect: () => pictureRect(),
};

// Live ops updates: the /api/events stream (as a WebSocket, since browsers
// cannot put the token in a header there) triggers a refresh of the panel
// when something happens; polling stays as a slow fallback and takes over
// while the stream is down.
const opsEvents = { ws: null, live: false, retry: 0, refresh: null };
const eventText = {
  "session.started": (d) => `${d.role && d.role !== "viewer" ? d.role : "viewer"} session ${d.id} started${d.path && d.path !== MAIN ? ` on ${d.path}` : ""}`,
  "session.ended": (d) => `session ${d.id} ended (${d.reason})`,
  "source.up": () => "source is up",
  "source.reconnecting": (d) => `source reconnecting${d.error ? ": " + d.error : ""}`,
  "source.down": (d) => `source down${d.detail ? ": " + d.detail : ""}`,
  "source.ended": () => "source ended",
  "readiness.changed": (d) => (d.ready ? "server ready" : `server not ready: ${(d.failing || []).join("; ")}`),
  "turn.refused": (d) => `TURN refused ${d.count} request(s): ${d.reason}`,
  "recording.started": (d) => `recording ${d.path || ""}: ${d.name || ""} started`,
  "recording.finalized": (d) => `recording ${d.path || ""}: ${d.name || ""} finalized`,
  "recording.failed": (d) => `recording ${d.path || ""} failed${d.name ? ` (${d.name})` : ""}${d.error ? ": " + d.error : ""}`,
  "shutdown": () => "server is shutting down",
};
function scheduleOpsRefresh() {
  clearTimeout(opsEvents.refresh);
  opsEvents.refresh = setTimeout(pollOps, 150);
}
function connectOpsEvents() {
  const url = new URL("/api/events", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  let ws;
  try { ws = new WebSocket(url); } catch { return; }
  opsEvents.ws = ws;
  ws.onopen = () => { opsEvents.live = true; opsEvents.retry = 0; $("ops-live").hidden = false; };
  ws.onmessage = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch { return; }
    if (e.type !== "snapshot" && eventText[e.type]) logEvent("ops", eventText[e.type](e.data || {}));
    if (typeof e.type === "string" && e.type.startsWith("recording.")) onRecordingEvent(e.type, e.data || {});
    if (e.type === "turn.refused") {
      state.turnRefused.push({ at: Date.now(), reason: (e.data && e.data.reason) || "" });
      if (state.turnRefused.length > 20) state.turnRefused.shift();
    }
    scheduleOpsRefresh();
  };
  ws.onclose = () => {
    opsEvents.live = false;
    $("ops-live").hidden = true;
    const delay = Math.min(30000, 1000 * 2 ** opsEvents.retry++);
    setTimeout(connectOpsEvents, delay);
  };
}

renderPaths();
renderPeers();
connect();
pollOps();
refreshRecordings();
connectOpsEvents();
setInterval(() => { if (!opsEvents.live) pollOps(); }, 5000); // fallback while the stream is down
setInterval(() => { if (opsEvents.live && !document.hidden) pollOps(); }, 30000); // uptime, fps
document.addEventListener("visibilitychange", () => { if (!document.hidden) pollOps(); });
