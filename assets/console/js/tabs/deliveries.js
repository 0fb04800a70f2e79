// Deliveries: a webhook's outbox, newest first (`deliveries`), with each
// delivery's status, attempts, the receiver's last answer and the next
// attempt; Redeliver per row (`redeliver`), Send test (`test`), and how
// many pending deliveries the outbox's bound dropped.
//
// Attempts and retries make no event on the webhook's stream, so the list
// is read again every 2 s while a delivery is pending, else every 5 s;
// `webhook.*` events (a test) read it at once. Redeliver and test need
// the member role: a viewer's page has neither button and says so.

import { get, post, op } from '../api.js';
import { h, replace, table, time, badge, messageSlot, act, throttle } from '../ui.js';

const KIND = { delivered: 'ok', pending: 'warning', failed: 'error' };
const PAGE = 50;
const MAX = 500; // the op's own limit
const POLL_MS = 2000; // while a delivery is pending
const IDLE_MS = 5000; // else: new deliveries show up too

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const listBox = h('div#deliveries');
  const summary = h('p.muted#delivery-summary');
  const canAct = ctx.can('member');
  let limit = PAGE;
  let timer = null;
  let gone = false;
  let reads = 0; // only the newest read draws

  const more = h('button.small#older', { hidden: true }, 'Show older');
  more.addEventListener('click', () => { limit = Math.min(MAX, limit + PAGE); list(); });

  function row(d) {
    let action = null;
    if (canAct) {
      action = h('button.small', { dataset: { redeliver: d.id }, title: 'pending again, due now, attempts counted afresh' }, 'Redeliver');
      action.addEventListener('click', () => act(action, slot, async () => {
        const r = await post(op(circle, slug, 'redeliver'), { id: d.id });
        slot.notice(`Redelivering ${r.id}: ${r.status}.`);
        await list();
      }));
    }
    const last = d.last_status == null ? '—' : String(d.last_status);
    // The error unless it only repeats the status ("HTTP 500").
    const why = d.last_error && d.last_error !== `HTTP ${d.last_status}` ? d.last_error : null;
    return h('tr', { dataset: { delivery: d.id, status: d.status } },
      h('td.mono.url.id', d.id), h('td.type', d.type), h('td.status', badge(d.status, KIND[d.status])),
      h('td.attempts', String(d.attempts)),
      h('td.last-status', last, why ? h('div.muted.last-error', why) : null),
      h('td.next', d.next_attempt_at ? time(d.next_attempt_at) : '—'), h('td', time(d.created_at)),
      canAct ? h('td', action) : null);
  }

  // One timer, however many reads overlap (a poll and a click).
  function again(ms) {
    clearTimeout(timer);
    timer = gone ? null : setTimeout(list, ms);
  }

  async function list() {
    const mine = ++reads;
    try {
      const r = await get(op(circle, slug, 'deliveries', { limit }));
      if (gone || mine !== reads) return;
      const rows = r.deliveries;
      const count = (k) => rows.filter((d) => d.status === k).length;
      replace(summary, `${rows.length} shown (newest first): ${count('pending')} pending, `
        + `${count('delivered')} delivered, ${count('failed')} failed · `,
        h('span#dropped', { dataset: { dropped: String(r.dropped) } }, `${r.dropped} dropped`),
        ' (oldest pending over the bound of 10,000)');
      const headers = ['id', 'type', 'status', 'attempts', 'last status', 'next attempt', 'created'];
      if (canAct) headers.push('');
      replace(listBox, table(headers, rows.map(row), 'No delivery yet: nothing this webhook takes has happened.'));
      more.hidden = rows.length < limit || limit >= MAX;
      again(rows.some((d) => d.status === 'pending') ? POLL_MS : IDLE_MS);
    } catch (e) {
      if (gone || mine !== reads) return;
      slot.error(e);
      again(IDLE_MS);
    }
  }

  const spec = ctx.el.spec || {};
  const target = h('p#webhook-target', 'POSTs ', h('span.mono', (spec.events || []).join(', ')),
    ' to ', h('span.mono', spec.url || '—'),
    spec.enabled === false ? h('span', ' · ', badge('disabled', 'warning'), ' no new deliveries are written') : null);

  const reload = h('button#reload-deliveries', 'Refresh');
  reload.addEventListener('click', () => act(reload, slot, list));
  let actions;
  if (canAct) {
    const test = h('button#send-test', { title: 'one webhook.test event, to this webhook only' }, 'Send test');
    test.addEventListener('click', () => act(test, slot, async () => {
      const r = await post(op(circle, slug, 'test'), {});
      slot.notice(`Test event ${r.id} written: ${r.status}.`);
      await list();
    }));
    actions = h('div.row', test, reload);
  } else {
    actions = h('div.row', reload, h('span.muted#read-only-note', 'Redeliver and Send test need the member role.'));
  }

  // Only the webhook's own events: its reads are ops too, and their op
  // events must not read the list again.
  const refresh = throttle(list, 500);
  const unsubscribe = ctx.subscribe((ev) => { if (ev.type.startsWith('webhook.')) refresh(); });

  replace(box, slot.el, target, actions, h('h2', 'Deliveries'), summary, listBox, more);
  await list();
  return () => { gone = true; clearTimeout(timer); unsubscribe(); };
}
