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


def expect(name, error, call):
    try:
        call()
    except error as e:
        body = e.body if isinstance(e.body, dict) else {}
        print("ok   %-34s %s %s: %s" % (name, type(e).__name__, e.status_code, body.get("code") or body.get("message")))
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

expect("unknown key (81003)", openai.AuthenticationError, lambda: chat("sk-unknown"))
expect("frozen key (81006)", openai.AuthenticationError, lambda: chat(FROZEN))
expect("rate limit (81101)", openai.RateLimitError, lambda: [chat(SLOW) for _ in range(3)])
expect("risk control (81011)", openai.PermissionDeniedError, lambda: chat(DEMO, "forbidden demo phrase"))
expect("unknown model (81009)", openai.NotFoundError, lambda: chat(DEMO, model="gpt-4"))
expect("schema error (vLLM 400)", openai.BadRequestError, lambda: chat(DEMO, temperature=3))
expect("context length (vLLM 400)", openai.BadRequestError, lambda: chat(DEMO, max_tokens=100000))
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
