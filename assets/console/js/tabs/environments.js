// Environments of a project or app: what each one runs (snapshot, members
// with their versions, commits and endpoints), promotion with a preview of
// what changes, and the snapshot history with Redeploy.

import { get, post, op } from '../api.js';
import { h, replace, table, time, short, messageSlot, act, badge, link, confirmRelease } from '../ui.js';

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const envBox = h('div#environments');
  const historyBox = h('div#snapshots');

  async function environments() {
    const { environments: envs } = await get(op(circle, slug, 'environments'));
    replace(envBox, ['draft', 'demo', 'live'].map((env) => {
      const e = envs[env] || { members: [] };
      const rows = e.members.map((m) => h('tr', { dataset: { member: m.slug } },
        h('td', link(`/console/${circle}/${m.slug}`, m.slug)), h('td', m.element_type),
        h('td', m.version ? 'v' + m.version : '—'), h('td.mono', { title: m.commit || '' }, m.commit ? short(m.commit) : '—'),
        h('td.mono', m.endpoint || '')));
      const head = h('div.row', h('b', env),
        e.snapshot ? h('span.mono', { title: e.snapshot }, `snapshot ${short(e.snapshot)}`) : h('span.muted', env === 'draft' ? 'what members are now' : 'not deployed'),
        e.promoted_at ? h('span.muted', `${time(e.promoted_at)} by ${e.promoted_by || '?'}`) : null,
        env === 'draft' ? null : promoteButton(env));
      return h('div.card', { dataset: { env } }, head,
        table(['member', 'type', 'version', 'commit', 'endpoint'], rows, 'No member.'));
    }));
  }

  function promoteButton(env, snapshot) {
    const role = env === 'live' ? 'admin' : 'member';
    const id = snapshot ? null : `env-promote-${env}`;
    const b = h(snapshot ? 'button.small' : 'button.primary', {
      id, dataset: snapshot ? { redeploy: snapshot } : {},
      disabled: !ctx.can(role), title: ctx.can(role) ? null : `needs the ${role} role`,
    }, snapshot ? 'Redeploy' : `Promote to ${env}`);
    b.addEventListener('click', async () => {
      const q = { to: env };
      if (snapshot) q.snapshot = snapshot;
      let preview;
      try { preview = await get(op(circle, slug, 'promote', q)); } catch (e) { return slot.error(e); }
      const changing = preview.members.filter((m) => m.changes);
      const lines = changing.length
        ? changing.map((m) => `${m.slug}: ${m.from_version ? 'v' + m.from_version : 'nothing'} → v${m.to_version}`)
        : ['No member changes; the promotion records a snapshot.'];
      const title = snapshot ? `Redeploy ${short(snapshot)} to ${env}` : `Promote ${slug} to ${env}`;
      const message = await confirmRelease(title, lines, snapshot ? 'Redeploy' : `Promote to ${env}`);
      if (message === null) return;
      await act(b, slot, async () => {
        const body = { to: env };
        if (snapshot) body.snapshot = snapshot;
        if (message) body.message = message;
        const r = await post(op(circle, slug, 'promote'), body);
        const n = (r.changes || []).filter((c) => c.changes).length;
        slot.notice(`${env} now runs snapshot ${short(r.environment.snapshot)} (${n} member${n === 1 ? '' : 's'} changed).`, r.warnings);
        await refresh();
      });
    });
    return b;
  }

  async function history() {
    const { snapshots } = await get(op(circle, slug, 'snapshots', { limit: 50 }));
    const rows = snapshots.map((s) => h('tr', { dataset: { snapshot: s.snapshot } },
      h('td', badge(s.env, s.env === 'live' ? 'ok' : undefined)), h('td.mono', { title: s.snapshot }, short(s.snapshot)),
      h('td', Array.isArray(s.members) ? s.members.map((m) => `${m.slug} v${m.version}`).join(', ') : ''),
      h('td', s.message || ''), h('td.mono', s.promoted_by || ''), h('td', time(s.promoted_at)),
      h('td', promoteButton(s.env, s.snapshot))));
    replace(historyBox, table(['env', 'snapshot', 'members', 'message', 'by', 'at', ''], rows, 'No deployment yet.'));
  }

  async function refresh() { await Promise.all([environments(), history()]); }

  replace(box, slot.el, h('h2', 'Environments'), envBox, h('h2', 'Deployments'), historyBox);
  await refresh();
}
