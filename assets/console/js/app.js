// The console's entry: sign-in, the header, and a router over
// /console/, /console/{circle}, /console/{circle}/{slug}[/{tab}].
// Pages are modules loaded on first use, so the first load stays small.

import { token, get, whenUnauthorized } from './api.js';
import { h, replace, errorBox, link, navigate } from './ui.js';

const main = document.getElementById('main');
const who = document.getElementById('who');
let me = null;
let leave = null; // the current page's cleanup (closes its event stream)
let signInMessage = null;

whenUnauthorized((err) => {
  token.clear();
  me = null;
  signInMessage = `Signed out: the server refused the token (${err.message}). Paste a valid token to go on.`;
  render();
});

function signIn() {
  const input = h('input#token', { type: 'password', autocomplete: 'off', placeholder: 'edt_…', required: true, 'aria-label': 'token' });
  const slot = h('div');
  const form = h('form.signin', {
    novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) return replace(slot, errorBox({ message: 'Paste a token first.' }));
      token.set(t);
      signInMessage = null;
      render();
    },
  },
  h('h1', 'Sign in to elementd'),
  h('p', 'Paste an elementd token (', h('code', 'elementd token create'), ', or ', h('code', 'data/admin.token'),
    ' for the first admin). It stays in this tab only and is sent as a bearer header.'),
  signInMessage ? h('div.error#signin-message', { role: 'alert' }, signInMessage) : null,
  h('label', { for: 'token' }, 'Token'), input, slot,
  h('button.primary#signin', { type: 'submit' }, 'Sign in'));
  replace(main, form);
  replace(who);
  input.focus();
}

function header() {
  replace(who,
    h('span#whoami', `${me.circle === '*' ? 'platform' : me.circle} · ${me.role}`),
    ' ',
    h('button#signout', { onclick: () => { token.clear(); me = null; signInMessage = 'Signed out.'; render(); } }, 'Sign out'));
}

// Route: ['acme', 'chat', 'live'] from /console/acme/chat/live.
function route() {
  const rest = location.pathname.replace(/^\/console\/?/, '');
  return rest.split('/').filter(Boolean).map(decodeURIComponent);
}

async function render() {
  if (leave) { leave(); leave = null; }
  if (!token.get()) return signIn();
  if (!me) {
    try {
      me = await get('/api/ops/whoami');
    } catch (e) {
      if (e.status !== 401) replace(main, errorBox(e));
      return;
    }
  }
  header();
  const [circle, slug, tab] = route();
  replace(main, h('p.muted', 'Loading…'));
  try {
    if (!circle) {
      const m = await import('./circles.js');
      leave = await m.circles(main, me);
    } else if (!slug) {
      const m = await import('./circles.js');
      leave = await m.circle(main, me, circle);
    } else {
      const m = await import('./element.js');
      leave = await m.element(main, me, circle, slug, tab || 'properties');
    }
  } catch (e) {
    if (e.status !== 401) {
      // A missing element still has its circle to go back to.
      const crumbs = slug
        ? [link('/console/', 'Circles'), ' / ', link(`/console/${encodeURIComponent(circle)}`, circle), ' /']
        : [link('/console/', 'Circles'), ' /'];
      replace(main, h('nav.crumbs', crumbs), errorBox(e));
    }
  }
}

// A page the browser keeps in its back/forward cache would keep its event
// stream open, and with it one of the few connections the browser allows
// per host: after a handful of such pages every request waits. Close it
// on the way out; draw the page afresh if it comes back.
window.addEventListener('pagehide', () => { if (leave) { leave(); leave = null; } });
window.addEventListener('pageshow', (e) => { if (e.persisted) render(); });
window.addEventListener('popstate', render);
window.addEventListener('console:navigate', render);
document.getElementById('home').addEventListener('click', (e) => { e.preventDefault(); navigate('/console/'); });
render();
