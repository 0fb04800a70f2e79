// Versions: the history, a diff between any two versions (spec, name and
// intention, key by key) and restore (admin).

import { get, post, op } from '../api.js';
import { h, replace, table, time, messageSlot, act, badge } from '../ui.js';

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const list = h('div');
  const diffBox = h('div#diff');
  let versions = [];
  // Which version each environment runs: its newest promotion's.
  let runs = new Map();
  const pick = { a: null, b: null };

  async function load() {
    const [v, p] = await Promise.all([
      get(op(circle, slug, 'version', { history: true, limit: 50 })),
      get(op(circle, slug, 'source/promotions')).catch(() => ({ promotions: [] })),
    ]);
    runs = new Map();
    for (const x of p.promotions) {
      if (x.version && !runs.has(x.env)) runs.set(x.env, x.version);
    }
    versions = v.versions;
    pick.b = versions[0] ? versions[0].version : null;
    pick.a = versions[1] ? versions[1].version : pick.b;
    draw();
  }

  function radio(side, n) {
    return h('input', { type: 'radio', name: `diff-${side}`, value: String(n), checked: pick[side] === n,
      'aria-label': `diff ${side === 'a' ? 'from' : 'to'} v${n}`,
      onchange: () => { pick[side] = n; diff(); } });
  }

  function restoreButton(n) {
    const b = h('button.small', { dataset: { restore: n }, disabled: !ctx.can('admin') || n === ctx.el.version,
      title: ctx.can('admin') ? null : 'needs the admin role' }, 'Restore');
    let armed = false;
    b.addEventListener('click', () => {
      // Two clicks: the first arms it, so a stray click restores nothing.
      if (!armed) {
        armed = true;
        replace(b, `Confirm restore v${n}`);
        setTimeout(() => { armed = false; replace(b, 'Restore'); }, 6000);
        return;
      }
      act(b, slot, async () => {
        const el = await post(op(circle, slug, 'restore'), { version: n });
        await ctx.refresh();
        slot.notice(`Restored v${n} as version ${el.version}.`, el.warnings);
        await load();
      });
    });
    return b;
  }

  function draw() {
    const rows = versions.map((v) => h('tr', { dataset: { version: v.version } },
      h('td', radio('a', v.version)), h('td', radio('b', v.version)),
      h('td', h('b', 'v' + v.version), ...['demo', 'live'].filter((e) => runs.get(e) === v.version)
        .map((e) => badge(e, e === 'live' ? 'ok' : undefined))),
      h('td', v.message || ''), h('td.mono', v.author || ''),
      h('td', time(v.created_at)), h('td', restoreButton(v.version))));
    replace(list, table(['from', 'to', 'version', 'message', 'author', 'time', ''], rows));
    diff();
  }

  function diff() {
    const a = versions.find((v) => v.version === pick.a);
    const b = versions.find((v) => v.version === pick.b);
    if (!a || !b) return replace(diffBox);
    const before = flatten({ name: a.name, intention: a.intention, spec: a.spec });
    const after = flatten({ name: b.name, intention: b.intention, spec: b.spec });
    const keys = [...new Set([...before.keys(), ...after.keys()])].sort();
    const rows = [];
    for (const k of keys) {
      const x = before.get(k);
      const y = after.get(k);
      if (x === y) continue;
      const change = x === undefined ? 'added' : y === undefined ? 'removed' : 'changed';
      rows.push(h(`tr.${change}`, h('td.mono', k), h('td.mono', x ?? ''), h('td.mono', y ?? ''), h('td', change)));
    }
    replace(diffBox, h('h2', `Diff v${a.version} → v${b.version}`),
      table(['key', 'v' + a.version, 'v' + b.version, ''], rows, 'No difference.'));
  }

  replace(box, slot.el, diffBox, h('h2', 'History'), list);
  await load();
}

// {a: {b: 1}, l: [1, 2]} → "a.b" = "1", "l" = "[1,2]": lists compare whole,
// as updates replace them whole.
function flatten(v, prefix = '', out = new Map()) {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    if (!keys.length && prefix) out.set(prefix, '{}');
    for (const k of keys) flatten(v[k], prefix ? `${prefix}.${k}` : k, out);
  } else if (v !== undefined) {
    out.set(prefix, JSON.stringify(v));
  }
  return out;
}
