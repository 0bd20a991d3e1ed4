// Minimal Symple v4 client over a plain WebSocket (protocol: symple/4).
// Events (EventTarget): "open", "welcome", "autherror", "error", "presence",
// "message", "event", "close". Each event's detail is the frame (or
// {code, reason, welcomed} for "close").

// SERVER is the default path's server peer. Every other path p that allows
// viewing or publishing has its own server peer "icey|p" (see isServerPeer).
export const SERVER = "icey|server";
export const SERVER_USER = "icey";

// isServerPeer: is this presence frame from one of the server's own
// virtual peers? The server rewrites a relayed peer's presence so that its
// data.type is always "Peer"; only the server's peers say "server".
// A path's peer is named after its path: "icey|p" serves path p, and
// "icey|server" the default path "main".
export function isServerPeer(m) {
  const d = (m && m.data) || {};
  if (typeof m.from !== "string" || !m.from.startsWith(SERVER_USER + "|") || d.type !== "server") return false;
  if (d.user !== undefined && d.user !== SERVER_USER) return false;
  const id = m.from.slice(SERVER_USER.length + 1);
  if (d.id !== undefined && d.id !== id) return false;
  return d.path === undefined || d.path === id || (id === "server" && d.path === "main");
}

export function address(peer) {
  return `${peer.user}|${peer.id}`;
}

export class SympleClient extends EventTarget {
  constructor({ url, user, name, token, data, rooms }) {
    super();
    this.opts = { url, user, name, token, data, rooms };
    this.ws = null;
    this.peer = null;
    this.roster = new Map(); // address ("user|id") -> peer (presence data)
  }

  connect() {
    this.close();
    this.peer = null;
    this.roster.clear();
    let welcomed = false;
    let ws;
    try {
      ws = new WebSocket(this.opts.url);
    } catch (err) {
      queueMicrotask(() => this.#emit("close", { code: 1006, reason: String(err), welcomed: false }));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.#emit("open", {});
      const auth = { type: "auth", user: this.opts.user, name: this.opts.name, token: this.opts.token || "",
        data: this.opts.data || {} };
      if (this.opts.rooms && this.opts.rooms.length) auth.rooms = this.opts.rooms;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (!m || typeof m !== "object") return;
      switch (m.type) {
        case "welcome":
          welcomed = true;
          this.peer = m.peer;
          this.#emit("welcome", m);
          break;
        case "error":
          this.#emit(m.status === 401 ? "autherror" : "error", m);
          break;
        case "presence": {
          const d = m.data || {};
          const key = typeof m.from === "string" && m.from ? m.from : d.id && d.user ? address(d) : "";
          if (key) {
            if (d.online === false) this.roster.delete(key);
            else this.roster.set(key, { ...(this.roster.get(key) || {}), ...d });
          }
          this.#emit("presence", m);
          break;
        }
        case "message":
        case "event":
        case "command":
          this.#emit(m.type, m);
          break;
        default:
          this.#emit("message", m); // join:ok / leave:ok and friends
      }
    };
    ws.onclose = (e) => {
      if (this.ws === ws) this.ws = null;
      this.peer = null;
      this.#emit("close", { code: e.code, reason: e.reason, welcomed });
    };
  }

  get online() {
    return !!(this.ws && this.ws.readyState === WebSocket.OPEN && this.peer);
  }

  send(m) {
    if (!this.online) throw new Error("not connected");
    if (!m.id) m.id = Math.random().toString(36).slice(2, 10);
    m.from = address(this.peer);
    this.ws.send(JSON.stringify(m));
  }

  // sendCall sends a call:* message to a server peer (the default path's
  // unless another path's peer is named).
  sendCall(action, data = {}, to = SERVER) {
    this.send({ type: "message", subtype: `call:${action}`, to, data });
  }

  close() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, "bye");
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
