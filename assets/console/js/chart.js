// Small charts as inline SVG, drawn here (no library: at most 91 points).
// Attributes only, never a style attribute, so the console's CSP holds.
// The numbers drawn stay on the element (data-values) for tests and for
// anyone reading the page.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

// A round top for the y axis: 1, 2, 5, 10, 20, 50…
function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= x);
}

const fmt = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1));

// points: [[ms, value]] oldest first; from/to: the time span shown.
// Returns the line's `d` and the area's, in a w×h box.
function paths(points, from, to, w, h, max) {
  // One point (a hub just started) is drawn level across the span.
  if (points.length === 1) points = [[from, points[0][1]], points[0]];
  const x = (t) => Math.max(0, ((t - from) / (to - from)) * w);
  const y = (v) => h - (v / max) * h;
  const xy = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
  if (!xy.length) return ['', ''];
  const line = 'M' + xy.join('L');
  const area = `${line}L${x(points[points.length - 1][0]).toFixed(1)},${h}L${x(points[0][0]).toFixed(1)},${h}Z`;
  return [line, area];
}

// A chart of one measure over [from, to]: its title with the latest
// value, the axis' top, and how far back it goes ("−15 min … now").
export function lineChart({ id, title, unit, points, from, to }) {
  const W = 300;
  const H = 70;
  const values = points.map(([, v]) => v);
  const latest = values.length ? values[values.length - 1] : 0;
  const peak = Math.max(0, ...values);
  const max = niceMax(peak);
  const [line, area] = paths(points, from, to, W, H, max);
  const grid = [0.5, 1].map((f) => svg('line', { x1: 0, x2: W, y1: H - f * H, y2: H - f * H, class: 'grid' }));
  const plot = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img',
    'aria-label': `${title}: ${fmt(latest)} ${unit} now, peak ${fmt(peak)}`,
  }, ...grid, svg('path', { d: area, class: 'area' }), svg('path', { d: line, class: 'line', 'vector-effect': 'non-scaling-stroke' }));
  const fig = document.createElement('figure');
  fig.className = 'chart';
  if (id) fig.id = id;
  fig.dataset.values = values.map(fmt).join(',');
  fig.dataset.latest = fmt(latest);
  fig.dataset.peak = fmt(peak);
  const cap = document.createElement('figcaption');
  const now = document.createElement('b');
  now.textContent = `${fmt(latest)} ${unit}`;
  cap.append(`${title} `, now);
  const axis = document.createElement('div');
  axis.className = 'axis';
  const secs = Math.round((to - from) / 1000);
  const back = secs < 120 ? `−${secs} s` : `−${Math.round(secs / 60)} min`;
  for (const t of [back, `top ${fmt(max)}`, 'now']) {
    const s = document.createElement('span');
    s.textContent = t;
    axis.append(s);
  }
  fig.append(cap, plot, axis);
  return fig;
}

// A sparkline for a table cell: values only, scaled to their own peak.
export function sparkline(values, label) {
  const W = 90;
  const H = 18;
  const max = niceMax(Math.max(0, ...values));
  const n = Math.max(values.length - 1, 1); // a lone value is drawn level
  const pts = (values.length === 1 ? [values[0], values[0]] : values).map((v, i) => [i, v]);
  const [line, area] = paths(pts, 0, n, W, H - 1, max);
  const el = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'sparkline', role: 'img', 'aria-label': label },
    svg('title', {}, label), svg('path', { d: area, class: 'area' }),
    svg('path', { d: line, class: 'line', 'vector-effect': 'non-scaling-stroke' }));
  el.dataset.values = values.map(fmt).join(',');
  return el;
}

// A `series` answer as [[ms, value]] per measure, the interval under way
// last.
export function seriesPoints(s) {
  const all = [...s.samples, s.current];
  const at = (x) => Date.parse(x.at);
  return {
    connections: all.map((x) => [at(x), x.connections]),
    in: all.map((x) => [at(x), x.messages_in_per_s]),
    out: all.map((x) => [at(x), x.messages_out_per_s]),
  };
}
