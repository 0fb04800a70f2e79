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

// A release asks before it acts: a modal <dialog> saying what will change,
// with a message for the record. Resolves to the message ('' allowed) on
// confirm, or null when cancelled.
export function confirmRelease(title, lines, confirmLabel) {
  return new Promise((resolve) => {
    const message = h('input#release-message', { type: 'text', maxLength: 500, placeholder: 'release message (kept with the promotion)' });
    const ok = h('button.primary#confirm-promote', { type: 'button' }, confirmLabel);
    const cancel = h('button#cancel-promote', { type: 'button' }, 'Cancel');
    const dialog = h('dialog#release-dialog',
      h('h3', title), h('ul', lines.map((l) => h('li', l))),
      h('label', 'Message', message), h('div.row', ok, cancel));
    let answer = null;
    ok.addEventListener('click', () => { answer = message.value.trim(); dialog.close(); });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.append(dialog);
    dialog.showModal();
    message.focus();
  });
}
