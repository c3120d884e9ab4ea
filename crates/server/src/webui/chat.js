// The server's API from the browser: the API key, the chat request body, and the streamed
// answer read from fetch's ReadableStream as server-sent events (EventSource cannot POST a body
// or send an Authorization header).
//
// URLs are relative to the page ('v1/...'), so the page also works behind a proxy that serves
// the server under a path prefix.

const KEY = 'nano-infer.api-key';

/** The API key: this tab's (sessionStorage) or one remembered on this device (localStorage). */
export function apiKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || '';
}

/** Keeps the key in this browser only: for this tab, or on this device when `remember`. */
export function setApiKey(key, remember) {
  forgetApiKey();
  (remember ? localStorage : sessionStorage).setItem(KEY, key);
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** An HTTP error answer, with OpenAI's error message when the body has one. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = apiKey();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

async function apiError(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // Not JSON (a proxy's page): the status line says enough.
  }
  return new ApiError(response.status, message);
}

/** The served model (`/v1/models`' first entry). */
export async function fetchModel() {
  const response = await fetch('v1/models', { headers: headers() });
  if (!response.ok) throw await apiError(response);
  const body = await response.json();
  return body.data && body.data[0];
}

/**
 * The `/v1/chat/completions` body for a conversation's messages and the settings. Settings
 * left empty are not sent, so the model's generation_config.json decides them.
 */
export function requestBody(messages, settings, model) {
  const history = [];
  if (settings.system.trim()) history.push({ role: 'system', content: settings.system });
  for (const m of messages) {
    if (m.role === 'user' || (m.role === 'assistant' && m.content)) {
      history.push({ role: m.role, content: m.content });
    }
  }
  const body = {
    messages: history,
    stream: true,
    stream_options: { include_usage: true },
    chat_template_kwargs: { enable_thinking: Boolean(settings.thinking) },
  };
  if (model) body.model = model;
  const number = (value, parse) => {
    const text = String(value ?? '').trim();
    if (text === '') return undefined;
    const n = parse(text);
    return Number.isFinite(n) ? n : undefined;
  };
  const fields = {
    temperature: number(settings.temperature, parseFloat),
    top_p: number(settings.top_p, parseFloat),
    top_k: number(settings.top_k, (t) => parseInt(t, 10)),
    max_tokens: number(settings.max_tokens, (t) => parseInt(t, 10)),
    seed: number(settings.seed, (t) => parseInt(t, 10)),
  };
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined) body[name] = value;
  }
  return body;
}

/**
 * Streams one answer: `onDelta({ reasoning, content })` for each chunk as it arrives. Resolves
 * with `{ usage, finishReason }` at `data: [DONE]`; rejects with an ApiError for an error answer
 * or an error event, and with the fetch's AbortError when `signal` aborts (the server sees the
 * connection close and cancels the request, freeing its KV blocks).
 */
export async function streamChat(body, signal, onDelta) {
  const response = await fetch('v1/chat/completions', {
    method: 'POST',
    headers: headers(),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await apiError(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const result = { usage: null, finishReason: null };
  let buffer = '';
  let data = [];
  // One event's payload: true at the end of the stream.
  const dispatch = (payload) => {
    if (payload === '[DONE]') return true;
    const chunk = JSON.parse(payload);
    if (chunk.error) throw new ApiError(chunk.error.code || 500, chunk.error.message);
    if (chunk.usage) result.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      if (delta.reasoning_content || delta.content) {
        onDelta({ reasoning: delta.reasoning_content || '', content: delta.content || '' });
      }
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
    return false;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      let line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        // A blank line ends an event; its data lines join with newlines (the SSE format).
        if (data.length && dispatch(data.join('\n'))) {
          reader.cancel().catch(() => {});
          return result;
        }
        data = [];
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
      }
      // Other fields (event:, id:, retry:) and comments are not used by this server.
    }
  }
  if (data.length && dispatch(data.join('\n'))) return result;
  throw new ApiError(0, 'the connection closed before the answer was complete');
}
