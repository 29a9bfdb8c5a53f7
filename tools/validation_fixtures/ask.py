#!/usr/bin/env python3
"""Ask the FastAPI + pydantic reference backend what it answers for request bodies.

Dev tool for diffing the Rust validator against the reference quickly. Set up the venv as
described in generate.py (python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install -r
/work/shared/reference/requirements.txt), then:

    printf '%s\n' '"{\"model\": 1}"' '"{}"' | /tmp/refvenv/bin/python tools/validation_fixtures/ask.py
    ... | ask.py --path /v1/embeddings --content-type text/plain
    ... | ask.py --no-content-type

Input: one request body per line, written as a JSON string literal (e.g. "{\"model\": 1}").
Blank lines are skipped. The decoded string is sent UTF-8 encoded; lone surrogates U+DC80..U+DCFF
stand for raw bytes 0x80..0xFF (surrogateescape, so "\udcff" sends an invalid 0xFF byte) and any
other lone surrogate is sent as its (invalid) 3-byte UTF-8 form (surrogatepass).
Output: one line per body: status<TAB>exact response body text.
"""
import argparse
import json
import os
import sys


def encode_body(s):
    out = bytearray()
    for ch in s:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append(cp - 0xDC00)
        else:
            out += ch.encode("utf-8", "surrogatepass")
    return bytes(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="status<TAB>body from the reference for each stdin body")
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--content-type", default="application/json")
    ap.add_argument("--no-content-type", action="store_true", help="send no Content-Type header")
    ap.add_argument("--reference-dir",
                    default=os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "reference")))
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.reference_dir))
    from fastapi.testclient import TestClient
    from vllm_reference_app import app

    client = TestClient(app, raise_server_exceptions=False)
    headers = {} if args.no_content_type else {"content-type": args.content_type}
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit("line %d: not a JSON string literal: %s" % (lineno, e))
        if not isinstance(body, str):
            sys.exit("line %d: expected a JSON string literal, got %s" % (lineno, type(body).__name__))
        r = client.post(args.path, content=encode_body(body), headers=headers)
        sys.stdout.write("%d\t%s\n" % (r.status_code, r.content.decode("utf-8")))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
