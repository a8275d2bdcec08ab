"""End-to-end check of the gateway's OpenAI-compatible API with the official `openai` Python SDK.

Run by crates/gateway/tests/openai.rs against a gateway in front of the Anthropic simulator:

    python openai_sdk_e2e.py BASE_URL CLIENT_KEY PHASE

PHASE `main` checks models, non-stream, stream, tool calls (both ways) and error mapping; PHASE `stream_error` expects
the next request's stream to fail midway (the test injected the fault) and the SDK to raise APIError. Exits non-zero,
with a traceback, on the first failed check.
"""

import json
import sys

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
MODEL = "claude-sonnet-4-5"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main_phase(client, base_url):
    models = client.models.list()
    ids = [m.id for m in models.data]
    check(MODEL in ids, f"models.list: {ids}")
    check(all(m.owned_by == "anthropic" for m in models.data), "owned_by")
    check(client.models.retrieve(MODEL).id == MODEL, "models.retrieve")

    # Non-stream text.
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello from the sdk"},
        ],
        max_completion_tokens=64,
        temperature=0.2,
        stop=["\n\nHuman:"],
        user="sdk-user",
    )
    check(r.id.startswith("chatcmpl-"), r.id)
    check(r.object == "chat.completion", r.object)
    check(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
    check("You said: hello from the sdk" in r.choices[0].message.content, r.choices[0].message.content)
    check(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage)
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage)
    check(r.usage.prompt_tokens_details.cached_tokens == 0, r.usage)
    print("ok non-stream")

    # Stream text with usage.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", chunk.object)
        if chunk.usage is not None:
            usage = chunk.usage
            check(chunk.choices == [], "usage chunk has no choices")
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    check("You said: stream please" in text, text)
    check(finish == "stop", finish)
    check(usage is not None and usage.completion_tokens > 0, usage)
    check(chunks >= 5, f"only {chunks} chunks")
    print("ok stream")

    # Tool call, non-stream, then the tool result goes back.
    messages = [{"role": "user", "content": "sim_tool_use: weather in Paris?"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="auto")
    choice = r.choices[0]
    check(choice.finish_reason == "tool_calls", choice.finish_reason)
    calls = choice.message.tool_calls
    check(len(calls) == 1 and calls[0].function.name == "get_weather", calls)
    args = json.loads(calls[0].function.arguments)
    check(args == {"city": "sim city", "days": 42}, args)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"})
    messages.append({"role": "user", "content": "thanks"})
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, parallel_tool_calls=False)
    check("You said: thanks" in r.choices[0].message.content, r.choices[0].message.content)
    print("ok tools")

    # Tool call, streamed: arguments arrive in pieces.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "sim_tool_use: weather in Rome?"}],
        tools=TOOLS,
        stream=True,
    )
    calls, pieces, finish = {}, 0, None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
                    pieces += 1
    check(finish == "tool_calls", finish)
    check(list(calls) == [0], calls)
    check(calls[0]["id"].startswith("toolu_") and calls[0]["name"] == "get_weather", calls)
    check(json.loads(calls[0]["arguments"]) == {"city": "sim city", "days": 42}, calls)
    check(pieces >= 2, f"arguments in {pieces} pieces")
    print("ok stream tools")

    # Reasoning: thinking text comes back as reasoning_content.
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "sim_thinking: think first"}],
        reasoning_effort="low",
    )
    reasoning = (r.choices[0].message.model_extra or {}).get("reasoning_content")
    check(reasoning and "step by step" in reasoning, r.choices[0].message)
    print("ok reasoning")

    # Errors raise the SDK's typed exceptions with the OpenAI fields.
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=2)
        raise AssertionError("n=2 was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.param == "n" and e.code == "unsupported_parameter", e.body)
    try:
        bad = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0)
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401 and e.code == "invalid_api_key", e.body)
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=-1)
        raise AssertionError("a negative max_tokens was accepted")
    except openai.BadRequestError as e:
        check(e.param == "max_tokens", e.body)
    print("ok errors")


def stream_error_phase(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "this stream breaks"}], stream=True
    )
    got = ""
    try:
        for chunk in stream:
            for c in chunk.choices:
                got += c.delta.content or ""
        raise AssertionError(f"the broken stream ended normally after {got!r}")
    except openai.APIError as e:
        check("Overloaded" in e.message, e.message)
    print("ok stream error")


def main():
    base_url, key, phase = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    if phase == "main":
        main_phase(client, base_url)
    elif phase == "stream_error":
        stream_error_phase(client)
    else:
        raise SystemExit(f"unknown phase {phase}")


if __name__ == "__main__":
    main()
