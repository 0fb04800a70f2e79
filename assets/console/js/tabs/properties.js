// Properties: name, intention and the spec as a form from the type's
// schema. Saving is one `update`; its warnings are shown, a 422's
// findings go next to their fields.

import { patch, op } from '../api.js';
import { h, replace, messageSlot, act } from '../ui.js';
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
  const save = h('button.primary#save', { type: 'submit', disabled: !ctx.can('member'),
    title: ctx.can('member') ? null : 'needs the member role' }, 'Save');

  function fill(el) {
    name.value = el.name || '';
    intention.value = el.intention || '';
    form = schemaForm(ty.properties, el.spec, { readOnly });
    replace(specBox, form.el);
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
  replace(box, el);
}
