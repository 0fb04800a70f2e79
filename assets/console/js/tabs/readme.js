// README: the draft's README.md rendered (markdown-it, raw HTML off, so
// the text cannot carry markup or script), and an editor that saves it
// with `readme_update` (a commit on draft and a new version).

import { get, post, op } from '../api.js';
import { h, replace, messageSlot, act, short } from '../ui.js';

let markdown = null;
async function renderer() {
  if (!markdown) {
    const { default: markdownit } = await import('../../vendor/markdown-it.min.mjs');
    markdown = markdownit({ html: false, linkify: true });
  }
  return markdown;
}

// markdown-it escapes raw HTML and refuses javascript: links; the result
// is parsed into an inert template before it enters the page.
function fragment(md, text) {
  const t = document.createElement('template');
  t.innerHTML = md.render(text);
  t.content.querySelectorAll('a').forEach((a) => { a.target = '_blank'; a.rel = 'noopener noreferrer'; });
  return t.content;
}

export async function render(box, ctx) {
  const { circle, slug } = ctx;
  const slot = messageSlot();
  const view = h('div');
  const md = await renderer();

  async function show() {
    const r = await get(op(circle, slug, 'readme'));
    const edit = h('button#readme-edit', { disabled: !ctx.can('member'), title: ctx.can('member') ? null : 'needs the member role',
      onclick: () => editor(r.content) }, 'Edit');
    replace(view, h('div.row', h('span.muted', `README.md on ${r.branch} at ${short(r.commit)}`), edit),
      h('article.markdown#readme', fragment(md, r.content || '*No README yet.*')));
  }

  function editor(content) {
    const text = h('textarea#readme-text', { rows: 18, value: content });
    const preview = h('article.markdown', fragment(md, content));
    text.addEventListener('input', () => replace(preview, fragment(md, text.value)));
    const save = h('button.primary#readme-save', 'Save');
    save.addEventListener('click', () => act(save, slot, async () => {
      const r = await post(op(circle, slug, 'readme_update'), { content: text.value });
      await ctx.refresh();
      slot.notice(`README saved as version ${r.version ?? ctx.el.version}.`, r.warnings);
      await show();
    }));
    replace(view, h('div.two', text, preview),
      h('div.row', save, h('button', { onclick: () => { slot.clear(); show(); } }, 'Cancel')));
  }

  replace(box, slot.el, view);
  await show();
}
