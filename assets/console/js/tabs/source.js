// Source: how to clone, the three branches with ahead/behind, promotion
// (draft → demo for members, demo → live for admins), the promotion
// history with rollback, validation findings and repair.

import { get, post, op } from '../api.js';
import { h, replace, table, time, short, messageSlot, act, badge, json } from '../ui.js';

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const branchesBox = h('div');
  const historyBox = h('div');
  const checkBox = h('div');

  async function branches() {
    const b = await get(op(circle, slug, 'source/branches'));
    const rows = b.branches.map((x) => h('tr', { dataset: { branch: x.name } },
      h('td', h('b', x.name)), h('td.mono', { title: x.commit }, short(x.commit)), h('td', x.message || ''),
      h('td', time(x.committed_at))));
    const links = b.promotions.map((p) => {
      const role = p.to === 'live' ? 'admin' : 'member';
      const allowed = ctx.can(role);
      const button = h(`button.primary#promote-${p.to}`, {
        disabled: !allowed || p.in_sync,
        title: !allowed ? `needs the ${role} role` : p.in_sync ? 'already in sync' : null,
      }, `Promote ${p.from} → ${p.to}`);
      button.addEventListener('click', () => act(button, slot, async () => {
        const r = await post(op(circle, slug, 'source/promote'), { from: p.from, to: p.to });
        slot.notice(`${p.to} now runs ${short(r.commit)} (version ${r.version}).`, r.warnings);
        await refresh();
      }));
      return h('div.card', { dataset: { link: `${p.from}-${p.to}` } },
        h('div.row', h('b', `${p.from} → ${p.to}`),
          p.in_sync ? badge('in sync', 'ok') : badge(`${p.ahead} ahead, ${p.behind} behind`, 'warning'), button));
    });
    replace(branchesBox, table(['branch', 'commit', 'message', 'committed'], rows), h('div.two', links));
  }

  async function history() {
    const { promotions } = await get(op(circle, slug, 'source/promotions'));
    const rows = promotions.map((p) => {
      const role = p.env === 'live' ? 'admin' : 'member';
      const back = h('button.small', { disabled: !ctx.can(role), title: ctx.can(role) ? `point ${p.env} back at this release` : `needs the ${role} role` }, 'Roll back here');
      back.addEventListener('click', () => act(back, slot, async () => {
        const r = await post(op(circle, slug, 'source/rollback'), { env: p.env, to: p.commit });
        slot.notice(`${p.env} rolled back to ${short(r.commit)} (version ${r.version}).`, r.warnings);
        await refresh();
      }));
      return h('tr', h('td', badge(p.env, p.env === 'live' ? 'ok' : undefined)), h('td', p.rollback ? 'rollback' : `from ${p.from}`),
        h('td.mono', { title: p.commit }, short(p.commit)), h('td', p.version ? 'v' + p.version : '—'),
        h('td', p.message || ''), h('td.mono', p.actor || ''), h('td', time(p.at)), h('td', back));
    });
    replace(historyBox, table(['env', 'how', 'commit', 'version', 'message', 'actor', 'at', ''], rows, 'No promotion yet.'));
  }

  async function refresh() { await Promise.all([branches(), history()]); }

  const validate = h('button#validate', 'Validate draft');
  validate.addEventListener('click', () => act(validate, slot, async () => {
    const r = await post(op(circle, slug, 'source/validate'), { branch: 'draft' });
    replace(checkBox, h('h3', `validate ${r.branch} at ${short(r.commit)}`),
      r.valid ? h('div.notice', `Valid: ${r.files} files, no finding.`)
        : table(['file', 'rule', 'finding'], r.findings.map((f) => h('tr', h('td.mono', f.file || ''), h('td', f.rule || ''), h('td', f.message || json(f))))));
  }));
  const repair = h('button#repair', 'Check drift');
  repair.addEventListener('click', () => act(repair, slot, async () => {
    const r = await post(op(circle, slug, 'source/repair'), { dry_run: true });
    const fix = h('button.danger#repair-now', { disabled: !ctx.can('member') || r.in_sync }, 'Repair from the database');
    fix.addEventListener('click', () => act(fix, slot, async () => {
      const done = await post(op(circle, slug, 'source/repair'), { dry_run: false });
      replace(checkBox, h('div.notice', done.in_sync ? 'Repaired: git matches the database.' : 'Some drift remains.'), h('pre', json(done)));
      await refresh();
    }));
    replace(checkBox, h('h3', 'drift between database and git'),
      r.in_sync ? h('div.notice', 'In sync: nothing to repair.') : h('pre', json(r.drift)), r.in_sync ? null : fix);
  }));

  const status = await get(op(circle, slug, 'source/status'));
  replace(box, slot.el,
    h('h2', 'Clone'),
    h('pre#clone', `git clone ${cloneUrl(status.clone_url)}\n${status.checkout.slice(1).join('\n')}`),
    h('p.muted', status.auth.hint),
    status.warnings.length ? h('ul.warnings', status.warnings.map((w) => h('li', '⚠ ' + w))) : null,
    h('h2', 'Branches'), branchesBox,
    h('h2', 'Promotions'), historyBox,
    h('h2', 'Checks'), h('div.row', validate, repair), checkBox);
  await refresh();
}

// The clone URL with a user name in it, so git asks for the token as the
// password.
function cloneUrl(url) {
  try {
    const u = new URL(url);
    u.username = 'token';
    return u.toString();
  } catch { return url; }
}
