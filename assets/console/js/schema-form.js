// A form built from a type's JSON Schema (`GET /api/types/{type}` →
// `properties`). Each field carries its path as the server names it in a
// 422's details (`spec/connection/max_connections`), so every finding can
// be shown next to its field.

import { h, replace } from './ui.js';

const TEXT_LIST = 'comma separated';

// schemaForm(schema, value, {readOnly: ['environments']}) →
// {el, read(), showErrors(details) → unplaced, clearErrors()}
export function schemaForm(schema, value, opts = {}) {
  const fields = [];
  const readOnly = new Set(opts.readOnly || []);
  const el = h('div.schema-form', objectFields(schema, value || {}, 'spec', fields, readOnly, true));
  return {
    el,
    read: () => readObject(schema, fields, 'spec'),
    clearErrors: () => {
      el.querySelectorAll('.field-error').forEach((e) => replace(e));
      el.querySelectorAll('.invalid').forEach((e) => e.classList.remove('invalid'));
    },
    showErrors: (details) => placeErrors(el, details),
  };
}

function objectFields(schema, value, path, fields, readOnly, top) {
  const props = schema.properties || {};
  return Object.entries(props).map(([key, sub]) => {
    if (top && readOnly.has(key)) return readOnlyField(key, value[key], `${path}/${key}`);
    return field(key, sub, value[key], `${path}/${key}`, fields, readOnly);
  });
}

function readOnlyField(key, v, path) {
  return h('div.field.read-only', { dataset: { path } },
    h('label', key, h('small', ' (server-owned)')),
    h('pre', v === undefined ? '—' : JSON.stringify(v, null, 2)));
}

function kind(schema) {
  const t = Array.isArray(schema.type) ? schema.type.find((x) => x !== 'null') : schema.type;
  if (schema.enum) return 'enum';
  if (t === 'object' && schema.properties) return 'object';
  if (t === 'array' && schema.items && schema.items.type === 'string') return 'strings';
  if (t === 'integer' || t === 'number' || t === 'boolean' || t === 'string') return t;
  return 'json';
}

function field(key, schema, v, path, fields, readOnly) {
  const k = kind(schema);
  const value = v === undefined ? schema.default : v;
  const help = schema.description ? h('small.help', schema.description) : null;
  if (k === 'object') {
    return h('fieldset.field', { dataset: { path } }, h('legend', key), help,
      h('div.field-error'),
      objectFields(schema, value || {}, path, fields, readOnly, false));
  }
  const id = 'f-' + path.replace(/[^a-z0-9]+/gi, '-');
  let input;
  if (k === 'enum') {
    input = h('select', { id, name: path },
      schema.default === undefined ? h('option', { value: '' }, '—') : null,
      schema.enum.map((o) => h('option', { value: String(o) }, String(o))));
    input.value = value === undefined ? '' : String(value);
  } else if (k === 'boolean') {
    input = h('input', { id, name: path, type: 'checkbox', checked: !!value });
  } else if (k === 'integer' || k === 'number') {
    input = h('input', { id, name: path, type: 'number', step: k === 'integer' ? '1' : 'any',
      min: schema.minimum, max: schema.maximum, value: value === undefined ? '' : String(value) });
  } else if (k === 'strings') {
    input = h('input', { id, name: path, type: 'text', placeholder: TEXT_LIST,
      value: Array.isArray(value) ? value.join(', ') : '' });
  } else if (k === 'string') {
    input = h('input', { id, name: path, type: 'text', value: value == null ? '' : String(value) });
  } else {
    input = h('textarea', { id, name: path, rows: 3, placeholder: 'JSON (or plain text)',
      value: value === undefined ? '' : (typeof value === 'string' ? value : JSON.stringify(value, null, 2)) });
  }
  fields.push({ path, kind: k, input, schema });
  const check = k === 'boolean';
  return h('div.field', { dataset: { path } },
    check ? h('label', { for: id }, input, ' ', key) : h('label', { for: id }, key),
    check ? null : input, help, h('div.field-error'));
}

// The spec as the form holds it; empty optional fields are left out (the
// caller sends null for keys the element had, to remove them).
function readObject(schema, fields, path) {
  const out = {};
  for (const [key, sub] of Object.entries(schema.properties || {})) {
    const p = `${path}/${key}`;
    const v = kind(sub) === 'object'
      ? readObject(sub, fields, p)
      : readField(fields.find((f) => f.path === p));
    if (v !== undefined && !(kind(sub) === 'object' && !Object.keys(v).length)) out[key] = v;
  }
  return out;
}

function readField(f) {
  if (!f) return undefined;
  const raw = f.input.value;
  switch (f.kind) {
    // Unchecked and without a default: left out too (hooks.connect), so
    // an optional object is not sent holding only a false.
    case 'boolean': return f.input.checked || f.schema.default !== undefined ? f.input.checked : undefined;
    case 'integer':
    case 'number':
      // Sent as typed, even when not a number, so the server names it.
      return raw === '' ? undefined : (isNaN(Number(raw)) ? raw : Number(raw));
    // Empty and without a default: left out, so an optional object
    // (auth.jwt) is not sent half made.
    case 'strings':
      if (raw.trim() === '') return f.schema.default === undefined ? undefined : [];
      return raw.split(',').map((s) => s.trim()).filter(Boolean);
    case 'enum': return raw === '' ? undefined : raw;
    case 'string': return raw === '' ? undefined : raw;
    default:
      if (raw.trim() === '') return undefined;
      try { return JSON.parse(raw); } catch { return raw; }
  }
}

// Details look like `spec/connection/max_connections: -4 is less than …`.
// Each goes to the deepest field whose path prefixes it; the rest are
// returned for a form-level message.
function placeErrors(root, details) {
  const unplaced = [];
  for (const d of details || []) {
    const i = d.indexOf(': ');
    let path = i > 0 ? d.slice(0, i) : '';
    const text = i > 0 ? d.slice(i + 2) : d;
    let target = null;
    while (path && !target) {
      target = root.querySelector(`[data-path="${CSS.escape(path)}"] > .field-error`);
      if (!target) path = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    }
    if (target) {
      target.append(h('div', text));
      target.closest('.field').classList.add('invalid');
    } else unplaced.push(d);
  }
  const first = root.querySelector('.field.invalid');
  if (first) first.scrollIntoView({ block: 'center' });
  return unplaced;
}

// For updates: keys the element had that the form no longer holds become
// null (the server's deep merge removes them).
export function removals(before, after, schema, keep = []) {
  const out = { ...after };
  for (const [key, sub] of Object.entries((schema && schema.properties) || {})) {
    if (!(key in (before || {})) || keep.includes(key)) continue;
    if (!(key in after)) out[key] = null;
    else if (kind(sub) === 'object' && before[key] && typeof before[key] === 'object') {
      out[key] = removals(before[key], after[key], sub);
    }
  }
  return out;
}
