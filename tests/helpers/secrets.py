"""The scan that proves no task token, secret id, Vault token or key reached a log."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_encoding

from tests.helpers.queue import worker_tasks

# Any token-shaped text, whoever's token it is: a bytes repr after "token", protobuf text of a
# task_token field, Core's TaskToken(...) display, each unless redacted.
TOKEN_SHAPES = re.compile(
    r"token\W{0,3}b['\"](?!<redacted)"
    r"|task_token[\"']?\s*[:=]\s*b?[\"'](?!<redacted)"
    r"|TaskToken\((?!<redacted)"
)


PEM_MARKERS = ("-----BEGIN", "PRIVATE KEY-----")


def harvest_tokens(*queue_dirs: Path) -> list[bytes]:
    """The raw task token of every task file the worker wrote (queue and archive)."""
    tokens = []
    for queue_dir in queue_dirs:
        for _, task in worker_tasks(queue_dir):
            tokens.append(base64.b64decode(task["payload"]["task_token"], validate=True))
    return tokens


def token_forms(token: bytes) -> list[str]:
    """Every way a token has been seen printed: base64 (the task file, Core's TaskToken),
    Python's bytes repr (SDK debug lines), protobuf text escaping (SDK completion dumps), and
    each of those as escaped inside a JSON string."""
    forms = {
        base64.b64encode(token).decode(),
        repr(token)[2:-1],
        text_encoding.CEscape(token, as_utf8=False),
        text_encoding.CEscape(token, as_utf8=True),
    }
    forms |= {json.dumps(f)[1:-1] for f in forms}  # as they appear inside a JSON log line
    return sorted(forms)


@dataclass
class SecretScan:
    """Occurrences of secrets in texts; `hits` must be empty."""

    texts: int = 0
    chars: int = 0
    needles: int = 0
    hits: list[str] = field(default_factory=list)


def scan_for_secrets(
    texts: Iterable[str], tokens: Iterable[bytes], other_secrets: Iterable[str] = ()
) -> SecretScan:
    needles = [form for t in tokens for form in token_forms(t)]
    needles += [s for s in other_secrets if s]
    scan = SecretScan(needles=len(needles))
    for text in texts:
        scan.texts += 1
        scan.chars += len(text)
        for needle in needles:
            if needle in text:
                scan.hits.append(f"secret {needle[:10]}... in a log")
        for marker in PEM_MARKERS:
            if marker in text:
                scan.hits.append(f"PEM marker {marker!r} in a log")
        for match in TOKEN_SHAPES.finditer(text):
            start = max(match.start() - 60, 0)
            scan.hits.append(f"token-shaped text: {text[start : match.end() + 20]!r}")
    return scan
