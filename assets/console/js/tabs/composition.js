// Composition: attached modifiers and resources (compose to add, remove
// each), and the element's graph from `context` and `tree`.

import { get, post, op } from '../api.js';
import { h, replace, table, link, messageSlot, act, confirmRemoval } from '../ui.js';

export async function render(box, ctx) {
  const { circle, slug, ty } = ctx;
  const slot = messageSlot();
  const attachedBox = h('div#attachments');
  const graphBox = h('div.graph#graph');

  async function attachments() {
    const { attachments: list } = await get(op(circle, slug, 'attachments'));
    const rows = list.map((a) => {
      // An inherited attachment is removed where it is attached, not here.
      const from = a.inherited_from;
      let action;
      if (from) {
        const where = from.element_type === 'circle' ? `/console/${from.slug}` : `/console/${circle}/${from.slug}`;
        action = h('span.inherited', 'inherited from ', link(where, from.slug));
      } else {
        action = h('button.small.danger', { dataset: { remove: a.attachment_id }, disabled: !ctx.can('member') }, 'Remove');
        action.addEventListener('click', () => act(action, slot, async () => {
          const lines = await whatRemovalChanges(a);
          if (!await confirmRemoval(`Remove ${a.source.slug} from ${slug}?`, lines, `Remove ${a.source.slug}`)) return;
          await post(op(circle, slug, 'compose'), { remove: [{ attachment_id: a.attachment_id }] });
          slot.notice(`Removed ${a.source.slug}.`);
          await Promise.all([attachments(), graph()]);
        }));
      }
      return h('tr', h('td', link(`/console/${circle}/${a.source.slug}`, a.source.slug)), h('td', a.source.element_type),
        h('td', String(a.priority)), h('td', a.version_pin ? 'v' + a.version_pin : 'latest'),
        h('td', a.is_modifier ? 'modifier' : 'resource'), h('td', action));
    });
    replace(attachedBox, table(['attached', 'type', 'priority', 'pinned', 'kind', ''], rows, 'Nothing attached.'));
  }

  // The dialog's lines: which element stops taking what, and (for a
  // cascading modifier) which elements below it stop too.
  async function whatRemovalChanges(a) {
    const src = `${a.source.slug} (${a.source.element_type})`;
    const lines = [a.is_modifier
      ? `${src} stops applying to ${slug}.`
      : `${slug} stops using ${src}.`];
    const cascade = a.cascade_policy || 'none';
    if (a.is_modifier && cascade !== 'none') {
      const t = await get(op(circle, slug, 'tree', { depth: cascade === 'children' ? 1 : 10 }));
      const below = cascade === 'children' ? [...t.children, ...t.members].map((c) => c.slug) : [];
      if (cascade === 'children') {
        lines.push(below.length ? `It also stops applying to ${slug}'s children: ${below.join(', ')}.`
          : `It cascades to ${slug}'s children; ${slug} has none now.`);
      } else {
        const n = t.stats.descendants;
        lines.push(n ? `It also stops applying to everything below ${slug}: ${n} element${n === 1 ? '' : 's'}.`
          : `It cascades to everything below ${slug}; nothing is below it now.`);
      }
    }
    lines.push(`${a.source.slug} itself stays in the circle; attach it again to undo.`);
    return lines;
  }

  async function graph() {
    const [c, t] = await Promise.all([get(op(circle, slug, 'context', { depth: 2 })), get(op(circle, slug, 'tree', { depth: 3 }))]);
    const groups = new Map();
    for (const x of c.connections) {
      if (!groups.has(x.relationship)) groups.set(x.relationship, []);
      groups.get(x.relationship).push(x);
    }
    const node = (x) => h('li', x.element_type === 'circle' ? link(`/console/${x.slug}`, x.slug) : link(`/console/${circle}/${x.slug}`, x.slug),
      h('span.muted', ` ${x.element_type}${x.via && x.via !== slug ? ` via ${x.via}` : ''}`));
    replace(graphBox,
      h('div.two',
        h('div', h('h3', 'context'), groups.size ? [...groups].map(([rel, xs]) => h('div', h('b', rel), h('ul', xs.map(node)))) : h('p.muted', 'Not connected.')),
        h('div', h('h3', 'tree'),
          h('div', h('b', 'ancestors'), h('ul', t.ancestors.map(node))),
          h('div', h('b', 'children'), t.children.length ? h('ul', t.children.map(node)) : h('p.muted', 'none')),
          t.members.length ? h('div', h('b', 'members'), h('ul', t.members.map(node))) : null,
          h('p.muted', `${t.stats.descendants} descendants`))));
  }

  const ref = h('input#compose-ref', { type: 'text', placeholder: 'slug, type/slug or slug@vN' });
  const priority = h('input#compose-priority', { type: 'number', step: '1', placeholder: 'priority' });
  const add = h('button.primary#compose-add', { disabled: !ctx.can('member') }, 'Attach');
  add.addEventListener('click', () => act(add, slot, async () => {
    const item = { ref: ref.value.trim() };
    if (priority.value !== '') item.priority = Number(priority.value);
    await post(op(circle, slug, 'compose'), { add: [item] });
    slot.notice(`Attached ${item.ref}.`);
    ref.value = '';
    await Promise.all([attachments(), graph()]);
  }));
  // Types without the composition ops (modifiers, tokens, variables)
  // have no attachments to ask for: only their graph.
  const composes = (ty.ops || []).some((o) => o.name === 'attachments');
  const attachable = composes ? ty.relationships.attaches : [];
  replace(box, slot.el,
    h('h2', 'Attachments'),
    attachable.length ? h('p.muted', `A ${ty.name} takes ${attachable.join(' and ')}.`) : h('p.muted', `A ${ty.name} takes no attachment.`),
    composes ? attachedBox : null,
    attachable.length ? h('div.row', ref, priority, add) : null,
    h('h2', 'Graph'), graphBox);
  await Promise.all([composes ? attachments() : null, graph()]);
}
