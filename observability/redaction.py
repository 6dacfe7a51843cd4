"""Task-token redaction for every log line the SDK or Core writes.

Task tokens are bearer credentials: whoever holds one can complete or fail the activity it
names. The SDK prints them anyway: its DEBUG lines as Python bytes reprs ("Running activity X
(token b'...')") and protobuf text ("task_token: \"...\""), Core's warnings as base64
("TaskToken(CiQ...)"). Every SDK record is passed through `redact_tokens` / `redacted` before
any renderer sees it, so neither the console nor the JSON log, nor LOG_FILE, can show one.

Standard library only; pure functions, tested directly in tests/test_secrets.py.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

_TOKEN_PATTERNS = (
    # a Python bytes literal, whatever it holds: the SDK has no other bytes worth printing
    (
        re.compile(r"""(?<![\w'"])b(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""),
        f"b'{REDACTED}'",
    ),
    # a protobuf text field holding a token
    (re.compile(r'(task_token\s*[:=]\s*)"(?:[^"\\\n]|\\.)*"'), f'\\1"{REDACTED}"'),
    (re.compile(r"TaskToken\([^)]*\)"), f"TaskToken({REDACTED})"),
    # a token in base64 that arrives some other way: a long run of the base64 alphabet
    # (tokens are 100-300 characters), mixing upper and lower case and digits as paths,
    # ids and hex digests of that length do not
    (
        re.compile(
            r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])"
            r"(?=[A-Za-z0-9+/]*[0-9])[A-Za-z0-9+/]{80,}={0,2}"
        ),
        REDACTED,
    ),
)


def redact_tokens(text: str) -> str:
    """`text` without anything that could be a task token (bytes repr, protobuf text, base64)."""
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redacted(value: Any, key: str = "") -> Any:
    """`value` (a log field named `key`) with tokens removed, recursively: a field whose name
    mentions a token is dropped whole, bytes are never shown, strings go through
    `redact_tokens`."""
    if "token" in key.lower():
        return REDACTED
    if isinstance(value, bytes):
        return f"b'{REDACTED}'"
    if isinstance(value, str):
        return redact_tokens(value)
    if isinstance(value, dict):
        return {k: redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value
