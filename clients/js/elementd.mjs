// elementd's browser client: an ES module with no dependencies.
//
//   const c = new ElementdClient("wss://host/ws/acme/chat", {getToken, rooms: ["lobby"]});
//   c.on("message", m => show(m.room, m.data));   // m = {room, offset, epoch, data}
//   c.connect();
//
// It offers the subprotocol `elementd.v1`, keeps each room's place
// ({epoch, offset}) and, after a drop, reconnects with `?recover=` so the
// server replays what was missed: each message is seen once, in order.
// When the server cannot replay (its history is gone) it emits `reset`.

const PROTOCOL = "elementd.v1";
const OPEN_RESET_MS = 30_000; // open this long: the backoff starts over
const ANSWER_MS = 10_000; // an in-band answer (presence, refresh) waits this long
const FINAL_CODES = new Set([1008, 4003]); // refusals a retry cannot fix

export class ElementdClient {
  constructor(url, options = {}) {
    this.url = url;
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.rooms = new Set(options.rooms ?? []);
    const b = options.backoff ?? {};
    this.backoff = {
      baseMs: b.baseMs ?? 500,
      capMs: b.capMs ?? 20_000,
      maxFailures: b.maxFailures ?? 8, // consecutive attempts that never opened
    };
    this.places = new Map(); // room ("" = no room) -> {epoch, offset}
    this.handlers = new Map();
    this.pending = new Map(); // room -> [{resolve, reject, timer}] for presence()
    this.state = "closed";
    this.ws = null;
    this.stopped = true;
    this.attempt = 0; // grows the backoff
    this.failures = 0; // attempts in a row that never opened
    this.timers = {};
  }

  // ---- events ----

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return () => this.handlers.get(event).delete(fn);
  }

  emit(event, value) {
    for (const fn of this.handlers.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        console.error(e);
      }
    }
  }

  setState(s) {
    if (this.state !== s) {
      this.state = s;
      this.emit("state", s);
    }
  }

  // ---- the public calls ----

  connect() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.failures = 0;
    this.open(false);
  }

  close() {
    this.stopped = true;
    this.clearTimers();
    if (this.ws) this.ws.close(1000, "client closed");
    this.ws = null;
    this.rejectPending("closed");
    this.setState("closed");
  }

  join(room) {
    this.rooms.add(room);
    this.control({ op: "join", room, ...this.since(room) });
  }

  leave(room) {
    this.rooms.delete(room);
    this.places.delete(room);
    this.control({ op: "leave", room });
  }

  // A string goes out as text, an ArrayBuffer or typed array as binary,
  // anything else as JSON text.
  send(data) {
    if (!this.isOpen()) throw new Error("elementd: not connected");
    const binary = data instanceof ArrayBuffer || ArrayBuffer.isView(data);
    this.ws.send(typeof data === "string" || binary ? data : JSON.stringify(data));
  }

  // Who is in `room` (the client must be a member): the server's answer.
  presence(room) {
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) return reject(new Error("elementd: not connected"));
      const entry = { resolve, reject };
      entry.timer = setTimeout(() => this.settle(room, entry, new Error("elementd: no answer")), ANSWER_MS);
      if (!this.pending.has(room)) this.pending.set(room, []);
      this.pending.get(room).push(entry);
      this.control({ op: "presence", room });
    });
  }

  // ---- connecting ----

  isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  control(frame) {
    if (this.isOpen()) this.ws.send(JSON.stringify(frame));
  }

  since(room) {
    const p = this.places.get(room);
    return p ? { since: { epoch: p.epoch, offset: p.offset } } : {};
  }

  // Rooms with a place recover; the others join plainly.
  address() {
    const u = new URL(this.url, globalThis.location?.href);
    const recover = [];
    for (const [room, p] of this.places) {
      if (room === "" || this.rooms.has(room)) recover.push(`${room}:${p.epoch}:${p.offset}`);
    }
    const plain = [...this.rooms].filter((r) => !this.places.has(r));
    if (recover.length) u.searchParams.set("recover", recover.join(","));
    if (plain.length) u.searchParams.set("rooms", plain.join(","));
    if (this.token) u.searchParams.set("token", this.token);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    return u.toString();
  }

  async open(freshToken) {
    this.setState("connecting");
    try {
      if (this.getToken && (freshToken || !this.token)) this.token = await this.getToken();
    } catch (e) {
      this.emit("error", { code: "TOKEN", message: String(e) });
      return this.retry();
    }
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.address(), PROTOCOL);
    } catch (e) {
      this.emit("error", { code: "URL", message: String(e) });
      return this.giveUp(String(e));
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.failures = 0;
      this.timers.steady = setTimeout(() => (this.attempt = 0), OPEN_RESET_MS);
      this.setState("open");
      this.scheduleRefresh();
      // A plain join answers the room's place, so a drop before its first
      // message still recovers what follows.
      for (const room of this.rooms) if (!this.places.has(room)) this.control({ op: "join", room });
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearTimers();
      this.rejectPending(`connection closed (${ev.code})`);
      if (this.stopped) return;
      if (!opened && ++this.failures >= this.backoff.maxFailures) {
        return this.giveUp(`${this.failures} attempts failed`);
      }
      if (FINAL_CODES.has(ev.code)) return this.giveUp(`closed ${ev.code} ${ev.reason}`);
      if (ev.code === 4001 && this.getToken) return this.open(true); // expired: at once
      this.retry();
    };
  }

  // Exponential backoff with full jitter, then a fresh token.
  retry() {
    if (this.stopped) return;
    this.setState("connecting");
    const { baseMs, capMs } = this.backoff;
    const delay = Math.random() * Math.min(capMs, baseMs * 2 ** this.attempt);
    this.attempt++;
    this.timers.retry = setTimeout(() => this.open(true), delay);
  }

  giveUp(why) {
    this.emit("error", { code: "CLOSED", message: why });
    this.close();
  }

  clearTimers() {
    for (const t of Object.values(this.timers)) clearTimeout(t);
    this.timers = {};
  }

  // ---- what arrives ----

  receive(raw) {
    if (typeof raw !== "string") {
      return this.emit("message", { room: null, offset: null, epoch: null, data: new Uint8Array(raw) });
    }
    let f;
    try {
      f = JSON.parse(raw);
    } catch {
      f = null;
    }
    if (f && typeof f.op === "string") return this.controlFrame(f);
    if (f && "offset" in f && "epoch" in f && "room" in f && "data" in f) return this.envelope(f);
    if (f && f.error) return this.emit("error", f.error);
    // Sent to this connection alone (the send op): no offset.
    this.emit("message", { room: null, offset: null, epoch: null, data: raw });
  }

  // A published message: dropped if its offset is not past the room's place.
  envelope(f) {
    const p = this.places.get(f.room);
    if (p && p.epoch === f.epoch && f.offset <= p.offset) return;
    this.places.set(f.room, { epoch: f.epoch, offset: f.offset });
    const data = f.data && typeof f.data === "object" && "base64" in f.data ? decode64(f.data.base64) : f.data;
    this.emit("message", { room: f.room, offset: f.offset, epoch: f.epoch, data });
  }

  controlFrame(f) {
    switch (f.op) {
      case "joined":
        if (f.epoch !== undefined && (f.room === "" || this.rooms.has(f.room))) {
          this.places.set(f.room, { epoch: f.epoch, offset: f.offset });
          if (f.recovered === false) this.emit("reset", { room: f.room, epoch: f.epoch, offset: f.offset });
        }
        return this.emit("joined", f);
      case "left":
        this.rooms.delete(f.room);
        this.places.delete(f.room);
        return this.emit("left", f);
      case "presence":
        if (f.action) return this.emit("presence", f);
        return this.settle(f.room, this.pending.get(f.room)?.[0], null, f);
      case "refreshed":
        clearTimeout(this.timers.answer);
        this.scheduleRefresh(f.exp);
        return this.emit("control", f);
      case "error":
        if (this.pending.get(f.room)?.length) {
          this.settle(f.room, this.pending.get(f.room)[0], Object.assign(new Error(f.message), f));
        } else if (f.room !== undefined && f.code !== "WS_TOKEN_INVALID") {
          // A join refused: asking again at each reconnect would only fail.
          this.rooms.delete(f.room);
          this.places.delete(f.room);
        }
        if (f.code === "WS_TOKEN_INVALID" && this.ws) this.ws.close(4000, "refresh refused");
        return this.emit("error", f);
      default:
        return this.emit("control", f);
    }
  }

  settle(room, entry, error, value) {
    const list = this.pending.get(room);
    if (!entry || !list) return;
    list.splice(list.indexOf(entry), 1);
    clearTimeout(entry.timer);
    error ? entry.reject(error) : entry.resolve(value);
  }

  rejectPending(why) {
    for (const [room, list] of this.pending) {
      for (const e of [...list]) this.settle(room, e, new Error(`elementd: ${why}`));
    }
  }

  // ---- tokens ----

  // At exp - max(30 s, 10% of the token's life), a new token in band; no
  // answer or a refusal means reconnect (with yet another token).
  scheduleRefresh(exp) {
    clearTimeout(this.timers.refresh);
    const claims = jwtClaims(this.token);
    exp = exp ?? claims?.exp;
    if (!this.getToken || !exp) return;
    const now = Date.now() / 1000;
    const life = exp - (claims?.iat ?? now);
    const at = exp - Math.max(30, life / 10);
    this.timers.refresh = setTimeout(() => this.refresh(), Math.max(0, (at - now) * 1000));
  }

  async refresh() {
    const ws = this.ws;
    try {
      const token = await this.getToken();
      if (this.ws !== ws || !this.isOpen()) return; // too late: reconnected meanwhile
      this.token = token;
      this.control({ op: "refresh", token });
      this.timers.answer = setTimeout(() => this.ws?.close(4000, "no refresh answer"), ANSWER_MS);
    } catch (e) {
      this.emit("error", { code: "TOKEN", message: String(e) });
      if (this.ws === ws) ws?.close(4000, "no token");
    }
  }
}

// The payload of a JWT, read without verifying (only `exp` and `iat` matter).
function jwtClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function decode64(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}
