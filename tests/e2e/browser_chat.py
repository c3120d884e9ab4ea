"""The chat page at `/` in a real browser: Debian's headless Chromium driven through
chromium-driver by the pinned selenium, against `qwen3-infer serve` on a fixture model.

Usage: python browser_chat.py QWEN3_INFER_BINARY MODEL_DIR

The fixture has random weights, so its answers are noise: the checks look at what the page does
with them (streaming, stop, the live line, storage), and feed the renderer hostile Markdown by
putting a conversation into localStorage and reloading. A screenshot goes to
target/e2e/chat-page.png. CHROMIUM and CHROMEDRIVER override the programs' paths.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from common import Results, Server

BINARY, MODEL = sys.argv[1], sys.argv[2]
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCREENSHOT = os.path.join(ROOT, "target", "e2e", "chat-page.png")
# Without these Chromium tries to reach Google's services at start and can hang on a machine
# with no network; --no-sandbox because CI runs as root in a container.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
]

results = Results("browser chat")


def chromium(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=" + profile)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def metrics(server, key=None):
    """The server's /metrics as {name: value} for unlabelled series."""
    request = urllib.request.Request(server.url + "/metrics")
    if key:
        request.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(request, timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            values[parts[0]] = float(parts[1])
    return values


def wait(driver, condition, what, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: condition())
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}") from None


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def find(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css)


def finds(driver, css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def idle(driver):
    """The page is not streaming: Send is shown again."""
    return find(driver, "#send").is_displayed() and not find(driver, "#stop").is_displayed()


def set_field(driver, element_id, value):
    """Types into a settings field the way a user does (the page saves on `input`)."""
    if not find(driver, "#settings").is_displayed():
        find(driver, "#toggle-settings").click()
    field = find(driver, "#" + element_id)
    field.clear()
    if value != "":
        field.send_keys(str(value))
    else:
        js(driver, "arguments[0].dispatchEvent(new Event('input'))", field)


def stored(driver, key):
    return js(driver, "return JSON.parse(localStorage.getItem(arguments[0]))", key)


def answer_text(driver):
    """The last answer's text, read in one script call (a streaming answer's body is rebuilt on
    every update, so an element handle to it goes stale)."""
    return js(driver, """
        const bodies = document.querySelectorAll('#messages article.assistant .body');
        return bodies.length ? bodies[bodies.length - 1].textContent : null;
    """)


def last_stats(driver):
    stats = finds(driver, "#messages article.assistant .stats")[-1]
    return stats, stats.get_attribute("data-prompt-tokens"), stats.get_attribute("data-cached-tokens")


def send(driver, text, timeout=60):
    """Sends a message from the composer and waits for its answer to finish."""
    box = find(driver, "#input")
    box.clear()
    box.send_keys(text)
    find(driver, "#send").click()
    wait(driver, lambda: find(driver, "#stop").is_displayed() or idle(driver), "the request to start")
    wait(driver, lambda: idle(driver), "the answer to finish", timeout)


def severe_console_messages(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# The hostile conversation: Markdown, code, raw HTML and script in both a user message and an
# answer (with its thinking), as a model could write them.
HOSTILE = {
    "id": "rendering-test",
    "title": "Rendering test",
    "updated": 4102444800000,
    "messages": [
        {
            "role": "user",
            "content": "Show me <script>window.__xss = 'user'</script> and <img src=x onerror=\"window.__xss='user-img'\">",
        },
        {
            "role": "assistant",
            "reasoning": "The user wants <b>tags</b>; <script>window.__xss = 'thinking'</script>",
            "content": "\n".join(
                [
                    "# Rendering check",
                    "",
                    "Some **bold**, *emphasis*, `inline <code>` and a [safe link](https://example.com/) "
                    "but no [bad link](javascript:window.__xss='link').",
                    "",
                    "- first item",
                    "- second <script>window.__xss = 'list'</script>",
                    "",
                    "1. one",
                    "2. two",
                    "",
                    "```python",
                    "def greet(name):  # say hello",
                    "    return f\"<script>{name}</script>\" * 42",
                    "```",
                    "",
                    "<script>window.__xss = 'answer'</script>",
                    "<img src=x onerror=\"window.__xss='answer-img'\">",
                    "",
                    "| tokens | cached |",
                    "|---:|---:|",
                    "| 64 | 48 |",
                ]
            ),
            "stats": {"promptTokens": 64, "cachedTokens": 48, "ttftMs": 12.5, "tokensPerSecond": 42.0,
                      "exact": True, "completionTokens": 30, "finishReason": "stop"},
        },
    ],
}


def run_plain_server(driver, server):
    url = server.url + "/"

    def page_loads():
        driver.get(url)
        wait(driver, lambda: find(driver, "#model-name").text == "qwen3-fixture", "the model's name")
        assert driver.title == "nano-infer chat", driver.title
        # A CSP violation or a failed asset would be a console error.
        assert severe_console_messages(driver) == [], severe_console_messages(driver)

    def streamed_answer():
        set_field(driver, "set-max_tokens", 400)
        set_field(driver, "set-seed", 7)
        # Record every length the answer's text goes through while it streams.
        js(driver, """
            window.__lengths = [];
            new MutationObserver(() => {
              const bodies = document.querySelectorAll('#messages article.assistant .body');
              const last = bodies[bodies.length - 1];
              if (last) window.__lengths.push(last.textContent.length);
            }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
        """)
        text = "Hello <script>window.__xss = 'typed'</script> **there**"
        send(driver, text)
        lengths = js(driver, "return window.__lengths")
        growing = sorted(set(lengths))
        assert len(growing) >= 3, f"the answer appeared in {len(growing)} distinct states: {growing[:20]}"
        user = finds(driver, "#messages article.user .body")[-1]
        assert user.text == text, user.text
        assert not finds(driver, "#messages script"), "a <script> element in the messages"
        assert answer_text(driver), "an empty answer"
        stats, prompt, cached = last_stats(driver)
        assert int(prompt) > 0 and int(cached) >= 0, (prompt, cached)
        assert "to first token" in stats.text and "tokens/s" in stats.text, stats.text
        assert js(driver, "return window.__xss") is None
        body = stored(driver, "nano-infer.settings")
        assert body["max_tokens"] == "400" and body["seed"] == "7", body

    def regenerate_hits_the_prefix_cache():
        find(driver, "#new-chat").click()
        set_field(driver, "set-system", "You are a careful assistant who answers briefly. " * 6)
        set_field(driver, "set-max_tokens", 8)
        send(driver, "Name three rivers.")
        _, first_prompt, _ = last_stats(driver)
        find(driver, "#messages article.assistant .regenerate").click()
        wait(driver, lambda: idle(driver), "the regenerated answer")
        assert len(finds(driver, "#messages article.assistant")) == 1, "regenerate replaces the answer"
        _, prompt, cached = last_stats(driver)
        assert prompt == first_prompt, (prompt, first_prompt)
        # The same prompt again: its whole 16-token blocks come from the prefix cache.
        assert int(cached) >= 16 and int(cached) <= int(prompt), (prompt, cached)

    def edit_and_resend():
        find(driver, "#messages article.user .actions button").click()
        editor = find(driver, "#messages article.user textarea.editor")
        editor.clear()
        editor.send_keys("Name three mountains.")
        find(driver, "#messages article.user .actions button.primary").click()
        wait(driver, lambda: idle(driver), "the answer to the edited message")
        users = finds(driver, "#messages article.user .body")
        assert [u.text for u in users] == ["Name three mountains."], [u.text for u in users]
        assert len(finds(driver, "#messages article.assistant")) == 1
        conversation = stored(driver, "nano-infer.conversations")[0]
        assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"], conversation
        assert conversation["messages"][0]["content"] == "Name three mountains."

    def thinking_switch():
        set_field(driver, "set-system", "")
        set_field(driver, "set-max_tokens", 4)
        prompt_tokens = {}
        for thinking in (True, False):
            find(driver, "#new-chat").click()
            box = find(driver, "#thinking")
            if box.is_selected() != thinking:
                box.click()
            assert stored(driver, "nano-infer.settings")["thinking"] == thinking
            send(driver, "Is the sky blue?")
            prompt_tokens[thinking] = int(last_stats(driver)[1])
        # Qwen3's template answers enable_thinking=false with an empty think block in the
        # prompt: <think>, "\n\n", </think>, "\n\n" are 4 more tokens. So the switch reached
        # the server's chat template in both positions.
        assert prompt_tokens[False] == prompt_tokens[True] + 4, prompt_tokens

    def stop_mid_answer():
        set_field(driver, "set-max_tokens", 30000)
        find(driver, "#new-chat").click()
        box = find(driver, "#input")
        box.send_keys("Tell me a very long story.")
        idle_before = metrics(server)
        find(driver, "#send").click()
        wait(driver, lambda: find(driver, "#stop").is_displayed(), "the Stop button")
        wait(driver, lambda: metrics(server).get("nano_infer_running_sequences") == 1.0, "the request running")
        # Long enough to hold KV blocks of its own beyond the prompt's.
        wait(driver, lambda: len(answer_text(driver) or "") > 1500, "a long stretch of answer")
        # Another chat can be read meanwhile; back on this one, the answer is still streaming.
        finds(driver, "#conversations .conversation-title")[1].click()
        assert find(driver, "#stop").is_displayed() and not finds(driver, "#messages .body.streaming")
        finds(driver, "#conversations .conversation-title")[0].click()
        seen = len(answer_text(driver))
        wait(driver, lambda: len(answer_text(driver)) > seen, "the answer to go on growing once shown again")
        running = metrics(server)
        find(driver, "#stop").click()
        wait(driver, lambda: idle(driver), "the page to stop streaming", 5)
        stats = finds(driver, "#messages article.assistant .stats")[-1]
        assert "stopped" in stats.text, stats.text
        text = answer_text(driver)
        # The server saw the connection close and cancelled at its next step: nothing runs or
        # waits, and it makes no more tokens (the per-token latency histogram stops counting).
        wait(driver, lambda: metrics(server).get("nano_infer_running_sequences") == 0.0, "the server to cancel", 10)
        after = metrics(server)
        time.sleep(0.5)
        later = metrics(server)
        assert later["nano_infer_queue_length"] == 0.0
        tokens = "nano_infer_inter_token_latency_seconds_count"
        assert later[tokens] == after[tokens], (after[tokens], later[tokens])
        streamed = running[tokens] - idle_before[tokens]
        assert 100 < streamed < 25000, f"{streamed} tokens before the stop"
        # KV: the request's blocks are released. Its whole blocks stay in the pool as prefix
        # cache (a follow-up starting with the same text reuses them; eviction takes them when
        # the pool runs short), so "used" settles at what it held, and grows no more.
        blocks = "nano_infer_kv_blocks_used"
        assert later[blocks] == after[blocks], (after[blocks], later[blocks])
        assert idle_before[blocks] < running[blocks], (idle_before[blocks], running[blocks])
        # What stays is whole blocks of the tokens made (16 per block), plus the short prompt's
        # block or two: no block of the cancelled sequence is leaked beyond those.
        made = after[tokens] - idle_before[tokens]
        kept = after[blocks] - idle_before[blocks]
        assert kept <= made / 16 + 3, (made, kept)
        assert answer_text(driver) == text, "the answer still grows after Stop"
        conversation = stored(driver, "nano-infer.conversations")[0]
        assert conversation["messages"][-1].get("stopped") is True, conversation["messages"][-1]
        print(
            f"     stop: {streamed:.0f} tokens streamed before Stop; KV blocks used idle "
            f"{idle_before[blocks]:.0f}, while running {running[blocks]:.0f}, after the stop "
            f"{after[blocks]:.0f} (prefix cache of {made:.0f} tokens made)",
            flush=True,
        )

    def reload_keeps_conversations():
        before = [c.text for c in finds(driver, "#conversations .conversation-title")]
        saved = stored(driver, "nano-infer.conversations")
        assert len(before) >= 4, before
        driver.refresh()
        wait(driver, lambda: len(finds(driver, "#conversations .conversation-title")) == len(before), "the list")
        after = [c.text for c in finds(driver, "#conversations .conversation-title")]
        assert after == before, (before, after)
        # Open the edited chat again: its messages are back, answer and live line included.
        target = next(c for c in saved if c["messages"][0]["content"] == "Name three mountains.")
        index = saved.index(target)
        finds(driver, "#conversations .conversation-title")[index].click()
        wait(driver, lambda: find(driver, "#chat-title").text == target["title"], "the chat to open")
        users = [u.text for u in finds(driver, "#messages article.user .body")]
        assert users == ["Name three mountains."], users
        assert answer_text(driver).strip(), "the answer came back empty"
        _, prompt, _ = last_stats(driver)
        assert int(prompt) == target["messages"][1]["stats"]["promptTokens"]

    def never_renders_model_output_as_html():
        js(driver, """
            const list = JSON.parse(localStorage.getItem('nano-infer.conversations') || '[]');
            list.unshift(arguments[0]);
            localStorage.setItem('nano-infer.conversations', JSON.stringify(list));
            localStorage.setItem('nano-infer.current', arguments[0].id);
        """, HOSTILE)
        driver.refresh()
        wait(driver, lambda: find(driver, "#chat-title").text == "Rendering test", "the injected chat")
        time.sleep(0.2)  # an onerror handler would have run by now
        assert js(driver, "return window.__xss") is None, js(driver, "return window.__xss")
        assert not finds(driver, "#messages script, #messages img, #messages b"), "HTML from a message became DOM"
        user = find(driver, "#messages article.user .body").text
        assert "<script>window.__xss = 'user'</script>" in user, user
        answer = find(driver, "#messages article.assistant .body.markdown")
        assert find(driver, "#messages .markdown h1").text == "Rendering check"
        assert [e.text for e in finds(driver, "#messages .markdown p strong")] == ["bold"]
        assert [e.text for e in finds(driver, "#messages .markdown p em")] == ["emphasis"]
        assert find(driver, "#messages .markdown p code").text == "inline <code>"
        links = [a.get_attribute("href") for a in finds(driver, "#messages .markdown a")]
        assert links == ["https://example.com/"], links
        assert "[bad link](javascript:" in answer.text, answer.text
        assert [li.text for li in finds(driver, "#messages .markdown ul > li")] == [
            "first item",
            "second <script>window.__xss = 'list'</script>",
        ]
        assert len(finds(driver, "#messages .markdown ol > li")) == 2
        code = find(driver, "#messages .code-block pre code")
        assert code.get_attribute("textContent") == HOSTILE["messages"][1]["content"].split("```python\n")[1].split("\n```")[0]
        kinds = {s.get_attribute("class") for s in finds(driver, "#messages .code-block code span")}
        assert {"tok-keyword", "tok-string", "tok-comment", "tok-number", "tok-function"} <= kinds, kinds
        assert find(driver, "#messages .code-block .code-lang").text == "python"
        assert "<script>window.__xss = 'answer'</script>" in answer.text, answer.text
        assert "<img src=x" in answer.text, answer.text
        assert [c.text for c in finds(driver, "#messages .markdown th")] == ["tokens", "cached"]
        # The thinking is a collapsed block of its own, before the answer and outside it.
        thinking = find(driver, "#messages article.assistant details.thinking")
        assert thinking.get_attribute("open") is None, "the thinking of a finished answer starts collapsed"
        thinking.find_element(By.TAG_NAME, "summary").click()
        assert "<b>tags</b>" in thinking.find_element(By.CSS_SELECTOR, ".thinking-body").text
        assert not answer.find_elements(By.CSS_SELECTOR, "details"), "the thinking is inside the answer"
        # The renderer itself, on HTML alone: text nodes only.
        kinds = js(driver, """
            const f = window.nanoInfer.renderMarkdown('<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>');
            return [...f.querySelectorAll('*')].map(e => e.tagName);
        """)
        assert kinds == ["P"], kinds
        # Known answers of the renderer on what streaming and models produce.
        for source, html in [
            ("snake_case_name and **unclosed", "<p>snake_case_name and **unclosed</p>"),
            ("- a\n  - b", "<ul><li><p>a</p><ul><li>b</li></ul></li></ul>"),
            ("1. x\n\n2. y", "<ol><li>x</li><li>y</li></ol>"),
            ("> quoted *text*", "<blockquote><p>quoted <em>text</em></p></blockquote>"),
            ("## Title\nline one\nline two", "<h2>Title</h2><p>line one<br>line two</p>"),
            ("a & b < c", "<p>a &amp; b &lt; c</p>"),
        ]:
            got = js(driver, """
                const div = document.createElement('div');
                div.append(window.nanoInfer.renderMarkdown(arguments[0]));
                return div.innerHTML;
            """, source)
            assert got == html, (source, got, html)
        # A fence still streaming (no closing ```) is already a code block.
        streaming_code = js(driver, """
            const div = document.createElement('div');
            div.append(window.nanoInfer.renderMarkdown('Here:\\n```rust\\nfn main() { let x = 1;'));
            return div.querySelector('pre code').textContent;
        """)
        assert streaming_code == "fn main() { let x = 1;", streaming_code
        # Copy puts the code block's text on the clipboard.
        driver.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        copy = find(driver, "#messages .code-block .copy-code")
        copy.click()
        wait(driver, lambda: copy.text != "Copy", "the Copy button to answer", 5)
        assert copy.text == "Copied", copy.text
        clipboard = driver.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('error: ' + e))")
        assert clipboard == code.get_attribute("textContent"), clipboard
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        find(driver, "#toggle-settings").click()
        js(driver, "document.getElementById('messages').scrollTop = 0")
        driver.save_screenshot(SCREENSHOT)
        print(f"     screenshot: {SCREENSHOT}", flush=True)
        assert severe_console_messages(driver) == [], severe_console_messages(driver)

    for name, fn in [
        ("the page loads, no console errors", page_loads),
        ("a message streams its answer in several updates", streamed_answer),
        ("regenerate, with the prefix cache's tokens in the live line", regenerate_hits_the_prefix_cache),
        ("edit and resend", edit_and_resend),
        ("the thinking switch reaches the chat template", thinking_switch),
        ("stop mid-answer cancels on the server", stop_mid_answer),
        ("a reload keeps the conversations", reload_keeps_conversations),
        ("model output is never HTML, Markdown and code render", never_renders_model_output_as_html),
    ]:
        results.check(name, fn)


def run_key_server(driver, server, key):
    def asks_for_the_key():
        driver.get(server.url + "/")
        wait(driver, lambda: find(driver, "#key-dialog").is_displayed(), "the key dialog")
        find(driver, "#key-input").send_keys("sk-wrong")
        find(driver, "#key-form button.primary").click()
        wait(driver, lambda: "refused" in find(driver, "#key-error").text, "the refusal")
        assert find(driver, "#key-dialog").is_displayed()
        find(driver, "#key-input").clear()
        find(driver, "#key-input").send_keys(key)
        find(driver, "#key-form button.primary").click()
        wait(driver, lambda: not find(driver, "#key-dialog").is_displayed(), "the dialog to close")
        wait(driver, lambda: find(driver, "#model-name").text != "", "the model's name")
        # Kept for this tab only, never in localStorage (nor on the server).
        assert js(driver, "return sessionStorage.getItem('nano-infer.api-key')") == key
        assert js(driver, "return localStorage.getItem('nano-infer.api-key')") is None
        set_field(driver, "set-max_tokens", 16)
        send(driver, "Hello with a key")
        assert not finds(driver, "#messages .error"), find(driver, "#messages .error").text
        assert int(last_stats(driver)[1]) > 0

    results.check("with --api-key the page asks for the key, then works", asks_for_the_key)


def main():
    started = time.time()
    profile = tempfile.mkdtemp(prefix="nano-infer-chromium-")
    driver = None
    try:
        driver = chromium(profile)
        with Server(BINARY, MODEL, "--alias", "qwen3-fixture") as server:
            run_plain_server(driver, server)
        with Server(BINARY, MODEL, "--api-key", "sk-browser") as server:
            run_key_server(driver, server, "sk-browser")
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"     browser checks took {time.time() - started:.1f} s", flush=True)
    results.finish()


if __name__ == "__main__":
    main()
