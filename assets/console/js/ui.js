// DOM helpers. Text always goes in as text nodes, never as HTML, so data
// from the server (names, messages, events) cannot inject markup.

// h('button.primary', {onclick}, 'Save'): tag with optional .classes and #id.
export function h(sel, attrs, ...children) {
  if (attrs == null || typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const [tag, ...rest] = sel.split(/(?=[.#])/);
  const el = document.createElement(tag || 'div');
  for (const r of rest) {
    if (r[0] === '.') el.classList.add(r.slice(1));
    else el.id = r.slice(1);
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || (k in el && k !== 'list' && typeof v !== 'string')) el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// An error envelope as the user sees it: its message, its code, and its
// details when there are any.
export function errorBox(err) {
  if (!err) return h('div.error', { hidden: true });
  const details = err.details && err.details.length ? h('ul', err.details.map((d) => h('li', d))) : null;
  return h('div.error', { role: 'alert' }, h('strong', err.code ? `${err.code}: ` : ''), err.message, details);
}

// A placeholder that shows an error or a notice in place.
export function messageSlot() {
  const el = h('div.slot');
  return {
    el,
    error(err) { replace(el, errorBox(err)); },
    notice(text, warnings) {
      replace(el, h('div.notice', { role: 'status' }, text,
        warnings && warnings.length ? h('ul.warnings', warnings.map((w) => h('li', '⚠ ' + w))) : null));
    },
    clear() { el.replaceChildren(); },
  };
}

// Runs an async action from a button: disabled while it runs, errors shown
// in the slot.
export async function act(button, slot, f) {
  button.disabled = true;
  slot.clear();
  try { return await f(); } catch (e) { slot.error(e); } finally { button.disabled = false; }
}

export function table(headers, rows, empty = 'Nothing yet.') {
  if (!rows.length) return h('p.muted', empty);
  return h('table', h('thead', h('tr', headers.map((x) => h('th', x)))),
    h('tbody', rows));
}

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return h('time', { datetime: iso, title: iso }, d.toLocaleString());
}

export const short = (commit) => (commit ? commit.slice(0, 8) : '—');

export function badge(text, kind) {
  return h('span.badge', { dataset: { kind: kind || text } }, text);
}

// An api-token's status as a whole (revoked, expired or active), as the
// list and get answers carry it.
const TOKEN_KIND = { active: 'ok', expired: 'warning', revoked: 'error' };
export function tokenBadge(status, id) {
  return h('span.badge.token', { id, dataset: { kind: TOKEN_KIND[status], tokenStatus: status }, title: 'this api-token as a whole' },
    `token ${status}`);
}

export function link(href, ...children) {
  return h('a', { href, onclick: (e) => { if (!e.ctrlKey && !e.metaKey) { e.preventDefault(); navigate(href); } } }, ...children);
}

// History navigation; the app listens for it.
export function navigate(href) {
  history.pushState(null, '', href);
  window.dispatchEvent(new Event('console:navigate'));
}

// Calls f at most once per `ms`, trailing call included.
export function throttle(f, ms) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) { again = true; return; }
    f();
    timer = setTimeout(function tick() {
      if (again) { again = false; f(); timer = setTimeout(tick, ms); } else timer = null;
    }, ms);
  };
}

export const json = (v) => JSON.stringify(v, null, 2);

// Asks before acting: a modal <dialog> saying what will change, with
// Confirm and Cancel, and (for releases) a message for the record.
// Resolves to the message ('' allowed), or true without one, on confirm;
// null when cancelled.
function ask(ids, title, lines, confirmLabel, withMessage) {
  return new Promise((resolve) => {
    const message = withMessage
      ? h('input#release-message', { type: 'text', maxLength: 500, placeholder: 'release message (kept with the promotion)' })
      : null;
    const ok = h(`button.${ids.danger ? 'danger' : 'primary'}#${ids.ok}`, { type: 'button' }, confirmLabel);
    const cancel = h(`button#${ids.cancel}`, { type: 'button' }, 'Cancel');
    const dialog = h(`dialog.confirm#${ids.dialog}`,
      h('h3', title), h('ul', lines.map((l) => h('li', l))),
      message ? h('label', 'Message', message) : null, h('div.row', ok, cancel));
    let answer = null;
    ok.addEventListener('click', () => { answer = message ? message.value.trim() : true; dialog.close(); });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.append(dialog);
    dialog.showModal();
    (message || cancel).focus();
  });
}

// A release (promote, roll back, redeploy): resolves to its message.
export function confirmRelease(title, lines, confirmLabel) {
  return ask({ dialog: 'release-dialog', ok: 'confirm-promote', cancel: 'cancel-promote' }, title, lines, confirmLabel, true);
}

// A removal (an attachment, an element): resolves to true on confirm.
// Cancel has the focus, so Enter does not remove.
export async function confirmRemoval(title, lines, confirmLabel) {
  return (await ask({ dialog: 'confirm-dialog', ok: 'confirm-ok', cancel: 'confirm-cancel', danger: true },
    title, lines, confirmLabel, false)) === true;
}
