// Conversations and settings in the browser's localStorage (nothing is kept on the server).
//
// `nano-infer.conversations` holds a JSON list of { id, title, updated, messages }, newest
// first; a message is { role: 'user' | 'assistant', content, reasoning?, stats?, stopped?,
// error? }. What is read back is checked shape by shape: a hand-edited or older entry that does
// not fit is dropped, never rendered half-understood.

const CONVERSATIONS = 'nano-infer.conversations';
const CURRENT = 'nano-infer.current';
const SETTINGS = 'nano-infer.settings';

/** Settings as the form holds them (strings; empty means the model's default). */
export const DEFAULT_SETTINGS = Object.freeze({
  system: '',
  temperature: '',
  top_p: '',
  top_k: '',
  max_tokens: '',
  seed: '',
  thinking: true,
});

function readJson(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback;
  }
}

/** Writes; false when the browser refuses (storage full or disabled). */
function writeJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

function validMessage(m) {
  return (
    m !== null &&
    typeof m === 'object' &&
    (m.role === 'user' || m.role === 'assistant') &&
    typeof m.content === 'string' &&
    (m.reasoning === undefined || typeof m.reasoning === 'string')
  );
}

function validConversation(c) {
  return (
    c !== null &&
    typeof c === 'object' &&
    typeof c.id === 'string' &&
    Array.isArray(c.messages) &&
    c.messages.every(validMessage)
  );
}

export function loadConversations() {
  const list = readJson(CONVERSATIONS, []);
  if (!Array.isArray(list)) return [];
  return list.filter(validConversation).map((c) => ({
    id: c.id,
    title: typeof c.title === 'string' ? c.title : 'Chat',
    updated: Number(c.updated) || 0,
    messages: c.messages,
  }));
}

export function saveConversations(list) {
  return writeJson(CONVERSATIONS, list);
}

export function loadCurrentId() {
  return localStorage.getItem(CURRENT);
}

export function saveCurrentId(id) {
  try {
    if (id) localStorage.setItem(CURRENT, id);
    else localStorage.removeItem(CURRENT);
  } catch {
    // Storage disabled: the page still works for this visit.
  }
}

export function loadSettings() {
  const stored = readJson(SETTINGS, {});
  const settings = { ...DEFAULT_SETTINGS };
  if (stored && typeof stored === 'object') {
    for (const key of Object.keys(DEFAULT_SETTINGS)) {
      if (typeof stored[key] === typeof DEFAULT_SETTINGS[key]) settings[key] = stored[key];
    }
  }
  return settings;
}

export function saveSettings(settings) {
  return writeJson(SETTINGS, settings);
}

export function newId() {
  return Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
}
