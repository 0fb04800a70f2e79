// The REST client: the token lives in sessionStorage only (gone when the
// tab closes) and goes out as a bearer header. Every failure becomes an
// ApiError carrying the server's envelope; a 401 signs the user out.

const KEY = 'elementd.token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, envelope) {
    const e = (envelope && envelope.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'HTTP_' + status;
    this.details = e.details || [];
    this.retryable = !!e.retryable;
  }
}

// Set by the app: called with the error of any 401.
let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

async function envelope(resp) {
  try { return await resp.json(); } catch { return null; }
}

// call('GET', '/api/acme/chat/ops/get') or call('POST', path, {…}).
export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token.get();
  if (t) headers.Authorization = 'Bearer ' + t;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: 'NETWORK', message: 'the server could not be reached: ' + e.message } });
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, await envelope(resp));
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  if (resp.status === 204) return null;
  return envelope(resp);
}

export const get = (p) => call('GET', p);
export const post = (p, b) => call('POST', p, b === undefined ? {} : b);
export const patch = (p, b) => call('PATCH', p, b);
export const del = (p) => call('DELETE', p);

// The path of an element op: op('acme', 'chat', 'source/promote').
export function op(circle, slug, name, query) {
  const base = slug ? `/api/${circle}/${slug}/ops/${name}` : `/api/${circle}/ops/${name}`;
  const q = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== '' && v != null)) : null;
  return q && [...q].length ? `${base}?${q}` : base;
}

// Server-Sent Events over fetch (EventSource cannot send a bearer header).
// Calls onEvent(event) for each event; reconnects with Last-Event-ID, so
// the server replays what was missed. Returns a function that stops it.
export function stream(path, onEvent, onState = () => {}) {
  const ctl = new AbortController();
  let lastId = null;
  let delay = 1000;
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        const headers = { Accept: 'text/event-stream', Authorization: 'Bearer ' + token.get() };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const resp = await fetch(path, { headers, signal: ctl.signal });
        if (!resp.ok) {
          const err = new ApiError(resp.status, await envelope(resp));
          if (resp.status === 401) { onUnauthorized(err); return; }
          throw err;
        }
        onState('open');
        delay = 1000;
        await read(resp.body, (e) => { if (e.id) lastId = e.id; onEvent(e); });
        onState('closed', null);
      } catch (e) {
        if (ctl.signal.aborted) return;
        onState('error', e);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  };
  run();
  return () => ctl.abort();
}

// Parses the text/event-stream format: blank-line separated blocks of
// `field: value` lines; data lines join with newlines.
async function read(body, emit) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, '\n');
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      const ev = { id: null, type: 'message', data: [] };
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'id') ev.id = val;
        else if (field === 'event') ev.type = val;
        else if (field === 'data') ev.data.push(val);
      }
      if (!ev.data.length) continue;
      try { ev.data = JSON.parse(ev.data.join('\n')); } catch { ev.data = ev.data.join('\n'); }
      emit(ev);
    }
  }
}
