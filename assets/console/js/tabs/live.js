// Live: a websocket element's driven link (in driven mode) and client
// connections, each under its own header (updated from the element's
// event stream), the users present (per room), a broadcast box, send to
// and close one connection or every connection of a user, the last 15
// minutes as charts (`series`), its health and metrics from `stats`.
//
// Environments: every runtime call goes through `path()`, which adds the
// selected environment (live, demo or the draft preview).

import { get, post, op } from '../api.js';
import { h, replace, table, time, badge, messageSlot, act, throttle } from '../ui.js';
import { lineChart, seriesPoints } from '../chart.js';

const ENVS = ['live', 'demo', 'draft'];
const ENV_PREFIX = { live: '', demo: '/~demo', draft: '/~draft' };

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  let env = ENVS[0];
  const path = (name, query = {}) => op(circle, slug, name, ENVS.length > 1 ? { ...query, env } : query);
  const slot = messageSlot();
  const endpoint = h('pre#endpoint');
  const linkHead = h('h2', { hidden: true }, 'Driven link');
  const linkBox = h('div#link', { hidden: true });
  const connBox = h('div#connections');
  const usersBox = h('div#users');
  const historyBox = h('div#history');
  const historyRoom = h('input#history-room', { type: 'text', placeholder: 'room (empty: messages to no room)',
    'aria-label': 'room whose history to show' });
  const keepsHistory = () => !!(ctx.el.spec.history && ctx.el.spec.history.size > 0);
  const usersRoom = h('input#users-room', { type: 'text', placeholder: 'room (optional: the whole element)',
    'aria-label': 'room whose users to show' });
  const metricsBox = h('div#metrics.grid');
  const healthBox = h('div#health-box.grid');
  const chartsBox = h('div#charts.charts');
  const chartsNote = h('p.muted#charts-note');
  const result = h('div#broadcast-result');

  function showEndpoint() {
    const spec = ctx.el.spec;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    replace(endpoint, spec.url
      ? `driven mode: the platform holds one outbound link to ${spec.url}`
      : `${scheme}://${location.host}/ws/${circle}${ENV_PREFIX[env]}${spec.path}${spec.rooms && spec.rooms.enabled ? '?rooms=lobby' : ''}`);
  }

  // The link is the platform's own outbound connection: its state and
  // last error matter, and it cannot be closed from here (409
  // WS_LINK_MANAGED), so it is not listed among the clients.
  function showLink(l) {
    const driven = !!(l || ctx.el.spec.url);
    linkHead.hidden = !driven;
    linkBox.hidden = !driven;
    if (!driven) return replace(linkBox);
    if (!l) return replace(linkBox, h('p.muted', `No link runs in ${env}.`));
    const kind = l.state === 'open' ? 'open' : 'warning';
    const msg = h('input', { type: 'text', placeholder: 'message', 'aria-label': 'message to the link' });
    const send = h('button.small', { dataset: { send: 'link' }, disabled: !ctx.can('member') || l.state !== 'open',
      title: l.state === 'open' ? null : 'the link is not open' }, 'Send');
    send.addEventListener('click', () => act(send, slot, async () => {
      const r = await post(path('send'), { connection_id: 'link', message: msg.value });
      slot.notice(`Sent ${r.bytes} bytes on the link.`);
      msg.value = '';
    }));
    replace(linkBox, table(['url', 'state', 'attempts', 'last error', 'in', 'out', 'connected', ''], [
      h('tr', { dataset: { connection: 'link', state: l.state } },
        h('td.mono.url', l.url), h('td', badge(l.state, kind)), h('td', String(l.attempts ?? '—')),
        h('td.last-error', l.last_error || '—'),
        h('td', String(l.messages_in ?? '—')), h('td', String(l.messages_out ?? '—')),
        h('td', time(l.connected_at)), h('td', h('div.row', msg, send))),
    ]));
  }

  async function connections() {
    try {
      const all = await get(path('connections'));
      showLink(all.find((c) => c.kind === 'link'));
      const list = all.filter((c) => c.kind !== 'link');
      const rows = list.map((c) => {
        const msg = h('input', { type: 'text', placeholder: 'message', 'aria-label': `message to ${c.connection_id}` });
        const send = h('button.small', { dataset: { send: c.connection_id }, disabled: !ctx.can('member') }, 'Send');
        send.addEventListener('click', () => act(send, slot, async () => {
          const r = await post(path('send'), { connection_id: c.connection_id, message: msg.value });
          slot.notice(`Sent ${r.bytes} bytes to ${c.connection_id}.`);
          msg.value = '';
        }));
        const close = h('button.small.danger', { dataset: { close: c.connection_id }, disabled: !ctx.can('member') }, 'Close');
        close.addEventListener('click', () => act(close, slot, async () => {
          await post(path('close'), { connection_id: c.connection_id, code: 1000, reason: 'closed from the console' });
          slot.notice(`Closed ${c.connection_id}.`);
        }));
        return h('tr', { dataset: { connection: c.connection_id } },
          h('td.mono', c.connection_id), h('td', c.kind || ''), h('td.user', c.user || '—'),
          h('td', (c.rooms || []).join(', ') || '—'),
          h('td', String(c.messages_in ?? '—')), h('td', String(c.messages_out ?? '—')),
          h('td.mono', c.node_id ? c.node_id.slice(0, 8) : 'this node'), h('td.mono', c.remote_addr || ''),
          h('td', time(c.connected_at)), h('td', h('div.row', msg, send, close)));
      });
      replace(connBox, h('p.muted#connection-count', `${list.length} connection${list.length === 1 ? '' : 's'}`),
        table(['connection', 'kind', 'user', 'rooms', 'in', 'out', 'node', 'remote', 'connected', ''], rows, 'No client is connected.'));
    } catch (e) {
      slot.error(e);
    }
  }

  // Users: who is present (on every node), with a send and a close that
  // reach each of a user's connections.
  async function users() {
    try {
      const room = usersRoom.value.trim();
      const p = await get(path('presence', room ? { room } : {}));
      const rows = p.users.map((u) => {
        const msg = h('input', { type: 'text', placeholder: 'message', 'aria-label': `message to ${u.user}` });
        const send = h('button.small', { dataset: { sendUser: u.user }, disabled: !ctx.can('member') }, 'Send');
        send.addEventListener('click', () => act(send, slot, async () => {
          const r = await post(path('send'), { user: u.user, message: msg.value });
          slot.notice(`Sent to ${r.delivered_to} connection${r.delivered_to === 1 ? '' : 's'} of ${u.user}.`);
          msg.value = '';
        }));
        const close = h('button.small.danger', { dataset: { closeUser: u.user }, disabled: !ctx.can('member') }, 'Close all');
        close.addEventListener('click', () => act(close, slot, async () => {
          const r = await post(path('close'), { user: u.user, code: 1000, reason: 'closed from the console' });
          slot.notice(`Closed ${r.closed} connection${r.closed === 1 ? '' : 's'} of ${u.user}.`);
        }));
        return h('tr', { dataset: { user: u.user } },
          h('td.mono', u.user), h('td.count', String(u.connections)),
          h('td.mono.info', u.info ? JSON.stringify(u.info) : '—'), h('td', h('div.row', msg, send, close)));
      });
      const n = (k, word) => `${k} ${word}${k === 1 ? '' : 's'}`;
      replace(usersBox,
        h('p.muted#user-count', `${n(p.user_count, 'user')}, ${n(p.connection_count, 'connection')}${p.room ? ` in ${p.room}` : ''}`),
        table(['user', 'connections', 'info', ''], rows, 'No user is present (auth none has no users).'));
    } catch (e) {
      slot.error(e);
    }
  }

  // History: a room's last messages with their offsets, and its place.
  async function history() {
    if (!keepsHistory()) return;
    try {
      const room = historyRoom.value.trim();
      const last = 20;
      const head = await get(path('history', { room, limit: 1 }));
      const since = Math.max(0, head.offset - last);
      const p = since > 0 ? await get(path('history', { room, since, limit: last })) : await get(path('history', { room, limit: last }));
      const rows = p.messages.slice().reverse().map((m) => h('tr', { dataset: { offset: String(m.offset) } },
        h('td.mono', String(m.offset)), h('td', time(m.published_at)),
        h('td.mono.data', typeof m.data === 'string' ? m.data : JSON.stringify(m.data))));
      replace(historyBox,
        h('p.muted#history-place', p.epoch ? `offset ${p.offset} · epoch ${p.epoch}` : 'nothing published here yet'),
        table(['offset', 'published', 'message'], rows, 'Nothing kept.'));
    } catch (e) {
      slot.error(e);
    }
  }

  // Health is the element's own (its failures: server errors and
  // refusals for server limits); callers' mistakes are their own count.
  async function metrics() {
    try {
      const s = await get(path('stats', { period: 'day' }));
      const cells = Object.entries(s.metrics || {}).map(([k, v]) => h('div.metric', { dataset: { metric: k } }, h('b', String(v)), h('span', k)));
      replace(metricsBox, cells);
      const kind = { ok: 'ok', warning: 'warning', error: 'error' }[s.health];
      replace(healthBox,
        h('div.metric#health', { dataset: { health: s.health } }, h('b', badge(s.health || '—', kind)), h('span', 'health (24 h)')),
        h('div.metric', { dataset: { metric: 'errors' } }, h('b', String(s.errors ?? 0)), h('span', 'own errors (24 h)')),
        h('div.metric', { dataset: { metric: 'client_errors' } }, h('b', String(s.client_errors ?? 0)), h('span', "callers' errors (24 h)")),
        h('div.metric', { dataset: { metric: 'runs' } }, h('b', String(s.runs ?? 0)), h('span', 'op runs (24 h)')));
    } catch (e) {
      slot.error(e);
    }
  }

  // The last 15 minutes from `series`, drawn again at each poll.
  async function charts() {
    try {
      const s = await get(path('series'));
      const p = seriesPoints(s);
      // At most the ring's 15 minutes; less while the hub is younger.
      const every = s.interval_seconds * 1000;
      const to = Date.parse(s.current.at);
      const first = Date.parse((s.samples[0] || s.current).at);
      const from = Math.max(to - s.capacity * every, Math.min(first, to - every) - every);
      replace(chartsBox,
        lineChart({ id: 'chart-connections', title: 'Connections', unit: '', points: p.connections, from, to }),
        lineChart({ id: 'chart-in', title: 'Messages in', unit: '/s', points: p.in, from, to }),
        lineChart({ id: 'chart-out', title: 'Messages out', unit: '/s', points: p.out, from, to }));
      replace(chartsNote, `One sample every ${s.interval_seconds} s, kept ${s.capacity * s.interval_seconds / 60} minutes; the last point is the interval under way.`,
        s.node_id ? ` As this node (${s.node_id.slice(0, 8)}) sees it: each node keeps its own.` : '');
    } catch (e) {
      replace(chartsBox, h('p.muted', e.code === 'WS_NOT_LIVE' ? `Nothing runs in ${env}.` : e.message));
      replace(chartsNote);
    }
  }

  // Reads of connections and stats are ops too and emit op events: only
  // websocket events trigger a refresh, so the refresh cannot feed itself.
  const refreshConnections = throttle(connections, 300);
  const refreshUsers = throttle(users, 300);
  const refreshHistory = throttle(history, 500);
  historyRoom.addEventListener('change', history);
  usersRoom.addEventListener('change', users);
  const refreshMetrics = throttle(metrics, 1000);
  const unsubscribe = ctx.subscribe((ev) => {
    if (!ev.type.startsWith('ws.')) return;
    if (ev.type.startsWith('ws.connection.') || ev.type.startsWith('ws.message.')) refreshConnections();
    if (ev.type.startsWith('ws.connection.')) refreshUsers();
    if (ev.type === 'ws.broadcast.completed' || ev.type === 'ws.message.received') refreshHistory();
    refreshMetrics();
  });

  const message = h('textarea#broadcast-message', { rows: 2, placeholder: 'message (sent as text)' });
  const room = h('input#broadcast-room', { type: 'text', placeholder: 'room (optional: everyone)' });
  const send = h('button.primary#broadcast', { disabled: !ctx.can('member'), title: ctx.can('member') ? null : 'needs the member role' }, 'Broadcast');
  send.addEventListener('click', () => act(send, slot, async () => {
    const body = { message: message.value };
    if (room.value.trim()) body.room = room.value.trim();
    const r = await post(path('broadcast'), body);
    replace(result, h('div.notice', `Delivered to ${r.delivered_to} of ${r.subscriber_count}${r.room ? ` in room ${r.room}` : ''}.`));
    refreshConnections(); // the per-connection counters moved
  }));

  const envSel = ENVS.length > 1 ? h('select#env', {
    onchange: () => { env = envSel.value; showEndpoint(); connections(); users(); history(); metrics(); charts(); },
  }, ENVS.map((e) => h('option', { value: e }, e))) : null;

  showEndpoint();
  replace(box, slot.el,
    envSel ? h('div.filters', h('label', 'environment', envSel)) : null,
    h('h2', 'Endpoint'), endpoint,
    h('h2', 'Last 15 minutes'), chartsBox, chartsNote,
    h('h2', 'Health'), healthBox,
    linkHead, linkBox,
    h('h2', 'Client connections'), connBox,
    h('h2', 'Users'), h('div.filters', h('label', 'room', usersRoom)), usersBox,
    keepsHistory() ? [h('h2', 'History'), h('div.filters', h('label', 'room', historyRoom)), historyBox] : null,
    h('h2', 'Broadcast'), h('div.card', message, h('div.row', ctx.el.spec.rooms && ctx.el.spec.rooms.enabled ? room : null, send), result),
    h('h2', 'Metrics'), metricsBox);
  await Promise.all([connections(), users(), history(), metrics(), charts()]);
  // Charts and health move without events too: read them every few
  // seconds while the tab is shown.
  const poll = setInterval(() => { charts(); metrics(); }, 5000);
  return () => { clearInterval(poll); unsubscribe(); };
}
