#!/usr/bin/env python3
"""Generate tests/fixtures/validation_golden.json from the FastAPI + pydantic reference backend.

Dev tool (not part of the crate build). It posts a fixed list of request bodies, as raw bytes, to
the reference app in-process (fastapi.testclient.TestClient, no server) and records the exact
status code and response body text, so the Rust validator can be checked byte for byte.

Set up the pinned reference environment once (CPython 3.11; the json error messages differ in
3.13+, e.g. trailing commas, so keep 3.11):
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install -r /work/shared/reference/requirements.txt

Run (from anywhere):
    /tmp/refvenv/bin/python tools/validation_fixtures/generate.py \
        [--reference-dir /work/shared/reference] [--out tests/fixtures/validation_golden.json]

--reference-dir defaults to ../../../shared/reference relative to this script (i.e. the
directory that holds vllm_reference_app.py next to the crate checkout); --out defaults to
../../tests/fixtures/validation_golden.json relative to this script.

Output: a JSON array, one object per case, keys in this order:
    name          unique snake_case case name
    path          /v1/chat/completions | /v1/completions | /v1/embeddings
    content_type  the Content-Type header sent, or null when no Content-Type header was sent
    body_hex      hex of the exact request body bytes
    body_text     the body decoded as UTF-8 (strict), or null when it is not valid UTF-8
    status        HTTP status returned by the reference
    response      exact response body text, or null for status 200 (accepted; echo not needed)

Case bodies are written below as Python str (sent UTF-8 encoded) or bytes (sent as is). Most are
raw JSON text so that the exact bytes (spacing, number spelling, key order) are visible.
"""
import argparse
import json
import os
import sys

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
EMB = "/v1/embeddings"
JSON_CT = "application/json"

CASES = []  # (name, path, content_type, body_bytes)


def case(name, path, body, content_type=JSON_CT):
    if isinstance(body, str):
        body = body.encode("utf-8")
    assert isinstance(body, bytes), name
    CASES.append((name, path, content_type, body))


# Common fragments (raw JSON text).
MSGS = '[{"role": "user", "content": "Hello"}]'
CHAT_BASE = '"model": "DeepSeek-V3", "messages": ' + MSGS
COMP_BASE = '"model": "DeepSeek-V3", "prompt": "Hello"'
EMB_BASE = '"model": "DeepSeek-V3", "input": "Hello"'


def chat_with(field_json):
    """A valid chat body plus the raw JSON member text `field_json` (e.g. '"n": 0')."""
    return "{" + CHAT_BASE + ", " + field_json + "}"


def comp_with(field_json):
    return "{" + COMP_BASE + ", " + field_json + "}"


def emb_with(field_json):
    return "{" + EMB_BASE + ", " + field_json + "}"


def chat_msgs(messages_json):
    return '{"model": "DeepSeek-V3", "messages": ' + messages_json + "}"


# ---------------------------------------------------------------------------------------------
# Seed examples
# ---------------------------------------------------------------------------------------------
SEED_NO_MODEL = ('{"max_tokens": 20, "messages": [{"role": "system", "content": "You are a helpful '
                 'assistant."}, {"role": "user", "content": "Hello"}], "stream": false, '
                 '"temperature": 1.0}')
case("seed_chat_missing_model", CHAT, SEED_NO_MODEL)
case("seed_chat_extra_field_test", CHAT,
     '{"model": "DeepSeek-V3", "max_tokens": 20, "messages": [{"role": "system", "content": "You are a '
     'helpful assistant."}, {"role": "user", "content": "Hello"}], "stream": false, "temperature": 1.0, '
     '"test": 15}')
case("seed_chat_empty_body", CHAT, "")
case("seed_chat_body_null", CHAT, "null")
case("seed_chat_json_expecting_comma", CHAT,
     '{"model": "DeepSeek-V3" "messages": [{"role": "user", "content": "Hello"}]}')
case("seed_chat_unknown_model_404", CHAT,
     '{"model": "DeepSeek-R1x", "max_tokens": 20, "messages": [{"role": "system", "content": "You are a '
     'helpful assistant."}, {"role": "user", "content": "Hello"}], "stream": false, "temperature": 1.0}')

# ---------------------------------------------------------------------------------------------
# Accepted bodies (status 200) and 404s
# ---------------------------------------------------------------------------------------------
for m in ["DeepSeek-V3", "DeepSeek-R1", "Qwen2.5-72B-32K", "mock-model"]:
    case("ok_chat_minimal_" + m.lower().replace(".", "_").replace("-", "_"), CHAT,
         '{"model": "%s", "messages": [{"role": "user", "content": "Hello"}]}' % m)
case("ok_chat_minimal_compact", CHAT, '{"model":"mock-model","messages":[{"role":"user"}]}')
case("ok_chat_empty_messages_list", CHAT, '{"model": "DeepSeek-V3", "messages": []}')
case("ok_chat_full", CHAT, json.dumps({
    "messages": [
        {"role": "system", "content": "Be brief.", "name": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}], "reasoning_content": "hmm"},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ],
    "model": "DeepSeek-R1", "frequency_penalty": 0.5, "logit_bias": {"50256": -100, "11": 2.5},
    "logprobs": True, "top_logprobs": 5, "max_tokens": 128, "n": 2, "presence_penalty": -0.5,
    "seed": 42, "stop": ["\n\n", "END"], "stream": True, "stream_options": {"include_usage": False},
    "temperature": 0.7, "top_p": 0.9,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                 "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto", "user": "u-1", "use_beam_search": False, "top_k": 40,
    "length_penalty": 1.2, "chat_template_kwargs": {"enable_thinking": True},
}))
case("ok_chat_all_optionals_null", CHAT,
     '{"messages": [{"role": "user", "content": null, "name": null, "tool_call_id": null, "tool_calls": null, '
     '"reasoning_content": null}], "model": "DeepSeek-V3", "frequency_penalty": null, "logit_bias": null, '
     '"logprobs": null, "top_logprobs": null, "max_tokens": null, "n": null, "presence_penalty": null, '
     '"seed": null, "stop": null, "stream": null, "stream_options": null, "temperature": null, "top_p": null, '
     '"tools": null, "tool_choice": null, "user": null, "use_beam_search": null, "top_k": null, '
     '"length_penalty": null, "chat_template_kwargs": null}')
case("ok_chat_keys_reverse_order_whitespace", CHAT,
     '\r\n\t {\n  "messages" :\n [ { "content" : "Hello" , "role" : "user" } ] ,\n  "model" : "DeepSeek-V3"\n}\n\t ')
case("ok_completions_minimal", COMP, '{"model": "DeepSeek-V3", "prompt": "Hello"}')
case("ok_completions_full", COMP, json.dumps({
    "model": "Qwen2.5-72B-32K", "prompt": ["a", "b"], "echo": True, "frequency_penalty": -2,
    "logprobs": 3, "max_tokens": 1, "n": 10, "presence_penalty": 2, "seed": -1, "stop": "\n",
    "stream": True, "stream_options": {"include_usage": True}, "temperature": 0, "top_p": 0,
    "user": "someone"}))
case("ok_embeddings_minimal", EMB, '{"model": "DeepSeek-V3", "input": "Hello"}')
case("ok_embeddings_full", EMB,
     '{"model": "mock-model", "input": [[1, 2], [3]], "encoding_format": "base64", "dimensions": 256, "user": "u"}')

for label, model in [("suffix_x", "DeepSeek-R1x"), ("empty", ""), ("lowercase", "deepseek-v3"),
                     ("leading_space", " DeepSeek-V3"), ("trailing_newline", "DeepSeek-V3\\n"),
                     ("cjk", "模型"), ("emoji", "🤖-bot"), ("quotes_backslash", "a'b\\\"c\\\\d"),
                     ("control_chars", "a\\u0001b\\u007fc\\u2028d"), ("tab", "a\\tb"),
                     ("nul", "x\\u0000y"), ("slash", "org/model")]:
    case("notfound_chat_model_" + label, CHAT, '{"model": "%s", "messages": []}' % model)
case("notfound_completions_model", COMP, '{"model": "gpt-4", "prompt": "Hello"}')
case("notfound_embeddings_model", EMB, '{"model": "text-embedding-3-small", "input": "Hello"}')
case("notfound_completions_model_cjk", COMP, '{"model": "深度求索", "prompt": [1, 2]}')

# ---------------------------------------------------------------------------------------------
# CPython json error classes
# ---------------------------------------------------------------------------------------------
NA = "héllo 你好 😀 "  # non-ASCII prefix text: char offsets != byte offsets (emoji = 1 char, 4 bytes)

json_errs = [
    # Expecting value
    ("expecting_value_after_key", '{"model": }'),
    ("expecting_value_after_key_nonascii", '{"x": "%s", "model": }' % NA),
    ("expecting_value_trailing_comma_array", '{"model": "DeepSeek-V3", "messages": [1,]}'),
    ("expecting_value_trailing_comma_array_nonascii", '{"user": "%s", "messages": [1,]}' % NA),
    ("expecting_value_top_trailing_comma_array", "[1,]"),
    ("expecting_value_leading_garbage", "x{}"),
    ("expecting_value_leading_garbage_nonascii", "é{}"),
    ("expecting_value_lone_minus", "-"),
    ("expecting_value_lone_minus_nested", '{"temperature": -}'),
    ("expecting_value_tru", '{"stream": tru}'),
    ("expecting_value_tru_nonascii", '{"user": "%s", "stream": tru}' % NA),
    ("expecting_value_top_tru", "tru"),
    ("expecting_value_capital_true", '{"stream": True}'),
    ("expecting_value_nan_lowercase", '{"temperature": nan}'),
    ("expecting_value_plus_sign", '{"n": +1}'),
    ("expecting_value_leading_dot", '{"temperature": .5}'),
    ("expecting_value_single_quoted_value", "{\"model\": 'x'}"),
    ("expecting_value_open_array_eof", "["),
    ("expecting_value_key_colon_eof", '{"model":'),
    ("expecting_value_whitespace_only", "   "),
    ("expecting_value_newlines_only", "\n\n"),
    ("expecting_value_form_feed_before_value", "\f{}"),
    ("expecting_value_nbsp_before_value", "\u00a0{}"),
    ("expecting_value_ideographic_space_before_value", "\u3000{}"),
    ("expecting_value_nested_deep_nonascii", '{"messages": [{"role": "user", "content": "%s"}, {"role": ]}' % NA),
    # Expecting property name enclosed in double quotes
    ("expecting_property_name_single_quotes", "{'a':1}"),
    ("expecting_property_name_trailing_comma", '{"a":1,}'),
    ("expecting_property_name_trailing_comma_nonascii", '{"a":"%s",}' % NA),
    ("expecting_property_name_lone_brace", "{"),
    ("expecting_property_name_unquoted_key", '{model: "x"}'),
    ("expecting_property_name_nested", '{"messages": [{"role": "user", content: "x"}]}'),
    ("expecting_property_name_nested_nonascii", '{"user": "%s", "stream_options": {,}}' % NA),
    ("expecting_property_name_after_newline_comma", '{"a": 1,\n\n  }'),
    # Expecting ':' delimiter
    ("expecting_colon_delimiter", '{"model" "x"}'),
    ("expecting_colon_delimiter_eof", '{"model"'),
    ("expecting_colon_delimiter_equals", '{"model"= "x"}'),
    ("expecting_colon_delimiter_nonascii_key", '{"模型" "x"}'),
    ("expecting_colon_delimiter_nested_nonascii", '{"user": "%s", "stream_options": {"include_usage" true}}' % NA),
    # Expecting ',' delimiter
    ("expecting_comma_delimiter_object", '{"a": 1 "b": 2}'),
    ("expecting_comma_delimiter_object_newlines", '{"a": 1\n\n   "b": 2}'),
    ("expecting_comma_delimiter_object_nonascii", '{"user": "%s"\n  "model": "x"}' % NA),
    ("expecting_comma_delimiter_object_eof", '{"a": 1'),
    ("expecting_comma_delimiter_array", '{"stop": ["a" "b"]}'),
    ("expecting_comma_delimiter_array_tabs", '{"stop": ["a"\t\t"b"]}'),
    ("expecting_comma_delimiter_array_nonascii", '{"stop": ["%s" "b"]}' % NA),
    ("expecting_comma_delimiter_array_eof", "[1"),
    ("expecting_comma_delimiter_array_eof_ws", "[1  \n"),
    ("expecting_comma_delimiter_leading_zero", '{"n": 01}'),
    ("expecting_comma_delimiter_trailing_dot", '{"temperature": 1.}'),
    ("expecting_comma_delimiter_exponent_no_digits", '{"temperature": 1e}'),
    ("expecting_comma_delimiter_nested_messages_nonascii",
     '{"messages": [{"role": "user", "content": "%s"} {"role": "user"}]}' % NA),
    ("expecting_comma_delimiter_crlf", '{"model": "x"\r\n"messages": []}'),
    # Unterminated string
    ("unterminated_string_value", '{"model": "DeepSeek-V3'),
    ("unterminated_string_key", '{"mod'),
    ("unterminated_string_nonascii", '{"user": "%s", "model": "abc' % NA),
    ("unterminated_string_value_nonascii_inside", '{"model": "%s' % NA),
    ("unterminated_string_top", '"abc'),
    ("unterminated_string_trailing_backslash", '{"model": "abc\\'),
    # Invalid control character
    ("invalid_control_char_tab", '{"model": "a\tb"}'),
    ("invalid_control_char_newline", '{"model": "a\nb"}'),
    ("invalid_control_char_nul", '{"model": "a\x00b"}'),
    ("invalid_control_char_in_key", '{"mo\x01del": "x"}'),
    ("invalid_control_char_nonascii_before", '{"user": "%s", "model": "a\tb"}' % NA),
    ("invalid_control_char_nonascii_same_string", '{"model": "%s\nb"}' % NA),
    # Invalid \escape
    ("invalid_escape_x", '{"model": "\\x41"}'),
    ("invalid_escape_single_quote", '{"model": "it\\\'s"}'),
    ("invalid_escape_nonascii_before", '{"user": "%s", "model": "\\x"}' % NA),
    ("invalid_escape_backslash_nonascii", '{"model": "\\é"}'),
    ("invalid_escape_in_key", '{"a\\qb": 1}'),
    # Invalid \uXXXX escape
    ("invalid_u_escape_short", '{"model": "\\u12"}'),
    ("invalid_u_escape_non_hex", '{"model": "\\u12g4"}'),
    ("invalid_u_escape_eof", '{"model": "\\u'),
    ("invalid_u_escape_nonascii_before", '{"user": "%s", "model": "\\uZZZZ"}' % NA),
    ("invalid_u_escape_high_surrogate_bad_second", '{"model": "\\ud83d\\u12"}'),
    ("invalid_u_escape_high_surrogate_bad_second_hex", '{"model": "\\ud83d\\uxyz1"}'),
    ("invalid_u_escape_high_surrogate_then_bad_escape", '{"model": "\\ud83d\\x"}'),
    # Extra data
    ("extra_data_two_objects", "{} {}"),
    ("extra_data_trailing_x", "{}x"),
    ("extra_data_trailing_x_nonascii", '{"user": "%s"}x' % NA),
    ("extra_data_after_valid_chat", "{" + CHAT_BASE + "}\n}"),
    ("extra_data_top_leading_zero", "01"),
    ("extra_data_nul_after_object", "{}\x00"),
    ("extra_data_after_whitespace", '{"a": 1}  \n  ,'),
]
for name, body in json_errs:
    case("json_" + name, CHAT, body)

# A handful of JSON errors on the other paths.
case("json_completions_expecting_comma", COMP, '{"model": "DeepSeek-V3" "prompt": "Hi"}')
case("json_completions_unterminated_nonascii", COMP, '{"model": "DeepSeek-V3", "prompt": "你好')
case("json_embeddings_expecting_value", EMB, '{"model": "DeepSeek-V3", "input": [1, 2,]}')
case("json_embeddings_invalid_escape_emoji", EMB, '{"model": "DeepSeek-V3", "input": "😀😀\\z"}')

# BOMs, encodings, invalid UTF-8
case("bom_utf8_valid_chat", CHAT, b"\xef\xbb\xbf" + ("{" + CHAT_BASE + "}").encode())
case("bom_utf8_missing_model", CHAT, b"\xef\xbb\xbf" + b'{"messages": []}')
case("bom_utf8_json_error", CHAT, b"\xef\xbb\xbf" + b'{"model" "x"}')
case("bom_utf8_only", CHAT, b"\xef\xbb\xbf")
case("bom_utf8_double", CHAT, b"\xef\xbb\xbf\xef\xbb\xbf{}")
case("utf16_le_bom_valid_chat", CHAT, ("\ufeff{" + CHAT_BASE + "}").encode("utf-16-le"))
case("utf16_be_bom_valid_chat", CHAT, ("\ufeff{" + CHAT_BASE + "}").encode("utf-16-be"))
case("utf16_le_bom_missing_model", CHAT, "\ufeff{\"messages\": []}".encode("utf-16-le"))
case("utf16_le_bom_json_error", CHAT, '\ufeff{"model" "x"}'.encode("utf-16-le"))
case("utf16_le_no_bom_valid_chat", CHAT, ("{" + CHAT_BASE + "}").encode("utf-16-le"))
case("utf32_le_bom_valid_chat", CHAT, ("\ufeff{" + CHAT_BASE + "}").encode("utf-32-le"))
case("invalid_utf8_ff_start", CHAT, b"\xff{}")
case("invalid_utf8_in_string", CHAT, b'{"model": "Deep\xffSeek", "messages": []}')
case("invalid_utf8_truncated_sequence", CHAT, b'{"model": "\xe4\xbd", "messages": []}')
case("invalid_utf8_overlong_slash", CHAT, b'{"model": "\xc0\xaf", "messages": []}')
case("invalid_utf8_latin1_e_acute", CHAT, b'{"user": "caf\xe9", "messages": []}')
case("invalid_utf8_in_json_error_body", CHAT, b'{"model": "\xff" "x"}')
case("utf8_encoded_surrogate_in_missing_model_input", CHAT, b'{"messages": [], "user": "a\xed\xa0\x80b"}')
case("utf8_encoded_surrogate_model_404", CHAT, b'{"model": "a\xed\xa0\x80b", "messages": []}')
case("json_escaped_lone_surrogate_in_error_input", CHAT, '{"messages": [], "user": "a\\ud800b"}')
case("json_escaped_lone_surrogate_accepted_echo", CHAT, chat_with('"user": "a\\ud800b"'))
case("json_escaped_surrogate_pair_error_input", CHAT, '{"messages": [], "user": "\\ud83d\\ude00"}')
case("invalid_utf8_text_plain", CHAT, b'{"model": "\xff"}', "text/plain")

# Special numbers
NUMS = [("nan", "NaN"), ("infinity", "Infinity"), ("neg_infinity", "-Infinity"),
        ("huge_int_30_digits", "123456789012345678901234567890"),
        ("huge_neg_int", "-1000000000000000000000000000000000"),
        ("float_1e400", "1e400"), ("float_neg_1e400", "-1e400"), ("neg_zero", "-0"), ("neg_zero_float", "-0.0"),
        ("float_1E5", "1E5"), ("float_0_1", "0.1"), ("float_1e_minus_7", "1e-7"), ("float_1e16", "1e16"),
        ("float_1_5", "1.5"), ("float_many_digits", "0.30000000000000004"), ("float_1e_plus_2", "1e+2"),
        ("float_2_0", "2.0"), ("int_2", "2"), ("float_tiny_denormal", "5e-324"), ("float_1e_minus_400", "1e-400")]
for label, num in NUMS:
    # temperature: float, 0 <= t <= 2 (error message shows repr of the parsed float)
    case("num_temperature_" + label, CHAT, chat_with('"temperature": ' + num))
for label, num in NUMS:
    # max_tokens: int >= 1 (int coercion from floats / specials)
    case("num_max_tokens_" + label, CHAT, chat_with('"max_tokens": ' + num))
for label in ["nan", "infinity", "huge_int_30_digits", "float_1e400"]:
    num = dict(NUMS)[label]
    case("num_length_penalty_unbounded_" + label, CHAT, chat_with('"length_penalty": ' + num))
    case("num_seed_unbounded_" + label, CHAT, chat_with('"seed": ' + num))
case("num_model_nan", CHAT, '{"model": NaN, "messages": []}')
case("num_int_5000_digits", CHAT, chat_with('"seed": ' + "9" * 5000))
case("num_missing_model_input_has_specials", CHAT,
     '{"messages": [], "temperature": NaN, "top_p": -Infinity, "seed": 123456789012345678901234567890, '
     '"length_penalty": 1e-7, "frequency_penalty": -0.0, "presence_penalty": 1E5}')

# Top-level non-objects
for label, body in [("array", "[]"), ("array_of_object", "[{" + CHAT_BASE + "}]"), ("string", '"hello"'),
                    ("number", "42"), ("float", "1.5"), ("true", "true"), ("false", "false"),
                    ("empty_string", '""'), ("empty_object", "{}"), ("nan", "NaN"),
                    ("string_nonascii", '"你好 \'x\'"')]:
    case("toplevel_" + label, CHAT, body)
case("toplevel_array_completions", COMP, "[1, 2]")
case("toplevel_string_embeddings", EMB, '"text"')
case("toplevel_empty_object_completions", COMP, "{}")
case("toplevel_empty_object_embeddings", EMB, "{}")
case("toplevel_null_embeddings", EMB, "null")
case("toplevel_empty_embeddings", EMB, "")

# Deep nesting (json recursion limit vs pydantic)
case("deep_nesting_chat_template_kwargs_200", CHAT, chat_with('"chat_template_kwargs": {"a": ' + "[" * 200 + "]" * 200 + "}"))
case("deep_nesting_top_array_3000", CHAT, "[" * 3000 + "]" * 3000)
case("deep_nesting_prompt_too_deep", COMP, '{"model": "DeepSeek-V3", "prompt": [[[[1]]]]}')

# ---------------------------------------------------------------------------------------------
# Missing required fields
# ---------------------------------------------------------------------------------------------
case("missing_chat_messages", CHAT, '{"model": "DeepSeek-V3"}')
case("missing_chat_model", CHAT, '{"messages": [{"role": "user", "content": "Hello"}]}')
case("missing_chat_both_with_extra", CHAT, '{"stream": true, "foo": "bar"}')
case("missing_chat_model_messages_null", CHAT, '{"messages": null, "model": null}')
case("missing_completions_model", COMP, '{"prompt": "Hello"}')
case("missing_completions_prompt", COMP, '{"model": "DeepSeek-V3"}')
case("missing_completions_both", COMP, '{"max_tokens": 5}')
case("missing_completions_prompt_null", COMP, '{"model": "DeepSeek-V3", "prompt": null}')
case("missing_embeddings_model", EMB, '{"input": "Hello"}')
case("missing_embeddings_input", EMB, '{"model": "DeepSeek-V3"}')
case("missing_embeddings_both", EMB, '{"encoding_format": "float"}')
case("missing_embeddings_input_null", EMB, '{"model": "DeepSeek-V3", "input": null}')

# ---------------------------------------------------------------------------------------------
# Wrong types for every field (chat)
# ---------------------------------------------------------------------------------------------
STR_BAD = [("int", "1"), ("float", "1.5"), ("true", "true"), ("list", '["a"]'), ("dict", '{"a": 1}')]
for label, v in STR_BAD:
    case("type_chat_model_" + label, CHAT, '{"model": %s, "messages": []}' % v)
for label, v in STR_BAD[:3]:
    case("type_chat_user_" + label, CHAT, chat_with('"user": ' + v))

INT_BAD = [("str_20", '"20"'), ("str_abc", '"abc"'), ("float_1_5", "1.5"), ("float_1_0", "1.0"),
           ("true", "true"), ("false", "false"), ("list", "[1]"), ("dict", "{}"), ("str_1_0", '"1.0"'),
           ("str_padded", '" 7 "'), ("str_1e3", '"1e3"'), ("str_hex", '"0x10"'), ("str_underscore", '"1_000"'),
           ("str_empty", '""'), ("str_neg", '"-3"'), ("str_plus", '"+3"'), ("str_1_5", '"1.5"')]
for label, v in INT_BAD:
    case("type_chat_seed_" + label, CHAT, chat_with('"seed": ' + v))
for field in ["top_logprobs", "max_tokens", "n", "top_k"]:
    for label, v in [("str_20", '"20"'), ("str_abc", '"abc"'), ("float_1_5", "1.5"), ("float_1_0", "1.0"),
                     ("true", "true"), ("list", "[1]")]:
        case("type_chat_%s_%s" % (field, label), CHAT, chat_with('"%s": %s' % (field, v)))

FLOAT_BAD = [("str_0_5", '"0.5"'), ("str_x", '"x"'), ("true", "true"), ("false", "false"), ("list", "[0.5]"),
             ("dict", "{}"), ("str_inf", '"inf"'), ("str_nan", '"nan"'), ("str_padded", '" 0.5 "'),
             ("str_empty", '""'), ("str_underscore", '"1_0.5"')]
for label, v in FLOAT_BAD:
    case("type_chat_length_penalty_" + label, CHAT, chat_with('"length_penalty": ' + v))
for field in ["frequency_penalty", "presence_penalty", "temperature", "top_p"]:
    for label, v in [("str_0_5", '"0.5"'), ("str_x", '"x"'), ("true", "true"), ("list", "[0.5]")]:
        case("type_chat_%s_%s" % (field, label), CHAT, chat_with('"%s": %s' % (field, v)))

BOOL_BAD = [("str_true", '"true"'), ("str_yes", '"yes"'), ("str_maybe", '"maybe"'), ("int_1", "1"), ("int_2", "2"),
            ("int_0", "0"), ("float_0_0", "0.0"), ("float_1_0", "1.0"), ("float_0_5", "0.5"), ("str_on", '"on"'),
            ("str_off", '"off"'), ("str_0", '"0"'), ("str_1", '"1"'), ("str_TRUE", '"TRUE"'), ("str_f", '"f"'),
            ("str_n", '"n"'), ("str_empty", '""'), ("list", "[]"), ("dict", "{}"), ("int_neg_1", "-1")]
for label, v in BOOL_BAD:
    case("type_chat_stream_" + label, CHAT, chat_with('"stream": ' + v))
for field in ["logprobs", "use_beam_search"]:
    for label, v in [("str_yes", '"yes"'), ("str_maybe", '"maybe"'), ("int_2", "2"), ("int_1", "1")]:
        case("type_chat_%s_%s" % (field, label), CHAT, chat_with('"%s": %s' % (field, v)))

for label, v in [("string", '"hello"'), ("dict", '{"role": "user"}'), ("number", "1"), ("true", "true"),
                 ("list_of_lists", "[[]]")]:
    case("type_chat_messages_" + label, CHAT, chat_msgs(v))

for label, v in [("number", "1"), ("dict", '{"a": "b"}'), ("list_of_numbers", "[1, 2]"),
                 ("list_mixed", '["a", 1, "b", 2.5]'), ("string", '"###"'), ("list_strings", '["a", "b"]'),
                 ("empty_list", "[]"), ("list_of_lists", '[["a"]]'), ("true", "true"), ("list_null", "[null]")]:
    case("union_chat_stop_" + label, CHAT, chat_with('"stop": ' + v))

for label, v in [("list", "[]"), ("string", '"x"'), ("number", "5"), ("value_str", '{"1": "x"}'),
                 ("value_str_number", '{"1": "2.5"}'), ("value_bool", '{"1": true}'), ("value_int", '{"1": 1}'),
                 ("value_nan", '{"1": NaN}'), ("value_null", '{"1": null}'), ("value_list", '{"1": [1]}'),
                 ("multi_bad_values", '{"a": "x", "b": 1, "c": "y"}')]:
    case("dict_chat_logit_bias_" + label, CHAT, chat_with('"logit_bias": ' + v))
for label, v in [("list", "[]"), ("string", '"x"'), ("number", "1"), ("nested_ok", '{"a": {"b": [1, null]}}')]:
    case("dict_chat_template_kwargs_" + label, CHAT, chat_with('"chat_template_kwargs": ' + v))

for label, v in [("auto", '"auto"'), ("none", '"none"'), ("required", '"required"'), ("bogus", '"bogus"'),
                 ("upper_auto", '"AUTO"'), ("dict", '{"type": "function", "function": {"name": "f"}}'),
                 ("empty_dict", "{}"), ("number", "1"), ("list", '["auto"]'), ("true", "true"),
                 ("nonascii", '"自动"')]:
    case("union_chat_tool_choice_" + label, CHAT, chat_with('"tool_choice": ' + v))

# tools (nested models)
for label, v in [
    ("empty_list", "[]"),
    ("string", '"x"'),
    ("dict", '{"type": "function"}'),
    ("item_empty_dict", "[{}]"),
    ("item_missing_function", '[{"type": "function"}]'),
    ("item_only_function", '[{"function": {"name": "f"}}]'),
    ("item_wrong_type_literal", '[{"type": "fn", "function": {"name": "f"}}]'),
    ("item_type_number", '[{"type": 1, "function": {"name": "f"}}]'),
    ("function_extra_key", '[{"type": "function", "function": {"name": "f", "x": 1}}]'),
    ("function_missing_name", '[{"type": "function", "function": {"description": "d"}}]'),
    ("function_name_number", '[{"type": "function", "function": {"name": 1}}]'),
    ("function_parameters_list", '[{"type": "function", "function": {"name": "f", "parameters": []}}]'),
    ("function_is_string", '[{"type": "function", "function": "f"}]'),
    ("function_is_list", '[{"type": "function", "function": [{"name": "f"}]}]'),
    ("item_extra_key", '[{"type": "function", "function": {"name": "f"}, "strict": true}]'),
    ("item_string", '["get_weather"]'),
    ("item_number", "[1]"),
    ("item_null", "[null]"),
    ("second_item_bad", '[{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g", "y": 2}}]'),
    ("many_errors", '[{"type": "x", "function": {"description": 5, "z": 0}, "extra": 1}]'),
]:
    case("tools_chat_" + label, CHAT, chat_with('"tools": ' + v))

# stream_options (nested model)
for label, v in [("extra_key", '{"include_usage": true, "foo": 1}'), ("string", '"x"'),
                 ("include_usage_yes", '{"include_usage": "yes"}'), ("include_usage_maybe", '{"include_usage": "maybe"}'),
                 ("include_usage_2", '{"include_usage": 2}'), ("include_usage_null", '{"include_usage": null}'),
                 ("empty_dict", "{}"), ("list", "[]"), ("number", "1"), ("true", "true"),
                 ("list_of_dict", '[{"include_usage": true}]'),
                 ("two_extra_keys_and_bad_value", '{"b": 1, "include_usage": "maybe", "a": 2}')]:
    case("stream_options_chat_" + label, CHAT, chat_with('"stream_options": ' + v))

# messages items (nested models)
for label, v in [
    ("item_string", '["hi"]'),
    ("item_number", "[1]"),
    ("item_null", "[null]"),
    ("item_list", '[["user", "hi"]]'),
    ("item_missing_role", '[{"content": "hi"}]'),
    ("item_empty_dict", "[{}]"),
    ("item_bad_role", '[{"role": "bot", "content": "hi"}]'),
    ("item_role_number", '[{"role": 1, "content": "hi"}]'),
    ("item_role_upper", '[{"role": "User", "content": "hi"}]'),
    ("item_role_developer", '[{"role": "developer", "content": "hi"}]'),
    ("item_extra_key", '[{"role": "user", "content": "hi", "foo": 1}]'),
    ("item_extra_keys_and_bad_role", '[{"z": 1, "role": "x", "a": 2}]'),
    ("content_number", '[{"role": "user", "content": 1}]'),
    ("content_true", '[{"role": "user", "content": true}]'),
    ("content_dict", '[{"role": "user", "content": {"type": "text"}}]'),
    ("content_list_of_strings", '[{"role": "user", "content": ["a", "b"]}]'),
    ("content_list_of_numbers", '[{"role": "user", "content": [1]}]'),
    ("content_list_of_dicts_ok", '[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]'),
    ("content_list_mixed", '[{"role": "user", "content": [{"type": "text"}, "b"]}]'),
    ("content_empty_list", '[{"role": "user", "content": []}]'),
    ("content_empty_string", '[{"role": "user", "content": ""}]'),
    ("name_number", '[{"role": "user", "content": "hi", "name": 1}]'),
    ("tool_call_id_number", '[{"role": "tool", "content": "hi", "tool_call_id": 7}]'),
    ("tool_calls_string", '[{"role": "assistant", "tool_calls": "x"}]'),
    ("tool_calls_list_of_strings", '[{"role": "assistant", "tool_calls": ["x"]}]'),
    ("tool_calls_dict", '[{"role": "assistant", "tool_calls": {"id": "x"}}]'),
    ("reasoning_content_list", '[{"role": "assistant", "reasoning_content": []}]'),
    ("second_and_fourth_bad", '[{"role": "user"}, {"role": "x"}, {"role": "user"}, "y"]'),
    ("all_fields_bad", '[{"role": 5, "content": 5, "name": 5, "tool_call_id": 5, "tool_calls": 5, "reasoning_content": 5, "extra": 5}]'),
]:
    case("messages_chat_" + label, CHAT, chat_msgs(v))
case("messages_chat_empty_list_missing_model", CHAT, '{"messages": []}')

# Bounds (chat)
for field, vals in [("temperature", ["-0.1", "0", "2", "2.1", "2.0000001", "-0"]),
                    ("top_p", ["1.0001", "0", "1", "-0.0001"]),
                    ("n", ["0", "1", "10", "11", "-1"]),
                    ("top_logprobs", ["-1", "0", "20", "21"]),
                    ("max_tokens", ["0", "-1", "1", "1000000"]),
                    ("frequency_penalty", ["2.5", "-2.5", "2", "-2", "2.0001"]),
                    ("presence_penalty", ["2.5", "-2.5", "3"])]:
    for v in vals:
        label = v.replace("-", "neg_").replace(".", "_")
        case("bound_chat_%s_%s" % (field, label), CHAT, chat_with('"%s": %s' % (field, v)))
case("bound_chat_n_float_11_0", CHAT, chat_with('"n": 11.0'))
case("bound_chat_n_str_0", CHAT, chat_with('"n": "0"'))
case("bound_chat_temperature_str_3", CHAT, chat_with('"temperature": "3"'))
case("bound_chat_max_tokens_false", CHAT, chat_with('"max_tokens": false'))

# ---------------------------------------------------------------------------------------------
# Several errors at once, ordering, duplicate keys
# ---------------------------------------------------------------------------------------------
case("multi_chat_declaration_order", CHAT,
     '{"user": 1, "top_p": 5, "temperature": 5, "n": 0, "messages": "x", "model": 1}')
case("multi_chat_extras_in_body_order", CHAT,
     '{"zzz": 1, "model": "DeepSeek-V3", "aaa": 2, "messages": [], "mmm": 3}')
case("multi_chat_extras_and_type_errors", CHAT,
     '{"foo": 1, "temperature": "hot", "bar": [1], "model": 5, "n": "x", "baz": null}')
case("multi_chat_missing_both_plus_extra_plus_bound", CHAT, '{"extra": true, "temperature": -1}')
case("multi_chat_nested_and_top", CHAT,
     '{"messages": [{"role": "x", "foo": 1}], "stream_options": {"bar": 2}, "model": 1, "qux": 3}')
case("multi_chat_seed_example_plus_extra", CHAT,
     '{"max_tokens": 20, "messages": [{"role": "system", "content": "You are a helpful assistant."}, '
     '{"role": "user", "content": "Hello"}], "stream": false, "temperature": 1.0, "test": 15}')
case("multi_completions_all_bad", COMP,
     '{"prompt": {}, "model": [], "n": 0, "echo": "maybe", "stop": 1, "extra": 1}')
case("multi_embeddings_all_bad", EMB,
     '{"dimensions": "x", "input": 1.5, "encoding_format": "hex", "model": null, "user": 1, "x": 1}')
case("dup_chat_model_int_then_valid", CHAT,
     '{"model": 1, "model": "DeepSeek-V3", "messages": [{"role": "user", "content": "Hello"}]}')
case("dup_chat_model_valid_then_int", CHAT,
     '{"model": "DeepSeek-V3", "messages": [{"role": "user", "content": "Hello"}], "model": 1}')
case("dup_chat_extra_key_twice", CHAT,
     '{"foo": 1, "model": "DeepSeek-V3", "messages": [], "foo": 2}')
case("dup_chat_missing_model_input_shows_last_value", CHAT,
     '{"messages": [], "n": 1, "user": "a", "n": 2}')
case("dup_chat_unknown_model_then_known", CHAT,
     '{"model": "nope", "messages": [], "model": "mock-model"}')
case("order_chat_unusual_keys_first", CHAT,
     '{"temperature": 0.5, "stream": true, "messages": [{"content": "Hi", "role": "user"}], "model": "DeepSeek-V3"}')
case("order_chat_missing_model_unusual_order_input", CHAT,
     '{"top_k": 1, "stop": ["x"], "messages": [{"content": "Hi", "role": "user"}], "seed": 3}')

# ---------------------------------------------------------------------------------------------
# Python repr care: strings in error inputs
# ---------------------------------------------------------------------------------------------
REPR = [
    ("single_quote", "it's"),
    ("double_quote", 'say "hi"'),
    ("both_quotes", "it's \"x\""),
    ("backslash", "C:\\path\\n"),
    ("newline_tab", "a\nb\tc\rd"),
    ("ctrl_01_7f", "a\x01b\x7fc\x1bd"),
    ("line_sep_2028_2029", "a\u2028b\u2029c"),
    ("nonascii_latin", "café naïve"),
    ("cjk", "你好，世界"),
    ("emoji", "😀👍🏽"),
    ("nbsp_soft_hyphen", "a\u00a0b\u00adc"),
    ("zero_width_joiner_bom", "a\u200db\ufeffc"),
    ("combining_accent", "e\u0301"),
    ("private_use", "\ue000"),
    ("c1_control_85", "a\u0085b"),
    ("emoji_unicode15_shaking_face", "\U0001fae8"),
    ("unicode15_cjk_ext_h", "\U00031350"),
    ("only_single_quotes", "'''"),
    ("empty", ""),
    ("nul_char", "a\x00b"),
]
for label, s in REPR:
    # As the value of an int field: error input is repr(str).
    case("repr_chat_n_value_" + label, CHAT, chat_with('"n": ' + json.dumps(s, ensure_ascii=False)))
for label, s in REPR[:12]:
    # As an unknown key: loc shows repr(key).
    case("repr_chat_extra_key_" + label, CHAT, chat_with(json.dumps(s, ensure_ascii=False) + ": 1"))
for label, s in REPR[:8]:
    # In a missing-model error: input is repr of the whole dict.
    case("repr_chat_missing_model_dict_input_" + label, CHAT,
         '{"messages": [{"role": "user", "content": %s}]}' % json.dumps(s, ensure_ascii=False))
case("repr_chat_n_value_ascii_escaped_json", CHAT, chat_with('"n": "\\u00e9\\u4f60\\ud83d\\ude00\\/\\b\\f"'))
case("repr_embeddings_dimensions_quotes", EMB, emb_with('"dimensions": "it\'s \\"q\\""'))

# ---------------------------------------------------------------------------------------------
# Content-Type variants
# ---------------------------------------------------------------------------------------------
VALID_CHAT = "{" + CHAT_BASE + "}"
case("ctype_none_valid", CHAT, VALID_CHAT, None)
case("ctype_none_missing_model", CHAT, '{"messages": []}', None)
case("ctype_none_json_error", CHAT, '{"model" 1}', None)
case("ctype_none_empty_body", CHAT, "", None)
case("ctype_text_plain_valid_json", CHAT, VALID_CHAT, "text/plain")
case("ctype_text_plain_nonascii_quote", CHAT, '{"model": "it\'s 你好"}', "text/plain")
case("ctype_text_plain_empty_body", CHAT, "", "text/plain")
case("ctype_text_plain_invalid_json", CHAT, "{oops", "text/plain")
case("ctype_json_charset_utf8", CHAT, VALID_CHAT, "application/json; charset=utf-8")
case("ctype_json_charset_utf8_missing_model", CHAT, '{"messages": []}', "application/json; charset=utf-8")
case("ctype_vnd_api_json", CHAT, VALID_CHAT, "application/vnd.api+json")
case("ctype_vnd_api_json_error", CHAT, '{"model": "x",}', "application/vnd.api+json")
case("ctype_uppercase_json", CHAT, VALID_CHAT, "APPLICATION/JSON")
case("ctype_json_x", CHAT, VALID_CHAT, "application/jsonx")
case("ctype_form_urlencoded", CHAT, "model=DeepSeek-V3", "application/x-www-form-urlencoded")
case("ctype_octet_stream", CHAT, VALID_CHAT, "application/octet-stream")
case("ctype_garbage_no_slash", CHAT, VALID_CHAT, "json")
case("ctype_empty_string", CHAT, VALID_CHAT, "")
case("ctype_text_json", CHAT, VALID_CHAT, "text/json")
case("ctype_none_completions_valid", COMP, '{"model": "DeepSeek-V3", "prompt": "x"}', None)
case("ctype_text_plain_embeddings", EMB, '{"model": "DeepSeek-V3", "input": "x"}', "text/plain")

# ---------------------------------------------------------------------------------------------
# /v1/completions
# ---------------------------------------------------------------------------------------------
PROMPTS = [("string", '"Hello"'), ("empty_string", '""'), ("list_int", "[1, 2, 3]"), ("list_list_int", "[[1, 2], [3]]"),
           ("list_str", '["a", "b"]'), ("empty_list", "[]"), ("list_empty_list", "[[]]"), ("list_float", "[1.5]"),
           ("list_float_integral", "[1.0, 2.0]"), ("list_list_str", '[["a"]]'), ("dict", '{"a": 1}'),
           ("nested_too_deep", "[[[1]]]"), ("number", "1"), ("float", "1.5"), ("true", "true"),
           ("list_bool", "[true]"), ("list_str_int_mixed", '["a", 1]'), ("list_int_str_mixed", '[1, "a"]'),
           ("list_list_and_str", '[[1], "a"]'), ("list_null", "[null]"), ("list_str_numeric", '["1", "2"]'),
           ("list_dict", '[{"a": 1}]'), ("list_list_float", "[[1.5]]"), ("list_huge_int", "[123456789012345678901234567890]")]
for label, v in PROMPTS:
    case("completions_prompt_" + label, COMP, '{"model": "DeepSeek-V3", "prompt": %s}' % v)
for field, vals in [("echo", [("str_yes", '"yes"'), ("int_1", "1"), ("int_2", "2")]),
                    ("logprobs", [("str_abc", '"abc"'), ("float_1_5", "1.5"), ("true", "true"), ("neg", "-5")]),
                    ("max_tokens", [("zero", "0"), ("null", "null"), ("str", '"16"')]),
                    ("n", [("null", "null"), ("zero", "0"), ("eleven", "11"), ("float", "2.5")]),
                    ("temperature", [("neg", "-0.1"), ("2_1", "2.1")]),
                    ("top_p", [("1_0001", "1.0001")]),
                    ("frequency_penalty", [("2_5", "2.5")]),
                    ("presence_penalty", [("neg_2_5", "-2.5")]),
                    ("stop", [("number", "1"), ("list_mixed", '["a", 1]')]),
                    ("stream_options", [("extra_key", '{"include_usage": true, "foo": 1}'), ("string", '"x"')]),
                    ("seed", [("str_x", '"x"')]),
                    ("user", [("int", "1")]),
                    ("messages", [("extra_field", '[{"role": "user", "content": "x"}]')]),
                    ("suffix", [("extra_field", '"x"')])]:
    for label, v in vals:
        case("completions_%s_%s" % (field, label), COMP, comp_with('"%s": %s' % (field, v)))

# ---------------------------------------------------------------------------------------------
# /v1/embeddings
# ---------------------------------------------------------------------------------------------
for label, v in PROMPTS:
    case("embeddings_input_" + label, EMB, '{"model": "DeepSeek-V3", "input": %s}' % v)
for field, vals in [("encoding_format", [("float", '"float"'), ("base64", '"base64"'), ("upper", '"FLOAT"'),
                                         ("hex", '"hex"'), ("number", "1"), ("null", "null"), ("list", '["float"]')]),
                    ("dimensions", [("str_x", '"x"'), ("float", "1.5"), ("true", "true"), ("str_num", '"8"'),
                                    ("null", "null"), ("neg", "-1")]),
                    ("user", [("int", "1"), ("null", "null")]),
                    ("truncate_prompt_tokens", [("extra_field", "5")])]:
    for label, v in vals:
        case("embeddings_%s_%s" % (field, label), EMB, emb_with('"%s": %s' % (field, v)))
for label, s in [("single_quote", "it's"), ("both_quotes", "it's \"x\""), ("backslash_newline", "a\\b\nc"),
                 ("ctrl", "\x01\x7f\u2028"), ("emoji_cjk", "你好😀")]:
    # String inputs that fail: as a member of a list mixed with ints, and as a whole dict repr.
    case("embeddings_repr_input_mixed_list_" + label, EMB,
         '{"model": "DeepSeek-V3", "input": [1, %s]}' % json.dumps(s, ensure_ascii=False))
    case("embeddings_repr_missing_model_input_" + label, EMB,
         '{"input": %s}' % json.dumps(s, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------
# Found in review: sizes beyond i64 and f64, and lone surrogates where a number is expected.
# ---------------------------------------------------------------------------------------------
for label, v in [("float_1e20", "1e20"), ("float_9_3e18", "9.3e18"), ("float_i64_max", "9.223372036854776e18"),
                 ("float_neg_1e20", "-1e20"), ("float_just_inside", "9.2e18"),
                 ("str_5000_digits", '"' + "1" * 5000 + '"'), ("str_4300_digits", '"' + "1" * 4300 + '"'),
                 ("int_40_digits", "1" + "0" * 39)]:
    case("size_max_tokens_" + label, CHAT, chat_with('"max_tokens": %s' % v))
    case("size_seed_" + label, CHAT, chat_with('"seed": %s' % v))
for label, v in [("int_400_digits", "1" + "0" * 400), ("int_309_digits", "1" + "0" * 308), ("neg_int_400_digits", "-1" + "0" * 400)]:
    case("size_length_penalty_" + label, CHAT, chat_with('"length_penalty": %s' % v))
    case("size_temperature_" + label, CHAT, chat_with('"temperature": %s' % v))
for field in ["seed", "temperature", "stream", "n"]:
    case("lone_surrogate_in_%s" % field, CHAT, chat_with('"%s": "1\\ud800"' % field))


# ---------------------------------------------------------------------------------------------
def default_reference_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "reference"))


def default_out():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "validation_golden.json"))


def make_client(reference_dir):
    reference_dir = os.path.abspath(reference_dir)
    if not os.path.isfile(os.path.join(reference_dir, "vllm_reference_app.py")):
        sys.exit("vllm_reference_app.py not found in %s (use --reference-dir)" % reference_dir)
    sys.path.insert(0, reference_dir)
    from fastapi.testclient import TestClient  # noqa: E402
    from vllm_reference_app import app  # noqa: E402
    # raise_server_exceptions=False: a server-side crash is recorded as the 500 the client would see.
    return TestClient(app, raise_server_exceptions=False)


def send(client, path, content_type, body):
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.post(path, content=body, headers=headers)
    return r.status_code, r.content.decode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", default=default_reference_dir())
    ap.add_argument("--out", default=default_out())
    args = ap.parse_args()
    client = make_client(args.reference_dir)

    names = [c[0] for c in CASES]
    dups = sorted({n for n in names if names.count(n) > 1})
    assert not dups, "duplicate case names: %s" % dups

    out = []
    for name, path, content_type, body in CASES:
        status, text = send(client, path, content_type, body)
        try:
            body_text = body.decode("utf-8")
        except UnicodeDecodeError:
            body_text = None
        out.append({
            "name": name,
            "path": path,
            "content_type": content_type,
            "body_hex": body.hex(),
            "body_text": body_text,
            "status": status,
            "response": None if status == 200 else text,
        })

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")

    by_status, by_path = {}, {}
    for c in out:
        by_status[c["status"]] = by_status.get(c["status"], 0) + 1
        by_path[c["path"]] = by_path.get(c["path"], 0) + 1
    print("wrote %d cases to %s" % (len(out), args.out))
    print("by path:", json.dumps(by_path, sort_keys=True))
    print("by status:", json.dumps(by_status, sort_keys=True))


if __name__ == "__main__":
    main()
