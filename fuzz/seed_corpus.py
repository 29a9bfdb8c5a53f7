#!/usr/bin/env python3
"""Seeds corpus/decoder and corpus/validator with the request bodies of the golden fixtures
(tests/fixtures/validation_golden.json) plus a few decoder edge cases. Run from fuzz/."""
import hashlib
import json
import os

golden = json.load(open("../tests/fixtures/validation_golden.json"))
bodies = {bytes.fromhex(case["body_hex"]) for case in golden}
bodies |= {
    b"NaN", b"[-Infinity, Infinity, NaN]", b'"\\ud800\\udc00\\ud800"', b'{"a":1,"a":2}',
    b"1" * 4301, b"-0", b"1e400", b"[1.5e-10, 0.1, 123456789012345678901234567890]",
    '{"k": "é😀"}'.encode("utf-16"), "[1, 2]".encode("utf-32"), '{"x":null}'.encode("utf-16-le"),
    b'\xef\xbb\xbf{"a": true}', b'"\xed\xa0\x80"', b"[" * 600 + b"]" * 600, b'{"a" 1}', b'"\\u12"',
}
for target in ("decoder", "validator"):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for body in bodies:
        with open(f"corpus/{target}/seed-{hashlib.sha1(body).hexdigest()}", "wb") as f:
            f.write(body)
print(len(bodies), "seeds")
