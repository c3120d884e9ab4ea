// A small syntax highlighter for code blocks: one left-to-right scan that marks comments,
// strings, numbers and keywords (and nothing else) as <span class="tok-*"> with text content.
// It knows no grammar, so it can be wrong in odd corners (a regex literal in JavaScript, a
// heredoc in shell), and is never slower than linear in the code's length. Like the Markdown
// renderer, it only ever creates Text nodes from the code.

const C_FAMILY = { line: ['//'], block: [['/*', '*/']], quotes: ['"', "'", '`'] };
const HASH = { line: ['#'], block: [], quotes: ['"', "'"] };

function words(list) {
  return new Set(list.split(/\s+/));
}

const LITERALS = words('true false null undefined None True False nil NULL nullptr self this Self');

const LANGUAGES = {
  javascript: {
    ...C_FAMILY,
    keywords: words(
      'async await break case catch class const continue debugger default delete do else export extends finally for from function if import in instanceof let new of return static super switch throw try typeof var void while with yield'
    ),
  },
  typescript: {
    ...C_FAMILY,
    keywords: words(
      'abstract as async await break case catch class const continue declare default do else enum export extends finally for from function if implements import in instanceof interface keyof let namespace new of private protected public readonly return static super switch throw try type typeof var void while yield'
    ),
  },
  rust: {
    line: ['//'],
    block: [['/*', '*/']],
    quotes: ['"'],
    chars: true,
    keywords: words(
      'as async await break const continue crate dyn else enum extern fn for if impl in let loop match mod move mut pub ref return static struct super trait type unsafe use where while'
    ),
  },
  c: {
    line: ['//'],
    block: [['/*', '*/']],
    quotes: ['"'],
    chars: true,
    keywords: words(
      'auto break case char class const constexpr continue default delete do double else enum extern float for goto if include inline int long namespace new private protected public return short signed sizeof static struct switch template typedef typename union unsigned using virtual void volatile while define'
    ),
  },
  go: {
    ...C_FAMILY,
    keywords: words(
      'break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var'
    ),
  },
  java: {
    ...C_FAMILY,
    keywords: words(
      'abstract boolean break byte case catch char class const continue default do double else enum extends final finally float for if implements import instanceof int interface long new package private protected public return short static super switch synchronized throw throws try void volatile while var fun val when object override'
    ),
  },
  python: {
    ...HASH,
    triple: true,
    keywords: words(
      'and as assert async await break class continue def del elif else except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield match case'
    ),
  },
  shell: {
    ...HASH,
    keywords: words(
      'if then else elif fi for while until do done case esac function in return export local set unset echo cd exit source'
    ),
  },
  sql: {
    line: ['--'],
    block: [['/*', '*/']],
    quotes: ["'", '"'],
    caseless: true,
    keywords: words(
      'select from where insert into values update set delete create table drop alter index join left right inner outer on group by order having limit offset as and or not null is in distinct union all primary key references default'
    ),
  },
  data: { line: ['#'], block: [], quotes: ['"', "'"], keywords: words('') },
};

const ALIASES = {
  js: 'javascript', jsx: 'javascript', mjs: 'javascript', node: 'javascript',
  ts: 'typescript', tsx: 'typescript',
  rs: 'rust',
  h: 'c', cpp: 'c', 'c++': 'c', cc: 'c', hpp: 'c', cs: 'java', csharp: 'java', kotlin: 'java', kt: 'java', swift: 'java',
  golang: 'go',
  py: 'python', python3: 'python',
  sh: 'shell', bash: 'shell', zsh: 'shell', console: 'shell', shellscript: 'shell',
  json: 'data', yaml: 'data', yml: 'data', toml: 'data', ini: 'data',
};

function languageOf(lang) {
  const name = (lang || '').toLowerCase();
  return LANGUAGES[name] || LANGUAGES[ALIASES[name]] || null;
}

const NUMBER = /^(0[xX][0-9a-fA-F_]+|0[bB][01_]+|\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d+)?)[a-zA-Z0-9]*/;
const WORD = /^[A-Za-z_$][\w$]*/;

/** `code` as a DocumentFragment of text and highlighted spans (plain text for unknown `lang`). */
export function highlight(code, lang) {
  const fragment = document.createDocumentFragment();
  const spec = languageOf(lang);
  if (!spec) {
    fragment.append(document.createTextNode(code));
    return fragment;
  }
  let plain = '';
  const push = (kind, text) => {
    if (plain) fragment.append(document.createTextNode(plain));
    plain = '';
    const span = document.createElement('span');
    span.className = 'tok-' + kind;
    span.textContent = text;
    fragment.append(span);
  };
  let i = 0;
  const n = code.length;
  scan: while (i < n) {
    const rest = code.slice(i, i + 3);
    for (const start of spec.line) {
      if (code.startsWith(start, i)) {
        const end = code.indexOf('\n', i);
        const stop = end < 0 ? n : end;
        push('comment', code.slice(i, stop));
        i = stop;
        continue scan;
      }
    }
    for (const [open, close] of spec.block) {
      if (code.startsWith(open, i)) {
        const end = code.indexOf(close, i + open.length);
        const stop = end < 0 ? n : end + close.length;
        push('comment', code.slice(i, stop));
        i = stop;
        continue scan;
      }
    }
    if (spec.triple && (rest === '"""' || rest === "'''")) {
      const end = code.indexOf(rest, i + 3);
      const stop = end < 0 ? n : end + 3;
      push('string', code.slice(i, stop));
      i = stop;
      continue;
    }
    const c = code[i];
    if (spec.quotes.includes(c)) {
      const stop = stringEnd(code, i, c);
      push('string', code.slice(i, stop));
      i = stop;
      continue;
    }
    if (spec.chars && c === "'") {
      // A char literal ('a', '\n'); otherwise a Rust lifetime or a stray quote.
      const ch = /^'(\\.[^']*|[^\\'])'/.exec(code.slice(i, i + 12));
      if (ch) {
        push('string', ch[0]);
        i += ch[0].length;
        continue;
      }
    }
    const prev = i > 0 ? code[i - 1] : ' ';
    if (/\d/.test(c) && !/[\w$]/.test(prev)) {
      const num = NUMBER.exec(code.slice(i, i + 64))[0];
      push('number', num);
      i += num.length;
      continue;
    }
    if (/[A-Za-z_$]/.test(c) && !/[\w$]/.test(prev)) {
      const word = WORD.exec(code.slice(i, i + 256))[0];
      const key = spec.caseless ? word.toLowerCase() : word;
      if (spec.keywords.has(key)) push('keyword', word);
      else if (LITERALS.has(word)) push('literal', word);
      else if (code[i + word.length] === '(') push('function', word);
      else plain += word;
      i += word.length;
      continue;
    }
    plain += c;
    i++;
  }
  if (plain) fragment.append(document.createTextNode(plain));
  return fragment;
}

/** The index after the string that opens at `start` with `quote` (a backslash escapes). */
function stringEnd(code, start, quote) {
  let i = start + 1;
  while (i < code.length) {
    const c = code[i];
    if (c === '\\') i += 2;
    else if (c === quote) return i + 1;
    // Only backtick strings span lines; an unclosed quote ends at the line's end.
    else if (c === '\n' && quote !== '`') return i;
    else i++;
  }
  return code.length;
}
