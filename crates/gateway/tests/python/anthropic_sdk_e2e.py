"""End-to-end check of the gateway's Anthropic API with the official `anthropic` Python SDK.

Run by crates/gateway/tests/anthropic_sdk.rs against a gateway in front of the Anthropic simulator:

    python anthropic_sdk_e2e.py PHASE [BASE_URL CLIENT_KEY]

PHASE `main` checks messages (non-stream, both stream styles, tool use), count_tokens, models and the errors the
gateway itself answers; `bad_request` expects the next request to get an upstream 400 (the test injected it);
`stream_error` expects the next stream to fail midway with an `event: error`; `env` takes the base URL and key from
ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY with `anthropic.Anthropic()` and no arguments. Prints `ok STEP` per passed
check and exits non-zero, with a traceback, on the first failed one.
"""

import sys

import anthropic

MODEL = "claude-sonnet-4-5"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    }
]
# What the simulator puts in a tool_use block for TOOLS: a string "sim NAME" per string property, 42 per integer one.
TOOL_INPUT = {"city": "sim city", "days": 42}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def simple_text(msg):
    return "".join(b.text for b in msg.content if b.type == "text")


def main_phase(client, base_url):
    # models.list (auto-pagination over the Anthropic shape) and models.retrieve.
    page = client.models.list()
    ids = [m.id for m in page.data]
    check(MODEL in ids, f"models.list: {ids}")
    check(all(m.type == "model" for m in page.data), "model type")
    check(page.has_more is False, f"has_more {page.has_more}")
    check([m.id for m in client.models.list()] == ids, "auto-pagination")
    m = client.models.retrieve(MODEL)
    check(m.id == MODEL and m.display_name, f"models.retrieve: {m}")
    try:
        client.models.retrieve("claude-no-such-model")
        raise AssertionError("unknown model did not raise")
    except anthropic.NotFoundError as e:
        check(e.status_code == 404, e.status_code)
    print("ok models")

    # Non-stream.
    r = client.messages.create(
        model=MODEL,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello from the anthropic sdk"}],
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "sdk-user"},
    )
    check(r.id.startswith("msg_"), r.id)
    check(r.type == "message" and r.role == "assistant", r)
    check(r.model == MODEL, r.model)
    check(r.stop_reason == "end_turn", r.stop_reason)
    check("You said: hello from the anthropic sdk" in simple_text(r), r.content)
    check(r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage)
    check(r._request_id and r._request_id.startswith("req_"), f"request id {r._request_id}")
    print("ok non-stream")

    # The streaming helper: text as it arrives, then the accumulated final message with usage.
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "stream with the helper"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    check(len(pieces) > 1, f"text arrived in pieces: {pieces}")
    check("".join(pieces) == simple_text(final), f"{pieces} vs {final.content}")
    check("You said: stream with the helper" in "".join(pieces), pieces)
    check(final.stop_reason == "end_turn", final.stop_reason)
    check(final.usage.input_tokens > 0 and final.usage.output_tokens > 0, final.usage)
    print("ok stream helper")

    # create(stream=True): the raw events, in order.
    events = list(
        client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "stream raw events"}],
            stream=True,
        )
    )
    types = [e.type for e in events]
    check(types[0] == "message_start" and types[-1] == "message_stop", types)
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    check("You said: stream raw events" in text, text)
    delta = next(e for e in events if e.type == "message_delta")
    check(delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens > 0, delta)
    check(events[0].message.usage.input_tokens > 0, events[0].message.usage)
    print("ok stream events")

    # Tool use, non-stream and streamed (the SDK assembles input_json_delta pieces into the input).
    r = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "sim_tool_use weather in Paris"}],
    )
    check(r.stop_reason == "tool_use", r.stop_reason)
    tool = next(b for b in r.content if b.type == "tool_use")
    check(tool.name == "get_weather" and tool.id.startswith("toolu_"), tool)
    check(tool.input == TOOL_INPUT, tool.input)
    # A second turn with the tool result goes through too.
    r2 = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "sim_tool_use weather in Paris"},
            {"role": "assistant", "content": r.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool.id, "content": "sunny"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    )
    check(r2.type == "message", r2)
    with client.messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=TOOLS,
        messages=[{"role": "user", "content": "sim_tool_use weather in Oslo"}],
    ) as stream:
        json_pieces = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    check(len(json_pieces) > 1, f"input arrived in pieces: {json_pieces}")
    tool = next(b for b in final.content if b.type == "tool_use")
    check(tool.input == TOOL_INPUT, tool.input)
    check(final.stop_reason == "tool_use", final.stop_reason)
    print("ok tools")

    # count_tokens.
    n = client.messages.count_tokens(
        model=MODEL,
        messages=[{"role": "user", "content": "count these tokens"}],
    )
    check(isinstance(n.input_tokens, int) and n.input_tokens > 0, n)
    print("ok count_tokens")

    # A wrong client key: the gateway's own 401, in Anthropic shape.
    bad = anthropic.Anthropic(base_url=base_url, api_key="sk-gw-wrong", max_retries=0)
    try:
        bad.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("wrong key did not raise")
    except anthropic.AuthenticationError as e:
        check(e.status_code == 401, e.status_code)
        check(e.body["type"] == "error" and e.body["error"]["type"] == "authentication_error", e.body)
    try:
        bad.models.list()
        raise AssertionError("wrong key did not raise on models")
    except anthropic.AuthenticationError:
        pass
    print("ok auth error")


def bad_request_phase(client):
    try:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("injected 400 did not raise")
    except anthropic.BadRequestError as e:
        check(e.status_code == 400, e.status_code)
        check(e.body["error"]["type"] == "invalid_request_error", e.body)
        check("non-whitespace" in e.body["error"]["message"], e.body)
        check(e.request_id and e.request_id.startswith("req_"), e.request_id)
    print("ok bad request")


def stream_error_phase(client):
    text = []
    try:
        with client.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "this stream breaks"}]
        ) as stream:
            for t in stream.text_stream:
                text.append(t)
        raise AssertionError("stream error did not raise")
    except anthropic.APIStatusError as e:
        check(e.body["error"]["type"] == "overloaded_error", e.body)
    check(text, "text arrived before the error")
    print("ok stream error")


def env_phase():
    client = anthropic.Anthropic()
    r = client.messages.create(model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "from env"}])
    check("You said: from env" in simple_text(r), r.content)
    check(MODEL in [m.id for m in client.models.list().data], "models via env")
    print("ok env")


def main():
    phase = sys.argv[1]
    if phase == "env":
        env_phase()
        return
    base_url, key = sys.argv[2], sys.argv[3]
    client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
    # The API version this SDK release speaks (the gateway forwards it as is).
    print(f"anthropic-version {client.default_headers['anthropic-version']}")
    if phase == "main":
        main_phase(client, base_url)
    elif phase == "bad_request":
        bad_request_phase(client)
    elif phase == "stream_error":
        stream_error_phase(client)
    else:
        raise SystemExit(f"unknown phase {phase}")


if __name__ == "__main__":
    main()
