// The element page: a header with state and version, and tabs. Each tab is
// its own module, loaded when first opened. The page holds one event
// stream of the element; tabs subscribe to it while they are shown.

import { get, post, del, op, stream } from './api.js';
import { h, replace, link, badge, messageSlot, act, navigate, confirmRemoval, tokenBadge } from './ui.js';

const TABS = [
  ['properties', 'Properties'],
  ['versions', 'Versions'],
  ['readme', 'README'],
  ['environments', 'Environments', (ty) => ty.capabilities.includes('promote')],
  ['source', 'Source'],
  ['live', 'Live', (ty) => ty.capabilities.includes('runtime')],
  ['deliveries', 'Deliveries', (ty) => ty.capabilities.includes('webhook')],
  ['activity', 'Activity'],
  ['composition', 'Composition'],
  ['secrets', 'Secrets', (ty) => ty.capabilities.includes('api_token')],
];

const ROLES = ['viewer', 'member', 'admin'];

export async function element(main, me, circle, slug, tab) {
  const [el, ty] = await loadElement(circle, slug);
  const listeners = new Set();
  const streamState = h('span.badge#stream-state', { title: 'live event stream' }, 'events: connecting');
  const stop = stream(op(circle, slug, 'events'), (ev) => listeners.forEach((f) => f(ev)), (state, err) => {
    streamState.dataset.kind = state;
    replace(streamState, state === 'open' ? 'events: live' : `events: ${state}`);
    streamState.title = err ? err.message : 'live event stream';
  });

  const headerBox = h('div');
  const tabBox = h('section#tab');
  const tabs = TABS.filter(([, , only]) => !only || only(ty));
  const nav = h('nav.tabs', tabs.map(([id, label]) => h('a', {
    href: `/console/${circle}/${slug}/${id}`, id: `tab-${id}`,
    onclick: (e) => { e.preventDefault(); show(id, true); },
  }, label)));

  const ctx = {
    circle, slug, el, ty, me,
    can: (role) => ROLES.indexOf(me.role) >= ROLES.indexOf(role),
    subscribe(f) { listeners.add(f); return () => listeners.delete(f); },
    async refresh() {
      const [fresh] = await loadElement(circle, slug);
      ctx.el = fresh;
      drawHeader();
      return fresh;
    },
  };

  let leaveTab = null;
  let current = null;
  async function show(id, push) {
    if (!tabs.some(([t]) => t === id)) id = 'properties';
    if (leaveTab) { leaveTab(); leaveTab = null; }
    current = id;
    if (push) history.pushState(null, '', `/console/${circle}/${slug}/${id}`);
    nav.querySelectorAll('a').forEach((a) => a.setAttribute('aria-selected', String(a.id === `tab-${id}`)));
    replace(tabBox, h('p.muted', 'Loading…'));
    try {
      const m = await import(`./tabs/${id}.js`);
      if (current !== id) return;
      const box = h('div');
      replace(tabBox, box);
      leaveTab = (await m.render(box, ctx)) || null;
    } catch (e) {
      if (current === id) replace(tabBox, messageSlotWith(e));
    }
  }

  function drawHeader() {
    const e = ctx.el;
    const slot = messageSlot();
    const toggle = e.state === 'ready' ? 'disable' : 'enable';
    const button = e.state === 'deleted' ? null : h(`button#${toggle}`, {
      disabled: !ctx.can('admin'), title: ctx.can('admin') ? null : 'needs the admin role',
      onclick: () => act(button, slot, async () => { await post(op(circle, slug, toggle)); await ctx.refresh(); }),
    }, toggle === 'disable' ? 'Disable' : 'Enable');
    const remove = e.state === 'deleted' ? null : h('button.danger#delete', {
      disabled: !ctx.can('admin'), title: ctx.can('admin') ? null : 'needs the admin role',
      onclick: () => act(remove, slot, async () => {
        const lines = [
          `${e.slug} (${e.element_type}) is deleted: it leaves ${circle}'s list and answers no op but reads; its history stays.`,
          ...(ctx.ty.capabilities.includes('runtime') ? ['An element with live connections is not deleted (409): close them or disable it first.'] : []),
          'An element with children is not deleted (409).',
        ];
        if (!await confirmRemoval(`Delete ${e.slug}?`, lines, `Delete ${e.slug}`)) return;
        await del(op(circle, slug, 'delete', { confirm: true }));
        navigate(`/console/${circle}`);
      }),
    }, 'Delete');
    const tokenState = e.token_status ? tokenBadge(e.token_status, 'token-status') : null;
    replace(headerBox,
      h('nav.crumbs', link('/console/', 'Circles'), ' / ', link(`/console/${circle}`, circle), ' /'),
      h('div.title', h('span.symbol', e.symbol || '?'), h('h1#element-name', e.name),
        h('span.muted', `${e.element_type} · ${e.slug}`), badge(e.state), tokenState,
        h('span.badge#element-version', 'v' + e.version), streamState,
        h('div.actions', button, remove)),
      e.state_reason ? h('p.muted', 'Reason: ' + e.state_reason) : null,
      e.intention ? h('p.muted', e.intention) : null,
      slot.el);
  }

  drawHeader();
  replace(main, headerBox, nav, tabBox);
  await show(tab, false);
  return () => { if (leaveTab) leaveTab(); stop(); };
}

function messageSlotWith(err) {
  const s = messageSlot();
  s.error(err);
  return s.el;
}

const types = new Map(); // type definitions do not change while the server runs

async function loadElement(circle, slug) {
  const el = await get(op(circle, slug, 'get'));
  if (!types.has(el.element_type)) types.set(el.element_type, await get(`/api/types/${el.element_type}`));
  return [el, types.get(el.element_type)];
}
