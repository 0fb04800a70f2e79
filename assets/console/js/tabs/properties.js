// Properties: name, intention and the spec as a form from the type's
// schema. Saving is one `update`; its warnings are shown, a 422's
// findings go next to their fields. A type with backend hooks (a
// websocket) also gets a summary of them, as written (a url's
// `{{ vars.slug }}` stays a reference), and the webhooks that take its
// events, each linked to its deliveries.

import { get, patch, op } from '../api.js';
import { h, replace, messageSlot, act, link, badge } from '../ui.js';
import { schemaForm, removals } from '../schema-form.js';

const REDACTED = '[redacted]';

export function render(box, ctx) {
  const { circle, slug, ty } = ctx;
  const slot = messageSlot();
  const readOnly = ty.read_only || [];
  let form;
  const name = h('input#prop-name', { type: 'text' });
  const intention = h('input#prop-intention', { type: 'text' });
  const specBox = h('div');
  const hasHooks = !!(ty.properties && ty.properties.properties && ty.properties.properties.hooks);
  const hooksBox = hasHooks ? h('section#hooks.card') : null;
  const save = h('button.primary#save', { type: 'submit', disabled: !ctx.can('member'),
    title: ctx.can('member') ? null : 'needs the member role' }, 'Save');

  function fill(el) {
    name.value = el.name || '';
    intention.value = el.intention || '';
    form = schemaForm(ty.properties, el.spec, { readOnly });
    replace(specBox, form.el);
    if (hooksBox) drawHooks(hooksBox, circle, el.spec || {}, webhooks);
  }

  // The webhooks attached here or inherited, once per page.
  let webhooks = null;
  async function loadWebhooks() {
    try {
      const { attachments } = await get(op(circle, slug, 'attachments'));
      webhooks = attachments.filter((a) => a.source.element_type === 'webhook');
    } catch (e) {
      webhooks = [];
      slot.error(e);
    }
    drawHooks(hooksBox, circle, ctx.el.spec || {}, webhooks);
  }

  const el = h('form#properties', {
    novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      form.clearErrors();
      act(save, slot, async () => {
        const before = ctx.el.spec;
        const spec = removals(before, form.read(), ty.properties, readOnly);
        // A sensitive value shows as its placeholder; left as shown, it
        // is not sent, so the server keeps the value it holds.
        if (before && before.value === REDACTED && spec.value === REDACTED) delete spec.value;
        const body = { spec, name: name.value.trim() || ctx.el.name };
        const given = intention.value.trim();
        if (given !== (ctx.el.intention || '')) body.intention = given || null;
        try {
          const updated = await patch(op(circle, slug, 'update'), body);
          await ctx.refresh();
          fill(ctx.el);
          slot.notice(`Saved as version ${updated.version}.`, updated.warnings);
        } catch (err) {
          if (err.status === 422) err.details = form.showErrors(err.details);
          throw err;
        }
      });
    },
  },
  h('div.two',
    h('div.field', h('label', { for: 'prop-name' }, 'name'), name),
    h('div.field', h('label', { for: 'prop-intention' }, 'intention'), intention)),
  h('h3', `${ty.display_name} spec`), specBox, slot.el, h('div.row', save));
  fill(ctx.el);
  replace(box, hooksBox, el);
  if (hooksBox) loadWebhooks();
}

const HOOK_DEFAULTS = { timeout_ms: 3000, max_in_flight: 256, queue_per_connection: 32 };

function drawHooks(box, circle, spec, webhooks) {
  const hooks = spec.hooks;
  const onMessage = spec.on_message || 'emit';
  const rows = [];
  const row = (key, ...value) => rows.push(h('tr', { dataset: { hook: key } }, h('th', key), h('td', ...value)));
  if (hooks) {
    row('url', h('span.mono', hooks.url));
    row('secret', h('span.mono', hooks.secret), h('span.muted', ' (a reference; the value is never shown)'));
    row('connect', hooks.connect ? badge('on', 'ok') : badge('off'),
      h('span.muted', hooks.connect ? ' each connection is asked for before it is accepted' : ' connections are accepted without asking'));
    for (const [key, dflt] of Object.entries(HOOK_DEFAULTS)) {
      row(key, hooks[key] == null ? h('span', String(dflt), h('span.muted', ' (default)')) : String(hooks[key]));
    }
  }
  row('on_message', h('span.mono', onMessage), onMessage === 'hook'
    ? h('span.muted', ' each client message goes to the backend, in order per connection')
    : (hooks ? h('span.muted', ' messages do not go to the backend') : null));
  const hooked = webhooks === null ? h('p.muted', 'Webhooks: loading…')
    : h('p#hook-webhooks', 'Webhooks: ', webhooks.length ? webhooks.map((a, i) => [i ? ', ' : '',
      link(`/console/${circle}/${a.source.slug}/deliveries`, a.source.slug),
      a.inherited_from ? h('span.muted', ` (from ${a.inherited_from.slug})`) : null]) : h('span.muted', 'none'));
  replace(box, h('h3', 'Backend hooks'),
    hooks ? null : h('p.muted#no-hooks', 'No backend hooks: connections are accepted without asking.'),
    h('table.hooks', h('tbody', rows)), hooked);
}
