"""The real `openai` Python client against `qwen3-infer serve` on a fixture model.

Usage: python openai_client.py QWEN3_INFER_BINARY MODEL_DIR
"""

import json
import sys

import openai
from openai import OpenAI

from common import Results, Server

BINARY, MODEL = sys.argv[1], sys.argv[2]
results = Results("openai client")

with Server(BINARY, MODEL, "--alias", "qwen3-fixture") as server:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    greedy = dict(model="qwen3-fixture", temperature=0, max_tokens=12, extra_body={"ignore_eos": True})
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = {}

    def models():
        listed = client.models.list()
        assert [m.id for m in listed.data] == ["qwen3-fixture"], listed

    def chat():
        r = client.chat.completions.create(messages=messages, **greedy)
        assert r.object == "chat.completion"
        choice = r.choices[0]
        assert choice.finish_reason == "length", choice
        assert isinstance(choice.message.content, str) and choice.message.content
        assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 0, r.usage
        answer["content"] = choice.message.content

    def chat_stream():
        stream = client.chat.completions.create(
            messages=messages, stream=True, stream_options={"include_usage": True}, **greedy
        )
        text, reasons, usage = "", [], None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                if c.finish_reason:
                    reasons.append(c.finish_reason)
        assert text == answer["content"], (text, answer["content"])
        assert reasons == ["length"], reasons
        assert usage is not None and usage.completion_tokens == 12, usage

    def logprobs():
        r = client.chat.completions.create(messages=messages, logprobs=True, top_logprobs=3, **greedy)
        content = r.choices[0].logprobs.content
        assert len(content) == 12, len(content)
        for t in content:
            assert t.logprob <= 0 and len(t.top_logprobs) == 3
            # Greedy: the chosen token is the most likely one.
            assert t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6

    def stop_string():
        full = answer["content"]
        stop = full[len(full) // 2 : len(full) // 2 + 3]
        r = client.chat.completions.create(messages=messages, stop=[stop], **greedy)
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice
        assert choice.message.content == full[: full.index(stop)], (choice.message.content, full, stop)

    def completions():
        r = client.completions.create(prompt="Once upon a time", **greedy)
        assert r.object == "text_completion" and r.choices[0].text, r
        assert r.usage.completion_tokens == 12

    def seed_repeats():
        sampled = dict(model="qwen3-fixture", temperature=1.0, max_tokens=8, seed=1234, messages=messages)
        a = client.chat.completions.create(**sampled).choices[0].message.content
        b = client.chat.completions.create(**sampled).choices[0].message.content
        assert a == b, (a, b)

    def errors():
        for bad, param in [(dict(top_p=5), "top_p"), (dict(n=2), "n"), (dict(max_tokens=10**7), "max_tokens")]:
            try:
                client.chat.completions.create(messages=messages, model="qwen3-fixture", **bad)
            except openai.BadRequestError as e:
                assert e.status_code == 400 and e.body["param"] == param, e.body
            else:
                raise AssertionError(f"{bad} was accepted")

    no_think = {"chat_template_kwargs": {"enable_thinking": False}}
    weather = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "enum": ["Paris", "Oslo"]},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}}]

    def json_schema():
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9},
                  "ok": {"type": "boolean"}}, "required": ["n", "ok"], "additionalProperties": False}
        r = client.chat.completions.create(
            model="qwen3-fixture", messages=messages, max_tokens=40, temperature=1.0, seed=3,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}},
            extra_body=no_think)
        value = json.loads(r.choices[0].message.content)
        assert 1 <= value["n"] <= 9 and isinstance(value["ok"], bool), value

    def tool_call():
        r = client.chat.completions.create(
            model="qwen3-fixture", max_tokens=60, tools=weather, tool_choice="required",
            messages=[{"role": "user", "content": "Weather in Paris?"}], extra_body=no_think)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        call = choice.message.tool_calls[0]
        args = json.loads(call.function.arguments)
        assert call.type == "function" and call.function.name == "get_weather", call
        assert args["city"] in ("Paris", "Oslo") and args["unit"] in ("celsius", "fahrenheit"), args
        # The client's own stream accumulation: deltas with an index, an id and the arguments.
        stream = client.chat.completions.create(
            model="qwen3-fixture", max_tokens=60, tools=weather,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            messages=[{"role": "user", "content": "Weather in Oslo?"}], stream=True, extra_body=no_think)
        calls, reasons = {}, []
        for chunk in stream:
            for c in chunk.choices:
                for d in c.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"id": d.id, "name": "", "arguments": ""})
                    entry["name"] += d.function.name or ""
                    entry["arguments"] += d.function.arguments or ""
                if c.finish_reason:
                    reasons.append(c.finish_reason)
        assert reasons == ["tool_calls"] and list(calls) == [0], (reasons, calls)
        assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_"), calls
        json.loads(calls[0]["arguments"])
        # The next turn: the call and its result go back through the template.
        follow = client.chat.completions.create(
            model="qwen3-fixture", max_tokens=4, tools=weather, messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'}])
        assert follow.choices[0].message is not None

    for name, fn in [
        ("json schema", json_schema), ("tool call", tool_call),
        ("models", models), ("chat", chat), ("chat streamed", chat_stream), ("logprobs", logprobs),
        ("stop string", stop_string), ("completions", completions), ("seed repeats", seed_repeats),
        ("errors", errors),
    ]:
        results.check(name, fn)

with Server(BINARY, MODEL, "--api-key", "sk-e2e") as server:
    def auth():
        try:
            OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
        except openai.AuthenticationError as e:
            assert e.status_code == 401
        else:
            raise AssertionError("a wrong key was accepted")
        assert OpenAI(base_url=server.url + "/v1", api_key="sk-e2e").models.list().data

    results.check("api key", auth)

results.finish()
