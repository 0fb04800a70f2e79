// Activity: the element's live events as they happen, above its stored
// history (newest first, paged), both filtered by kind.

import { get, op } from '../api.js';
import { h, replace, time, messageSlot } from '../ui.js';

const KINDS = ['', 'op.', 'element.', 'source.', 'ws.'];

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  let kind = '';
  let before = null;
  const liveBody = h('tbody#activity-live');
  const historyBody = h('tbody#activity-history');
  const more = h('button', { hidden: true, onclick: () => page(false) }, 'Older');

  const row = (e, live) => h('tr', { dataset: { type: e.type, id: e.id } },
    h('td', time(e.timestamp)), h('td', h('b', breakAtDots(e.type))), h('td', e.op || ''),
    h('td.mono', actor(e.actor)), summary(e.data), h('td', live ? 'live' : ''));

  async function page(fresh) {
    if (fresh) { before = null; historyBody.replaceChildren(); }
    try {
      const r = await get(op(circle, slug, 'activity', { limit: 50, before, type: kind }));
      r.events.forEach((e) => historyBody.append(row(e, false)));
      before = r.next_before;
      more.hidden = !before;
    } catch (e) { slot.error(e); }
  }

  const select = h('select#activity-kind', {
    onchange: () => {
      kind = select.value;
      [...liveBody.children].forEach((tr) => { tr.hidden = !tr.dataset.type.startsWith(kind); });
      page(true);
    },
  }, KINDS.map((k) => h('option', { value: k }, k ? `${k}*` : 'every kind')));

  const unsubscribe = ctx.subscribe((e) => {
    const tr = row(e.data, true);
    tr.hidden = !e.data.type.startsWith(kind);
    liveBody.prepend(tr);
    while (liveBody.children.length > 200) liveBody.lastChild.remove();
  });

  const head = h('thead', h('tr', ['time', 'event', 'op', 'actor', 'data', ''].map((x) => h('th', x))));
  replace(box, slot.el, h('div.filters', h('label', 'kind', select)),
    h('h2', 'Live'), h('div.events', h('table', head.cloneNode(true), liveBody)),
    h('h2', 'History'), h('div.events', h('table', head, historyBody)), more);
  await page(true);
  return unsubscribe;
}

function actor(a) {
  if (!a) return '';
  return a.kind === 'token' ? `${a.token_id} (${a.role})` : a.kind;
}

// Cut long data short; the whole of it stays in the title.
function summary(data) {
  const s = JSON.stringify(data || {});
  if (s.length <= 160) return h('td.mono.data', s);
  return h('td.mono.data', { title: s.length > 4000 ? s.slice(0, 4000) + '…' : s }, s.slice(0, 160) + '…');
}

// ws.connection.rejected may break after each dot, and nowhere else.
function breakAtDots(name) {
  return String(name).split(/(?<=\.)/).flatMap((part, i) => (i ? [h('wbr'), part] : [part]));
}
