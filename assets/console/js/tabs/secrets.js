// Secrets of an api-token: each with its status and when it was last used
// (never its value), rotation with a grace period, and revocation.

import { get, post, op } from '../api.js';
import { h, replace, table, time, messageSlot, act, badge, tokenBadge } from '../ui.js';

const KIND = { active: 'ok', expired: 'warning', revoked: 'error' };
const WEEK = 7 * 24 * 3600;

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const listBox = h('div#secrets');
  const shownOnce = h('div#new-secret');

  const whole = h('div#token-whole');
  function drawWhole() {
    const st = ctx.el.token_status;
    rotate.disabled = !ctx.can('admin') || st === 'revoked';
    revoke.disabled = !ctx.can('admin') || st === 'revoked';
    replace(whole, st ? h('p', tokenBadge(st), ' ', st === 'revoked'
      ? 'Revoked: every secret stopped for good, and rotating cannot bring it back; make a new token.'
      : st === 'expired' ? 'Expired: no secret works any more.' : 'Active: at least one secret works.') : null);
  }

  async function list() {
    const { tokens } = await get(op(circle, slug, 'tokens'));
    const rows = tokens.map((t) => h('tr', { dataset: { secret: t.id, status: t.status } },
      h('td.mono', t.id), h('td', badge(t.status, KIND[t.status])), h('td', time(t.created_at)),
      h('td', t.expires_at ? time(t.expires_at) : 'never'), h('td', t.revoked_at ? time(t.revoked_at) : ''),
      h('td', t.last_used_at ? time(t.last_used_at) : 'never')));
    replace(listBox, table(['secret', 'status', 'created', 'expires', 'revoked', 'last used'], rows, 'No secret.'));
  }

  const grace = h('input#rotate-grace', { type: 'number', min: 0, max: WEEK, step: 1, value: '0', title: 'seconds the current secrets keep working (up to a week)' });
  const rotate = h('button.primary#rotate', { disabled: !ctx.can('admin') }, 'Rotate');
  rotate.addEventListener('click', () => act(rotate, slot, async () => {
    const seconds = Number(grace.value || 0);
    const r = await post(op(circle, slug, 'rotate'), { grace_seconds: seconds });
    replace(shownOnce, h('div.notice', h('p', 'The new secret, shown this once: copy it now.'),
      h('pre.mono#new-secret-value', r.token.secret),
      h('p.muted', seconds ? `The previous secrets keep working for ${seconds} s.` : 'The previous secrets stopped now.')));
    await list();
  }));

  // Two clicks: the first arms it, so a stray click revokes nothing.
  const revoke = h('button.danger#revoke', { disabled: !ctx.can('admin') }, 'Revoke');
  let armed = false;
  revoke.addEventListener('click', () => {
    if (!armed) {
      armed = true;
      replace(revoke, 'Confirm revoke: every secret stops at once');
      return;
    }
    armed = false;
    // Drawn again once act() has enabled the button again.
    act(revoke, slot, async () => {
      const r = await post(op(circle, slug, 'revoke'), {});
      replace(revoke, 'Revoke');
      replace(shownOnce);
      slot.notice(`Revoked ${r.revoked} secret${r.revoked === 1 ? '' : 's'}.`);
      await Promise.all([list(), ctx.refresh()]);
    }).then(drawWhole);
  });

  replace(box, slot.el,
    h('h2', 'Secrets'), whole,
    h('p.muted', 'Values are never shown again after they are made; only their status and use.'),
    listBox, shownOnce,
    h('h2', 'Rotate or revoke'),
    h('div.row', h('label', 'Grace (s) ', grace), rotate, revoke));
  drawWhole();
  await list();
}
