// The chat page: conversations (list, switch, new), the message view, the composer, settings,
// the API key dialog, and one streamed answer at a time.
//
// State lives in `state` and localStorage (store.js); the DOM is derived from it. A streaming
// answer re-renders only its own article, at most once per animation frame, from its whole
// text. Model text reaches the DOM only through markdown.js (Text nodes) or `textContent`.

import { ApiError, apiKey, fetchModel, forgetApiKey, requestBody, setApiKey, streamChat } from './chat.js';
import { copyText, renderMarkdown } from './markdown.js';
import {
  DEFAULT_SETTINGS,
  loadConversations,
  loadCurrentId,
  loadSettings,
  newId,
  saveConversations,
  saveCurrentId,
  saveSettings,
} from './store.js';

const $ = (id) => document.getElementById(id);

const state = {
  conversations: loadConversations(),
  currentId: loadCurrentId(),
  settings: loadSettings(),
  model: null,
  // The answer being streamed: { conversation, message, controller }.
  streaming: null,
};

// Each rendered message's article, to update a streaming answer in place.
const articles = new WeakMap();

function current() {
  return state.conversations.find((c) => c.id === state.currentId) || null;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, onClick, className) {
  const b = el('button', className, label);
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

function persist() {
  const ok = saveConversations(state.conversations);
  $('composer-note').textContent = ok ? '' : 'Browser storage is full: this chat will not be kept.';
}

// ---- Conversations -------------------------------------------------------------------------

function renderConversationList() {
  const nav = $('conversations');
  nav.replaceChildren();
  for (const c of state.conversations) {
    const item = el('div', 'conversation' + (c.id === state.currentId ? ' active' : ''));
    const open = button(c.title || 'New chat', () => selectConversation(c.id), 'conversation-title');
    open.title = c.title;
    const remove = button('\u00d7', () => deleteConversation(c.id), 'icon delete');
    remove.setAttribute('aria-label', 'Delete chat');
    item.append(open, remove);
    nav.append(item);
  }
}

function selectConversation(id) {
  state.currentId = id;
  saveCurrentId(id);
  renderConversationList();
  renderMessages();
  document.body.classList.remove('sidebar-open');
  $('input').focus();
}

function newChat() {
  state.currentId = null;
  saveCurrentId(null);
  renderConversationList();
  renderMessages();
  $('input').focus();
}

function deleteConversation(id) {
  if (state.streaming && state.streaming.conversation.id === id) return;
  state.conversations = state.conversations.filter((c) => c.id !== id);
  persist();
  if (state.currentId === id) newChat();
  else renderConversationList();
}

/** The current conversation, created (and listed first) when there is none. */
function ensureConversation(firstText) {
  let c = current();
  if (!c) {
    c = { id: newId(), title: firstText.replace(/\s+/g, ' ').trim().slice(0, 60), updated: Date.now(), messages: [] };
    state.conversations.unshift(c);
    state.currentId = c.id;
    saveCurrentId(c.id);
  }
  return c;
}

// ---- Messages ------------------------------------------------------------------------------

function renderMessages() {
  const c = current();
  const box = $('messages');
  box.replaceChildren();
  $('chat-title').textContent = c ? c.title : 'New chat';
  if (!c || c.messages.length === 0) {
    box.append(emptyNote());
    return;
  }
  c.messages.forEach((m, index) => box.append(messageArticle(c, m, index)));
  box.scrollTop = box.scrollHeight;
}

function emptyNote() {
  const note = el('div', 'empty');
  note.append(
    el('h2', null, 'Chat with the model'),
    el(
      'p',
      null,
      'Answers stream in as they are generated. Under each answer: prompt tokens, how many of them came from the prefix cache, time to first token and tokens per second.'
    )
  );
  return note;
}

function messageArticle(conversation, m, index) {
  const article = el('article', 'message ' + m.role);
  articles.set(m, article);
  if (m.role === 'user') {
    article.append(el('div', 'body plain', m.content));
    const actions = el('div', 'actions');
    actions.append(button('Edit', () => editMessage(conversation, m, article), 'link'));
    article.append(actions);
    return article;
  }
  fillAssistant(article, conversation, m, index);
  return article;
}

/** (Re)builds an assistant article: thinking block, answer, live line, actions. */
function fillAssistant(article, conversation, m, index) {
  const streaming = state.streaming && state.streaming.message === m;
  const old = article.querySelector('details.thinking');
  // Open while the model thinks; closed once the answer starts (once: the reader may open it
  // again); a finished answer's thinking starts closed.
  let open = old ? old.open : streaming && !m.content;
  if (streaming && m.content && !article.dataset.thinkingClosed) {
    article.dataset.thinkingClosed = 'yes';
    open = false;
  }
  article.replaceChildren();
  if (m.reasoning) {
    const details = el('details', 'thinking');
    details.open = open;
    const summary = el('summary', null, streaming && !m.content ? 'Thinking\u2026' : 'Thinking');
    details.append(summary, el('div', 'thinking-body', m.reasoning));
    article.append(details);
  }
  const body = el('div', 'body markdown');
  body.append(renderMarkdown(m.content));
  if (streaming) body.classList.add('streaming');
  article.append(body);
  if (m.error) article.append(el('div', 'error', m.error));
  article.append(statsLine(m));
  if (!streaming) {
    const actions = el('div', 'actions');
    actions.append(
      button(
        'Copy',
        (e) =>
          copyText(m.content).then(
            () => (e.target.textContent = 'Copied'),
            () => (e.target.textContent = 'Copy failed')
          ),
        'link'
      )
    );
    if (index === conversation.messages.length - 1) {
      actions.append(button('Regenerate', () => regenerate(conversation), 'link regenerate'));
    }
    article.append(actions);
  }
}

function statsLine(m) {
  const s = m.stats || {};
  const line = el('div', 'stats');
  const parts = [];
  if (s.promptTokens !== undefined) {
    line.dataset.promptTokens = s.promptTokens;
    line.dataset.cachedTokens = s.cachedTokens;
    parts.push(`${s.promptTokens} prompt tokens, ${s.cachedTokens} cached`);
  }
  if (s.ttftMs !== undefined) parts.push(`${formatMs(s.ttftMs)} to first token`);
  if (s.tokensPerSecond !== undefined) {
    parts.push(`${s.tokensPerSecond.toFixed(1)} tokens/s${s.exact ? '' : ' (est.)'}`);
  }
  if (s.completionTokens !== undefined) parts.push(`${s.completionTokens} tokens`);
  if (m.stopped) parts.push('stopped');
  else if (s.finishReason === 'length') parts.push('max tokens reached');
  line.textContent = parts.join(' \u00b7 ');
  return line;
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function editMessage(conversation, m, article) {
  if (state.streaming) return;
  const editor = el('textarea', 'editor');
  editor.value = m.content;
  editor.rows = Math.min(12, m.content.split('\n').length + 1);
  const actions = el('div', 'actions');
  actions.append(
    button('Send', () => {
      const text = editor.value.trim();
      if (!text) return;
      // Edit and resend: the conversation goes on from the edited message; what followed it
      // is replaced by the new answer.
      const at = conversation.messages.indexOf(m);
      conversation.messages.splice(at);
      conversation.messages.push({ role: 'user', content: text });
      if (at === 0) conversation.title = text.replace(/\s+/g, ' ').slice(0, 60);
      renderMessages();
      answer(conversation);
    }, 'primary'),
    button('Cancel', () => renderMessages(), 'link')
  );
  article.replaceChildren(editor, actions);
  editor.focus();
}

function regenerate(conversation) {
  if (state.streaming) return;
  const last = conversation.messages[conversation.messages.length - 1];
  if (last && last.role === 'assistant') conversation.messages.pop();
  renderMessages();
  answer(conversation);
}

// ---- Sending and streaming -----------------------------------------------------------------

function send() {
  const input = $('input');
  const text = input.value.trim();
  if (!text || state.streaming) return;
  const conversation = ensureConversation(text);
  conversation.messages.push({ role: 'user', content: text });
  input.value = '';
  autosize(input);
  renderConversationList();
  renderMessages();
  answer(conversation);
}

/** Streams the assistant's answer to the conversation's last user message. */
async function answer(conversation) {
  const m = { role: 'assistant', content: '', reasoning: '', stats: {} };
  const history = conversation.messages.slice();
  conversation.messages.push(m);
  conversation.updated = Date.now();
  // The conversation moves to the top of the list.
  state.conversations = [conversation, ...state.conversations.filter((c) => c !== conversation)];
  const controller = new AbortController();
  state.streaming = { conversation, message: m, controller };
  setBusy(true);
  const box = $('messages');
  box.querySelector('.empty')?.remove();
  const article = messageArticle(conversation, m, conversation.messages.length - 1);
  box.append(article);
  box.scrollTop = box.scrollHeight;

  const started = performance.now();
  let firstAt = null;
  let lastAt = null;
  let pieces = 0;
  let frame = 0;
  // The answer's article now: the reader may switch chats and back while it streams, which
  // renders a new one (null while another chat is shown).
  const shown = () => {
    const a = articles.get(m);
    return a && a.isConnected ? a : null;
  };
  const redraw = () => {
    frame = 0;
    const a = shown();
    if (!a) return;
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fillAssistant(a, conversation, m, conversation.messages.indexOf(m));
    if (nearBottom) box.scrollTop = box.scrollHeight;
  };
  const onDelta = ({ reasoning, content }) => {
    const now = performance.now();
    if (firstAt === null) {
      firstAt = now;
      m.stats.ttftMs = now - started;
    }
    lastAt = now;
    pieces++;
    m.reasoning += reasoning;
    m.content += content;
    // Live estimate: a streamed piece is about one token; the final usage replaces it.
    if (pieces > 1) m.stats.tokensPerSecond = ((pieces - 1) * 1000) / (now - firstAt);
    if (!frame) frame = requestAnimationFrame(redraw);
  };
  try {
    const result = await withKey(() =>
      streamChat(requestBody(history, state.settings, state.model), controller.signal, onDelta)
    );
    const u = result.usage;
    m.stats.finishReason = result.finishReason;
    if (u) {
      m.stats.promptTokens = u.prompt_tokens;
      m.stats.cachedTokens = (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) || 0;
      m.stats.completionTokens = u.completion_tokens;
      if (firstAt !== null && lastAt > firstAt && u.completion_tokens > 1) {
        m.stats.tokensPerSecond = ((u.completion_tokens - 1) * 1000) / (lastAt - firstAt);
        m.stats.exact = true;
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') m.stopped = true;
    else m.error = e.message || String(e);
  } finally {
    if (frame) cancelAnimationFrame(frame);
    if (!m.reasoning) delete m.reasoning;
    state.streaming = null;
    setBusy(false);
    persist();
    renderConversationList();
    const a = shown();
    if (a) {
      fillAssistant(a, conversation, m, conversation.messages.indexOf(m));
      // The previous answer loses its Regenerate button: only the last one has it.
      box.querySelectorAll('article.assistant').forEach((other) => {
        if (other !== a) other.querySelector('.regenerate')?.remove();
      });
    }
  }
}

function stop() {
  if (state.streaming) state.streaming.controller.abort();
}

function setBusy(busy) {
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  document.body.classList.toggle('busy', busy);
}

// ---- API key -------------------------------------------------------------------------------

let keyWaiter = null;

/** Runs `call`; on a 401, asks for the key and tries again until it passes or the user cancels. */
async function withKey(call) {
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      const given = await askForKey(apiKey() ? 'That key was refused.' : '');
      if (!given) throw new ApiError(401, 'This server needs an API key.');
    }
  }
}

function askForKey(message) {
  const dialog = $('key-dialog');
  $('key-error').textContent = message;
  $('key-input').value = '';
  if (!dialog.open) dialog.showModal();
  $('key-input').focus();
  return new Promise((resolve) => {
    keyWaiter = resolve;
  });
}

function settleKey(given) {
  const waiter = keyWaiter;
  keyWaiter = null;
  if (waiter) waiter(given);
}

async function submitKey(event) {
  event.preventDefault();
  const key = $('key-input').value.trim();
  if (!key) return;
  setApiKey(key, $('key-remember').checked);
  try {
    await fetchModel();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      forgetApiKey();
      $('key-error').textContent = 'That key was refused.';
      $('key-input').select();
      return;
    }
    // Another failure (loading, network) is not the key's fault: keep it and go on.
  }
  $('key-dialog').close();
  $('forget-key').hidden = false;
  settleKey(true);
}

// ---- Settings ------------------------------------------------------------------------------

const SETTING_FIELDS = ['system', 'temperature', 'top_p', 'top_k', 'max_tokens', 'seed'];

function showSettings() {
  for (const name of SETTING_FIELDS) $('set-' + name).value = state.settings[name];
  $('thinking').checked = state.settings.thinking;
}

function readSettings() {
  for (const name of SETTING_FIELDS) state.settings[name] = $('set-' + name).value;
  state.settings.thinking = $('thinking').checked;
  saveSettings(state.settings);
}

// ---- Model and status ----------------------------------------------------------------------

async function loadModel() {
  for (;;) {
    try {
      const model = await withKey(fetchModel);
      state.model = model ? model.id : null;
      $('model-name').textContent = state.model || '';
      $('status').textContent = '';
      return;
    } catch (e) {
      if (e instanceof ApiError && e.status === 503) {
        $('status').textContent = 'loading the model\u2026';
      } else {
        $('status').textContent = e.message;
        if (e instanceof ApiError && e.status === 401) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

// ---- Wiring --------------------------------------------------------------------------------

function autosize(textarea) {
  textarea.style.height = 'auto';
  textarea.style.height = Math.min(textarea.scrollHeight, 240) + 'px';
}

function init() {
  if (state.currentId && !current()) state.currentId = null;
  showSettings();
  renderConversationList();
  renderMessages();
  $('forget-key').hidden = !apiKey();

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $('input').addEventListener('input', (e) => autosize(e.target));
  $('stop').addEventListener('click', stop);
  $('new-chat').addEventListener('click', newChat);
  $('thinking').addEventListener('change', readSettings);
  for (const name of SETTING_FIELDS) $('set-' + name).addEventListener('input', readSettings);
  $('reset-settings').addEventListener('click', () => {
    state.settings = { ...DEFAULT_SETTINGS };
    saveSettings(state.settings);
    showSettings();
  });
  $('toggle-settings').addEventListener('click', () => {
    const panel = $('settings');
    panel.hidden = !panel.hidden;
    $('toggle-settings').setAttribute('aria-expanded', String(!panel.hidden));
  });
  $('toggle-sidebar').addEventListener('click', () => document.body.classList.toggle('sidebar-open'));
  $('key-form').addEventListener('submit', submitKey);
  $('key-cancel').addEventListener('click', () => {
    $('key-dialog').close();
    settleKey(false);
  });
  $('key-dialog').addEventListener('cancel', () => settleKey(false));
  $('forget-key').addEventListener('click', () => {
    forgetApiKey();
    $('forget-key').hidden = true;
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.streaming) stop();
  });
  $('input').focus();
  loadModel();
}

// For tests and the console: the renderer the page uses (pure; it reads no state).
window.nanoInfer = Object.freeze({ renderMarkdown });

init();
