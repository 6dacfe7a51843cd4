"""Pure functions over the security agent's output: parse triage-output.yml, sanitise findings.

Findings are data written by an agent that read untrusted code; nothing in them may steer the
next agent. `parse_triage` refuses anything but the documented schema (with the errors naming
what is wrong), and `sanitize_finding` makes a finding one inert line.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import yaml

from exceptions import TriageError
from models import TriageOutput

MAX_TRIAGE_BYTES = 1024 * 1024
MAX_DEPTH = 8
MAX_FINDING_LEN = 500
SECTIONS = ("blocks", "flags", "info")

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_COLLECTION_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _load_plain_yaml(text: str, where: str) -> Any:
    """safe_load, after refusing anchors/aliases and deep nesting (bounded memory and time)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise TriageError(f"{where}: YAML anchors and aliases are not allowed")
            if isinstance(event, _COLLECTION_START):
                depth += 1
                if depth > MAX_DEPTH:
                    raise TriageError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, _COLLECTION_END):
                depth -= 1
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or type(err).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TriageError(f"{where}: invalid YAML{at}: {problem}") from None


def _item_text(item: Any, where: str) -> str:
    if isinstance(item, str):
        return item.strip()
    if isinstance(item, dict):
        description = item.get("description")
        if isinstance(description, str):
            return description.strip()
        raise TriageError(f"{where}: a mapping item needs a 'description' string")
    raise TriageError(
        f"{where}: items must be strings or {{description: ...}} mappings, "
        f"got {type(item).__name__}"
    )


def parse_triage(raw: bytes, path: str = "triage-output.yml") -> TriageOutput:
    """Parse triage-output.yml into blocks, flags and info (lists of finding texts).

    Items may be plain strings or `{description: ...}` mappings; a null section is empty.
    Anything else raises TriageError with the file and the problem.
    """
    if len(raw) > MAX_TRIAGE_BYTES:
        raise TriageError(f"{path}: larger than {MAX_TRIAGE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TriageError(f"{path}: not UTF-8 text (byte {err.start})") from None
    if "\x00" in text:
        raise TriageError(f"{path}: contains NUL bytes")
    data = _load_plain_yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TriageError(
            f"{path}: expected a mapping with blocks/flags/info, got {type(data).__name__}"
        )
    sections: dict[str, list[str]] = {}
    for name in SECTIONS:
        value = data.get(name)
        if value is None:
            sections[name] = []
            continue
        if not isinstance(value, list):
            raise TriageError(f"{path}: '{name}' must be a list, got {type(value).__name__}")
        texts = (_item_text(item, f"{path}: {name}[{i}]") for i, item in enumerate(value))
        sections[name] = [t for t in texts if t]
    return TriageOutput(blocks=sections["blocks"], flags=sections["flags"], info=sections["info"])


# Characters that end a line or hide text: control, format (zero-width, bidi overrides),
# separators other than a plain space.
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_ANGLE = str.maketrans({"<": "\u2039", ">": "\u203a"})


def sanitize_finding(text: str, limit: int = MAX_FINDING_LEN) -> str:
    """One inert line: no line breaks, no invisible characters, no `<`/`>` to open or close a tag.

    Angle brackets become single guillemets (U+2039, U+203A), so a finding can never close the
    `<security-findings>` block that carries it; whitespace runs become one space; the result is
    capped at `limit` characters.
    """
    visible = "".join(
        " " if unicodedata.category(ch) in _INVISIBLE or ch.isspace() else ch for ch in text
    )
    line = re.sub(r" +", " ", visible).strip().translate(_ANGLE)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "\u2026"


def findings_block(findings: list[str]) -> str:
    """The `<security-findings>` block of an instruction: one `- ` line per sanitised finding."""
    lines = "\n".join(f"- {sanitize_finding(f)}" for f in findings)
    return f"<security-findings>\n{lines}\n</security-findings>"
