// Markdown to DOM, for model answers. Model text is untrusted (a model can write `<script>`),
// so nothing here parses HTML: every piece of text becomes a Text node (`textContent`,
// `createTextNode`) inside elements this code creates, and raw HTML in the input is shown as the
// characters it is. Links are kept only for http(s) and mailto URLs.
//
// The subset is what chat models write: ATX headings, paragraphs with line breaks, emphasis
// (**, *, __, _), ~~strike~~, `code`, links and bare URLs, bullet and numbered lists (nested by
// indentation), block quotes, horizontal rules, pipe tables, and fenced code blocks (``` or ~~~,
// highlighted by highlight.js, with a Copy button). An unclosed fence runs to the end, so an
// answer still streaming renders its code block as it grows. Rendering is a pure function of the
// text: the page re-renders a streaming answer from its whole text on each update.

import { highlight } from './highlight.js';

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;
const TABLE_DIVIDER = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

/** Renders `text` as Markdown into a new DocumentFragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  renderBlocks(lines, fragment, 0);
  return fragment;
}

function el(tag, className) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  return e;
}

/** Whether a line starts a block that ends a paragraph. */
function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    (line.includes('|') && next !== undefined && TABLE_DIVIDER.test(next) && next.includes('-'))
  );
}

// `depth` bounds recursion (quotes in lists in quotes...): past it, the rest is a paragraph.
function renderBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === '') {
      i++;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const marker = m[1];
      const body = [];
      i++;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close.startsWith(marker[0].repeat(marker.length)) && /^[`~]+$/.test(close)) {
          i++;
          break;
        }
        body.push(lines[i]);
        i++;
      }
      parent.append(codeBlock(body.join('\n'), m[2]));
      continue;
    }
    if ((m = HEADING.exec(line))) {
      const h = el('h' + m[1].length);
      renderInline(m[2] || '', h);
      parent.append(h);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(el('hr'));
      i++;
      continue;
    }
    if (depth < 8 && QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      const quote = el('blockquote');
      renderBlocks(inner, quote, depth + 1);
      parent.append(quote);
      continue;
    }
    if (depth < 8 && LIST_ITEM.test(line)) {
      i = renderList(lines, i, parent, depth);
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && TABLE_DIVIDER.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      i = renderTable(lines, i, parent);
      continue;
    }
    const paragraph = [line];
    i++;
    while (i < lines.length && lines[i].trim() !== '' && !startsBlock(lines[i], lines[i + 1])) {
      paragraph.push(lines[i]);
      i++;
    }
    const p = el('p');
    renderInline(paragraph.map((l) => l.trim()).join('\n'), p);
    parent.append(p);
  }
}

/** A list starting at `lines[start]`; returns the index after it. */
function renderList(lines, start, parent, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? 'ol' : 'ul');
  if (ordered) {
    const n = parseInt(first[2], 10);
    if (n !== 1) list.start = n;
  }
  let i = start;
  while (i < lines.length) {
    const m = LIST_ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    // The item's own lines: its first, then every following line that is indented past the
    // marker, blank (if more of the item follows), or a lazy continuation of its paragraph.
    const contentIndent = indent + m[2].length + 1;
    const body = [m[4] || ''];
    i++;
    while (i < lines.length) {
      const next = lines[i];
      const nextItem = LIST_ITEM.exec(next);
      if (next.trim() === '') {
        const following = lines.slice(i + 1).find((l) => l.trim() !== '');
        if (following === undefined || leadingSpaces(following) < contentIndent) break;
        body.push('');
        i++;
        continue;
      }
      if (leadingSpaces(next) >= contentIndent || (nextItem && nextItem[1].length > indent)) {
        body.push(next.slice(Math.min(leadingSpaces(next), contentIndent)));
        i++;
        continue;
      }
      if (nextItem || startsBlock(next, lines[i + 1])) break;
      body.push(next.trim());
      i++;
    }
    const item = el('li');
    // A one-paragraph item is rendered inline (no <p> margins), like every Markdown renderer.
    if (body.every((l) => l.trim() === '' || !startsBlock(l)) && !body.slice(1).some((l) => l.trim() === '')) {
      renderInline(body.map((l) => l.trim()).join('\n'), item);
    } else {
      renderBlocks(body, item, depth + 1);
    }
    list.append(item);
    // Blank lines between items of the same list do not end it.
    let j = i;
    while (j < lines.length && lines[j].trim() === '') j++;
    const again = j < lines.length && LIST_ITEM.exec(lines[j]);
    if (j > i && again && again[1].length === indent && /\d/.test(again[2]) === ordered) i = j;
  }
  parent.append(list);
  return i;
}

function leadingSpaces(line) {
  return line.length - line.trimStart().length;
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith('|')) row = row.slice(1);
  if (row.endsWith('|') && !row.endsWith('\\|')) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** A pipe table starting at `lines[start]` (header, divider, rows); returns the index after it. */
function renderTable(lines, start, parent) {
  const head = splitRow(lines[start]);
  const align = splitRow(lines[start + 1]).map((c) =>
    c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : c.startsWith(':') ? 'left' : ''
  );
  const wrap = el('div', 'table-wrap');
  const table = el('table');
  const thead = el('thead');
  const tr = el('tr');
  head.forEach((cell, k) => {
    const th = el('th');
    if (align[k]) th.className = 'align-' + align[k];
    renderInline(cell, th);
    tr.append(th);
  });
  thead.append(tr);
  table.append(thead);
  const tbody = el('tbody');
  let i = start + 2;
  while (i < lines.length && lines[i].includes('|') && lines[i].trim() !== '') {
    const row = el('tr');
    const cells = splitRow(lines[i]);
    head.forEach((_, k) => {
      const td = el('td');
      if (align[k]) td.className = 'align-' + align[k];
      renderInline(cells[k] || '', td);
      row.append(td);
    });
    tbody.append(row);
    i++;
  }
  table.append(tbody);
  wrap.append(table);
  parent.append(wrap);
  return i;
}

/** A fenced code block: a header with the language and a Copy button, then the code. */
export function codeBlock(code, lang) {
  const figure = el('div', 'code-block');
  const header = el('div', 'code-header');
  const label = el('span', 'code-lang');
  label.textContent = lang || 'text';
  const copy = el('button', 'copy-code');
  copy.type = 'button';
  copy.textContent = 'Copy';
  copy.addEventListener('click', () => {
    copyText(code).then(
      () => flash(copy, 'Copied'),
      () => flash(copy, 'Copy failed')
    );
  });
  header.append(label, copy);
  const pre = el('pre');
  const codeEl = el('code');
  if (lang) codeEl.dataset.lang = lang.toLowerCase();
  codeEl.append(highlight(code, lang));
  pre.append(codeEl);
  figure.append(header, pre);
  return figure;
}

function flash(button, text) {
  button.textContent = text;
  setTimeout(() => {
    button.textContent = 'Copy';
  }, 1500);
}

/**
 * Copies text to the clipboard. `navigator.clipboard` exists only in secure contexts
 * (https, or http on localhost); a page opened over plain http from another machine falls
 * back to a selected, off-screen textarea and the older copy command.
 */
export function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  return new Promise((resolve, reject) => {
    const area = el('textarea', 'offscreen');
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand('copy');
    area.remove();
    if (ok) resolve();
    else reject(new Error('copy refused'));
  });
}

const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const ESCAPABLE = /[\\`*_{}[\]()#+\-.!|~<>"']/;

/**
 * Inline Markdown of `text` appended to `parent`. A delimiter without its closing partner is
 * literal text (so a half-streamed `**bold` shows its asterisks until the closing pair comes).
 */
export function renderInline(text, parent, depth = 0) {
  let plain = '';
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === '\n') {
      flush();
      parent.append(el('br'));
      i++;
      continue;
    }
    if (c === '`') {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end >= 0) {
        flush();
        const code = el('code');
        code.textContent = text.slice(i + run.length, end).replace(/\n/g, ' ').trim() || ' ';
        parent.append(code);
        i = end + run.length;
        continue;
      }
      plain += run;
      i += run.length;
      continue;
    }
    if (depth < 6) {
      const emphasis = matchEmphasis(text, i);
      if (emphasis) {
        flush();
        const e = el(emphasis.tag);
        renderInline(emphasis.inner, e, depth + 1);
        parent.append(e);
        i = emphasis.end;
        continue;
      }
      if (c === '[') {
        const link = matchLink(text, i);
        if (link) {
          flush();
          parent.append(anchor(link.url, link.label, depth));
          i = link.end;
          continue;
        }
      }
      if ((c === 'h' || c === 'H') && (i === 0 || /[\s(]/.test(text[i - 1]))) {
        const bare = /^https?:\/\/[^\s<>"]*[^\s<>".,;:!?)\]'*_]/i.exec(text.slice(i));
        if (bare) {
          flush();
          parent.append(anchor(bare[0], null, depth));
          i += bare[0].length;
          continue;
        }
      }
    }
    plain += c;
    i++;
  }
  flush();
}

function anchor(url, label, depth) {
  const a = el('a');
  a.href = url;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  if (label === null) a.textContent = url;
  else renderInline(label, a, depth + 1);
  return a;
}

// Delimiters, longest first: `**` must not be taken for two `*`.
const EMPHASIS = [
  ['**', 'strong'],
  ['__', 'strong'],
  ['~~', 'del'],
  ['*', 'em'],
  ['_', 'em'],
];

/** Emphasis opening at `i`: its tag, inner text and the index after its closing delimiter. */
function matchEmphasis(text, i) {
  for (const [mark, tag] of EMPHASIS) {
    if (!text.startsWith(mark, i)) continue;
    const after = text[i + mark.length];
    // An opener is followed by a non-space; `_` must also start a word (snake_case stays).
    if (after === undefined || /\s/.test(after) || after === mark[0]) continue;
    if (mark[0] === '_' && i > 0 && /\w/.test(text[i - 1])) continue;
    let from = i + mark.length + 1;
    for (;;) {
      const end = text.indexOf(mark, from);
      if (end < 0) break;
      const before = text[end - 1];
      const next = text[end + mark.length];
      const closes =
        !/\s/.test(before) &&
        !(mark.length === 1 && next === mark) &&
        !(mark[0] === '_' && next !== undefined && /\w/.test(next));
      if (closes) {
        return { tag, inner: text.slice(i + mark.length, end), end: end + mark.length };
      }
      from = end + 1;
    }
  }
  return null;
}

/** `[label](url)` at `i` with a URL this page will link to; any other link stays text. */
function matchLink(text, i) {
  const close = text.indexOf('](', i + 1);
  if (close < 0 || text.slice(i + 1, close).includes('\n')) return null;
  const end = text.indexOf(')', close + 2);
  if (end < 0) return null;
  const url = text.slice(close + 2, end).trim().split(/\s+/)[0];
  if (!SAFE_URL.test(url)) return null;
  return { label: text.slice(i + 1, close), url, end: end + 1 };
}
