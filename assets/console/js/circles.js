// Circles, and the elements of one circle: a filterable list with live
// connection counts and their last 15 minutes as sparklines, and a create
// form built from the chosen type's schema.

import { get, post, op, stream } from './api.js';
import { h, replace, link, navigate, badge, time, table, messageSlot, act, throttle, tokenBadge } from './ui.js';
import { schemaForm } from './schema-form.js';
import { sparkline } from './chart.js';

export async function circles(main, me) {
  const { circles: list } = await get('/api/ops/list');
  const rows = list.map((c) => h('tr',
    h('td', link(`/console/${c.slug}`, c.slug)), h('td', c.name), h('td', badge(c.state)),
    h('td', 'v' + c.version), h('td', time(c.updated_at))));
  const slot = messageSlot();
  const slug = h('input#circle-slug', { type: 'text', placeholder: 'new circle slug' });
  const create = me.circle === '*' && me.role === 'admin'
    ? h('form.row', {
      onsubmit: (e) => {
        e.preventDefault();
        act(e.submitter, slot, async () => {
          const c = await post('/api/ops/create', { element_type: 'circle', slug: slug.value.trim() });
          navigate(`/console/${c.slug}`);
        });
      },
    }, slug, h('button.primary', { type: 'submit' }, 'Create circle'))
    : null;
  replace(main, h('h1', 'Circles'), table(['circle', 'name', 'state', 'version', 'updated'], rows,
    'No circle yet.'), create, slot.el);
}

// The circle page. Returns a cleanup that closes its event stream.
export async function circle(main, me, slug) {
  const [c, circleType] = await Promise.all([get(`/api/${slug}`), get('/api/types/circle')]);
  const types = circleType.relationships.contains;
  const filter = { type: '', state: '' };
  const body = h('div');
  const counts = new Map(); // slug -> <td> of its live connection count
  const listSlot = messageSlot();
  let cursor = null;

  const typeSel = h('select#filter-type', { onchange: () => { filter.type = typeSel.value; load(true); } },
    h('option', { value: '' }, 'any type'), types.map((t) => h('option', { value: t }, t)));
  const stateSel = h('select#filter-state', { onchange: () => { filter.state = stateSel.value; load(true); } },
    h('option', { value: '' }, 'ready and disabled'), ['ready', 'disabled', 'deleted'].map((s) => h('option', { value: s }, s)));
  const more = h('button', { hidden: true, onclick: () => load(false) }, 'More');
  const tbody = h('tbody');

  // The count is every node's (connections); the sparkline is this
  // node's last 15 minutes (series).
  async function count(el) {
    const cell = counts.get(el.slug);
    if (!cell) return;
    try {
      const conns = await get(op(slug, el.slug, 'connections'));
      replace(cell.count, String(conns.length));
    } catch (e) {
      replace(cell.count, h('span.muted', { title: e.message }, '?'));
    }
  }

  async function spark(s) {
    const cell = counts.get(s);
    if (!cell) return;
    try {
      const series = await get(op(slug, s, 'series'));
      const values = [...series.samples, series.current].map((x) => x.connections);
      const peak = Math.max(...values);
      replace(cell.spark, sparkline(values, `${s}: live connections over the last 15 minutes on this node, peak ${peak}`));
    } catch (e) {
      replace(cell.spark, h('span.muted', { title: e.message }, ''));
    }
  }

  async function load(fresh) {
    listSlot.clear();
    if (fresh) { cursor = null; tbody.replaceChildren(); counts.clear(); }
    try {
      const page = await get(op(slug, null, 'list', { type: filter.type, state: filter.state, limit: 50, cursor }));
      for (const el of page.elements) {
        const live = el.element_type === 'websocket' && el.state === 'ready';
        const parts = { count: h('span.count', live ? '…' : '—'), spark: h('span.spark') };
        const cell = h('td.conn', parts.count, ' ', parts.spark);
        if (live) counts.set(el.slug, parts);
        tbody.append(h('tr', { dataset: { slug: el.slug } },
          h('td', h('span.symbol', el.symbol || '?')),
          h('td', link(`/console/${slug}/${el.slug}`, el.slug), h('div.muted', el.name)),
          h('td', el.element_type), h('td', badge(el.state), el.token_status ? [' ', tokenBadge(el.token_status)] : null),
          h('td', 'v' + el.version), cell,
          h('td', time(el.updated_at))));
        if (live) { count(el); spark(el.slug); }
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!tbody.children.length) tbody.append(h('tr', h('td', { colspan: 7 }, h('span.muted', 'No elements match.'))));
    } catch (e) {
      listSlot.error(e);
    }
  }

  // Connection counts follow the circle's live events, at most once a
  // second per element.
  const recount = new Map();
  const stop = stream(`/api/${slug}/ops/events`, (ev) => {
    if (!ev.type.startsWith('ws.connection.')) return;
    const s = ev.data.element && ev.data.element.slug;
    if (!counts.has(s)) return;
    if (!recount.has(s)) recount.set(s, throttle(() => { count({ slug: s }); spark(s); }, 1000));
    recount.get(s)();
  });

  // The sparklines move without events too (a sample every 10 s).
  const sparks = setInterval(() => { for (const s of counts.keys()) spark(s); }, 10000);

  replace(body,
    h('div.filters', h('label', 'type', typeSel), h('label', 'state', stateSel)),
    h('table#elements', h('thead', h('tr', ['', 'element', 'type', 'state', 'version', 'live connections', 'updated'].map((x) => h('th', x)))), tbody),
    more, listSlot.el);
  const canWrite = me.role !== 'viewer';
  const creator = h('div');
  replace(main,
    h('nav.crumbs', link('/console/', 'Circles'), ' / '),
    h('div.title', h('span.symbol', c.symbol || 'Ci'), h('h1', c.name || c.slug), badge(c.state),
      h('div.actions', h('button.primary#new-element', {
        disabled: !canWrite, title: canWrite ? null : 'needs the member role',
        onclick: () => createForm(creator, slug, types),
      }, 'New element'))),
    c.intention ? h('p.muted', c.intention) : null,
    creator, body);
  await load(true);
  return () => { clearInterval(sparks); stop(); };
}

// The create form: type, slug, name, intention and the type's spec fields
// with their defaults. A 422 puts each finding next to its field.
async function createForm(box, circle, types) {
  const slot = messageSlot();
  const typeSel = h('select#create-type', types.map((t) => h('option', { value: t }, t)));
  typeSel.value = types.includes('websocket') ? 'websocket' : types[0];
  const slug = h('input#create-slug', { type: 'text', placeholder: 'chat' });
  const name = h('input#create-name', { type: 'text', placeholder: 'defaults from the slug' });
  const intention = h('input#create-intention', { type: 'text' });
  const specBox = h('div');
  let form = null;
  let asked = 0;
  async function loadType() {
    // A type chosen while the previous one loads wins: a late answer for
    // the earlier choice is dropped.
    const mine = ++asked;
    const ty = await get(`/api/types/${typeSel.value}`);
    const path = await freePath(circle, ty);
    if (mine !== asked) return;
    form = schemaForm(ty.properties, path ? { path: path.path } : {}, { readOnly: ty.read_only });
    if (path && path.taken) {
      const help = form.el.querySelector('[data-path="spec/path"] > .field-error');
      if (help) help.before(h('small.help#path-hint', `${path.taken.path} is taken by ${path.taken.slug} in this circle; ${path.path} is free.`));
    }
    replace(specBox, h('h3', `${ty.display_name} spec`), h('p.muted', ty.description), form.el);
  }
  typeSel.addEventListener('change', loadType);
  const submit = h('button.primary#create-submit', { type: 'submit' }, 'Create');
  const el = h('form.card#create-form', {
    novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      form.clearErrors();
      act(submit, slot, async () => {
        const bodyFields = { element_type: typeSel.value, slug: slug.value.trim(), spec: form.read() };
        if (name.value.trim()) bodyFields.name = name.value.trim();
        if (intention.value.trim()) bodyFields.intention = intention.value.trim();
        try {
          const created = await post(op(circle, null, 'create'), bodyFields);
          if (created.token && created.token.secret) {
            // An api-token's secret is answered once: keep it in view until read.
            const done = () => navigate(`/console/${circle}/${created.slug}`);
            replace(box, h('div.card#token-created',
              h('h2', `Token ${created.slug}`),
              h('p', 'Copy the secret now: it is shown once, and never again.'),
              h('pre', h('code#token-secret', created.token.secret)),
              h('div.row', h('button.primary#token-done', { type: 'button', onclick: done }, 'I have copied it'))));
            return;
          }
          navigate(`/console/${circle}/${created.slug}`);
        } catch (err) {
          if (err.status === 422) err.details = form.showErrors(err.details);
          throw err;
        }
      });
    },
  },
  h('h2', 'New element'),
  h('div.two',
    h('div.field', { dataset: { path: 'element_type' } }, h('label', { for: 'create-type' }, 'type'), typeSel),
    h('div.field', { dataset: { path: 'slug' } }, h('label', { for: 'create-slug' }, 'slug'), slug, h('div.field-error'))),
  h('div.two',
    h('div.field', h('label', { for: 'create-name' }, 'name'), name),
    h('div.field', h('label', { for: 'create-intention' }, 'intention'), intention)),
  specBox, slot.el,
  h('div.row', submit, h('button', { type: 'button', onclick: () => box.replaceChildren() }, 'Cancel')));
  replace(box, el);
  await loadType();
  slug.focus();
}

// A path the circle's other runtime elements do not expose (paths are
// unique per circle: a taken one is a 409 PATH_CONFLICT): the default when
// free, else the default with -2, -3… → {path, taken: {path, slug}}, or
// null when the type has no path.
async function freePath(circle, ty) {
  const want = ty.capabilities.includes('runtime') && ty.properties.properties
    && ty.properties.properties.path && ty.properties.properties.path.default;
  if (!want) return null;
  const used = new Map();
  try {
    let cursor = null;
    do {
      const page = await get(op(circle, null, 'list', { type: ty.name, limit: 200, cursor }));
      // Driven elements (url set) expose no path; disabled ones keep theirs.
      for (const el of page.elements) if (!el.spec.url) used.set(el.spec.path || want, el.slug);
      cursor = page.next_cursor;
    } while (cursor);
  } catch {
    return null; // the form still works; a conflict shows as the server's 409
  }
  if (!used.has(want)) return { path: want };
  let n = 2;
  while (used.has(`${want}-${n}`)) n += 1;
  return { path: `${want}-${n}`, taken: { path: want, slug: used.get(want) } };
}
