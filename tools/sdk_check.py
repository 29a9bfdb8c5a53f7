#!/usr/bin/env python3
"""Checks that the official OpenAI Python SDK works unchanged against the example gateway, and
that each MaaS refusal reaches it as the right typed error. `tests/sdk.rs` runs it against the
zero-config gateway (CI installs the SDK); by hand:

    pip install openai
    cargo run --release --example gateway &        # the zero-config demo on 127.0.0.1:8080
    python3 tools/sdk_check.py [http://127.0.0.1:8080/v1 [STALLING]]

STALLING: the base URL of a gateway with the demo key and a model `up` whose upstream stalls
after its first chunk (as `tests/sdk.rs` starts one): its stream must raise `APIError` with
APIG.0203 after that chunk.

Each refusal's body is compared whole, as the SDK parsed it; the two backend messages are
pydantic's and vLLM's wording, character for character, and change with them.
"""
import sys

import openai

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
DEMO, SLOW, FROZEN = ("sk-maas-demo-0000000000000000", "sk-maas-slow-0000000000000000",
                      "sk-maas-frozen-00000000000000")


def client(key):
    return openai.OpenAI(base_url=BASE, api_key=key, max_retries=0)


def chat(key, content="Hello there", **kw):
    return client(key).chat.completions.create(
        model=kw.pop("model", "mock-model"), messages=[{"role": "user", "content": content}], **kw)


def maas(code, message, kind):
    """What the SDK keeps of a MaaS refusal: the dual body's `error` object."""
    return {"code": code, "message": message, "param": None, "type": kind}


def vllm(message):
    """What the SDK keeps of a backend's 400: the whole body (it has no `error` object)."""
    return {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}


def expect(name, error, body, call):
    """`call` raises `error`, whose body, as the SDK parsed it, is `body` whole."""
    try:
        call()
    except error as e:
        if e.body != body:
            print("FAIL %-34s %s %s: %r, expected %r" % (name, type(e).__name__, e.status_code, e.body, body))
            sys.exit(1)
        print("ok   %-34s %s %s: %s" % (name, type(e).__name__, e.status_code, body.get("code")))
        return
    except Exception as e:  # noqa: BLE001
        print("FAIL %-34s got %s: %s" % (name, type(e).__name__, e))
        sys.exit(1)
    print("FAIL %-34s no error" % name)
    sys.exit(1)


answer = chat(DEMO)
print("ok   %-34s %r, usage %s" % ("chat completion", answer.choices[0].message.content, answer.usage.total_tokens))
stream = chat(DEMO, "one two three", stream=True, stream_options={"include_usage": True})
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
print("ok   %-34s %r" % ("streamed chat completion", text))
print("ok   %-34s %s" % ("models", [m.id for m in client(DEMO).models.list()]))

expect("unknown key (81003)", openai.AuthenticationError,
       maas("ModelArts.81003", "Invalid authorization header.", "Unauthorized"), lambda: chat("sk-unknown"))
expect("frozen key (81006)", openai.AuthenticationError,
       maas("ModelArts.81006", "The resource is frozen.", "Unauthorized"), lambda: chat(FROZEN))
expect("rate limit (81101)", openai.RateLimitError,
       maas("ModelArts.81101", "Too many requests, exceeded rate limit is 2 times per minute.", "TooManyRequests"),
       lambda: [chat(SLOW) for _ in range(3)])
expect("risk control (81011)", openai.PermissionDeniedError,
       maas("ModelArts.81011", "May contain senstive.....", "Forbidden"), lambda: chat(DEMO, "forbidden demo phrase"))
expect("unknown model (81009)", openai.NotFoundError,
       maas("ModelArts.81009", "Invalid model.", "NotFound"), lambda: chat(DEMO, model="gpt-4"))
expect("schema error (vLLM 400)", openai.BadRequestError,
       vllm("[{'type': 'less_than_equal', 'loc': ('body', 'temperature'), 'msg': 'Input should be less than or "
            "equal to 2', 'input': 3, 'ctx': {'le': 2.0}}]"),
       lambda: chat(DEMO, temperature=3))
expect("context length (vLLM 400)", openai.BadRequestError,
       vllm("This model's maximum context length is 4096 tokens. However, you requested 100010 tokens (10 in the "
            "messages, 100000 in the completion). Please reduce the length of the messages or completion."),
       lambda: chat(DEMO, max_tokens=100000))
if len(sys.argv) > 2:
    stalling = openai.OpenAI(base_url=sys.argv[2], api_key=DEMO, max_retries=0)
    said = []
    try:
        for chunk in stalling.chat.completions.create(
                model="up", messages=[{"role": "user", "content": "hi"}], stream=True):
            said.append(chunk.choices[0].delta.content)
    except openai.APIError as e:
        code = e.body.get("code") if isinstance(e.body, dict) else None
        if code != "APIG.0203" or said != ["hi"] or e.message != "Backend timeout":
            print("FAIL %-34s %s %r after %r" % ("stream stalled mid-way", code, e.message, said))
            sys.exit(1)
        print("ok   %-34s %s %s: %s after %r" % ("stream stalled mid-way", type(e).__name__, code, e.message, said))
    except Exception as e:  # noqa: BLE001
        print("FAIL %-34s got %s: %s" % ("stream stalled mid-way", type(e).__name__, e))
        sys.exit(1)
    else:
        print("FAIL %-34s no error after %r" % ("stream stalled mid-way", said))
        sys.exit(1)
print("all SDK checks passed")
