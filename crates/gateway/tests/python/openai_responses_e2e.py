"""The official openai SDK's Responses client against the gateway: create, stream, tools, previous_response_id, errors.

Usage: openai_responses_e2e.py BASE_URL CLIENT_KEY. Prints "ok STEP" per step; any failure raises.
"""
import json
import sys

import openai

MODEL = "claude-sonnet-4-5"
TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main(base, key):
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    r = client.responses.create(model=MODEL, input="hello sdk", instructions="be brief")
    check(r.status == "completed", r)
    check(r.output_text.endswith("You said: hello sdk"), r.output_text)
    check(r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage)
    print("ok create")

    with client.responses.stream(model=MODEL, input="stream please") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    check(len(deltas) > 1, deltas)
    check(final.output_text == "".join(deltas), (final.output_text, deltas))
    raw = list(client.responses.create(model=MODEL, input="raw stream", stream=True))
    check(raw[-1].type == "response.completed", raw[-1])
    print("ok stream")

    r = client.responses.create(model=MODEL, input="sim_tool_use weather in Paris", tools=TOOLS)
    call = next(i for i in r.output if i.type == "function_call")
    check(call.name == "get_weather" and json.loads(call.arguments) == {"city": "sim city"}, call)
    r2 = client.responses.create(
        model=MODEL,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "sim_tool_use weather in Paris"},
            *[i.model_dump(exclude_none=True) for i in r.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
    )
    check("Tool result received: sunny, 21 C" in r2.output_text, r2.output_text)
    print("ok tools")

    r3 = client.responses.create(model=MODEL, input="and tomorrow?", previous_response_id=r2.id)
    check(r3.status == "completed", r3)
    print("ok continue")

    try:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_nope")
        raise AssertionError("expected a 400")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "previous_response_id" in str(e), e)
    print("ok error")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
