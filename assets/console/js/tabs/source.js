// Source: how to clone, the three branches with ahead/behind, promotion
// (draft → demo for members, demo → live for admins), the promotion
// history with rollback, validation findings and repair.

import { get, post, op } from '../api.js';
import { h, replace, table, time, short, messageSlot, act, badge, json, confirmRelease } from '../ui.js';

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const branchesBox = h('div');
  const historyBox = h('div');
  const checkBox = h('div');
  // Each environment's running commit, from the branches.
  let running = {};

  async function branches() {
    const b = await get(op(circle, slug, 'source/branches'));
    running = Object.fromEntries(b.branches.map((x) => [x.name, x.commit]));
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
      button.addEventListener('click', async () => {
        const message = await confirmRelease(`Promote ${p.from} → ${p.to}`, [
          `${p.to} will run what ${p.from} runs now (${p.ahead} commit${p.ahead === 1 ? '' : 's'} ahead).`,
          p.to === 'live' ? 'Production clients are served the new release at once.' : 'The demo endpoint is served the new release at once.',
        ], `Promote to ${p.to}`);
        if (message === null) return;
        await act(button, slot, async () => {
          const body = { from: p.from, to: p.to };
          if (message) body.message = message;
          const r = await post(op(circle, slug, 'source/promote'), body);
          slot.notice(`${p.to} now runs ${short(r.commit)} (version ${r.version}).`, r.warnings);
          await refresh();
        });
      });
      return h('div.card', { dataset: { link: `${p.from}-${p.to}` } },
        h('div.row', h('b', `${p.from} → ${p.to}`),
          p.in_sync ? badge('in sync', 'ok') : badge(`${p.ahead} ahead, ${p.behind} behind`, 'warning'), button));
    });
    // A manifest's own source promotion moves only its spec, not its
    // members: the Environments tab releases it.
    const manifest = ctx.ty.capabilities.includes('promote');
    replace(branchesBox, table(['branch', 'commit', 'message', 'committed'], rows),
      manifest ? h('p.notice#use-environments', 'A ', ctx.ty.name, ' is released with its members from the ',
        h('a', { href: `/console/${circle}/${slug}/environments` }, 'Environments'), ' tab.') : h('div.two', links));
  }

  async function history() {
    const { promotions } = await get(op(circle, slug, 'source/promotions'));
    const rows = promotions.map((p) => {
      const role = p.env === 'live' ? 'admin' : 'member';
      // The release an environment runs now is no place to roll back to.
      if (running[p.env] === p.commit) {
        return row(p, badge('running', 'ok'));
      }
      const back = h('button.small', { dataset: { rollback: p.commit }, disabled: !ctx.can(role), title: ctx.can(role) ? `point ${p.env} back at this release` : `needs the ${role} role` }, 'Roll back here');
      back.addEventListener('click', async () => {
        const message = await confirmRelease(`Roll ${p.env} back`, [
          `${p.env} will run ${short(p.commit)}${p.version ? ` (version ${p.version})` : ''} instead of ${short(running[p.env] || '')}.`,
          'The rollback is recorded as a promotion; nothing is deleted.',
        ], `Roll ${p.env} back`);
        if (message === null) return;
        await act(back, slot, async () => {
          const body = { env: p.env, to: p.commit };
          if (message) body.message = message;
          const r = await post(op(circle, slug, 'source/rollback'), body);
          slot.notice(`${p.env} rolled back to ${short(r.commit)} (version ${r.version}).`, r.warnings);
          await refresh();
        });
      });
      return row(p, back);
    });
    replace(historyBox, table(['env', 'how', 'commit', 'version', 'message', 'actor', 'at', ''], rows, 'No promotion yet.'));
  }

  function row(p, action) {
    return h('tr', { dataset: { env: p.env, commit: p.commit } }, h('td', badge(p.env, p.env === 'live' ? 'ok' : undefined)), h('td', p.rollback ? 'rollback' : `from ${p.from}`),
      h('td.mono', { title: p.commit }, short(p.commit)), h('td', p.version ? 'v' + p.version : '—'),
      h('td', p.message || ''), h('td.mono', p.actor || ''), h('td', time(p.at)), h('td', action));
  }


  // History reads which commit each environment runs.
  async function refresh() { await branches(); await history(); }

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
