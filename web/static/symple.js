// Minimal Symple v4 client over a plain WebSocket (protocol: symple/4).
// Events (EventTarget): "open", "welcome", "autherror", "error", "presence",
// "message", "event", "close". Each event's detail is the frame (or
// {code, reason, welcomed} for "close").

export const SERVER = "icey|server";

export function address(peer) {
  return `${peer.user}|${peer.id}`;
}

export class SympleClient extends EventTarget {
  constructor({ url, user, name, token, data, rooms }) {
    super();
    this.opts = { url, user, name, token, data, rooms };
    this.ws = null;
    this.peer = null;
    this.roster = new Map(); // id -> peer (presence data)
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
          if (d.id) {
            if (d.online === false) this.roster.delete(d.id);
            else this.roster.set(d.id, { ...(this.roster.get(d.id) || {}), ...d });
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

  // sendCall sends a call:* message to the server peer.
  sendCall(action, data = {}) {
    this.send({ type: "message", subtype: `call:${action}`, to: SERVER, data });
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
