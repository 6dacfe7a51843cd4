"""Markdown as GitHub renders it, as far as links go: the links of a document, outside code, and
the anchors its headings get."""

from __future__ import annotations

import re
from collections import Counter
from typing import NamedTuple

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\n[ \t]*\n).)*?\1", re.S)  # never across a blank line
# [text](target "title") and ![alt](target); the text may hold one level of brackets
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>]*>|\S+)", re.M)
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)=\"([^\"]+)\"", re.I)


class Link(NamedTuple):
    line: int  # 1-based, where the link's target is written
    target: str


def prose(text: str) -> list[str]:
    """The document's lines with fenced code blocks blanked, so line numbers stay true."""
    lines, fence = [], ""
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif opening:
            fence = opening.group(1)
            lines.append("")
        else:
            lines.append(line)
    return lines


def links(text: str) -> list[Link]:
    """Every inline link, image and reference definition outside code, in order."""
    body = "\n".join(prose(text))
    # a code span becomes spaces of its length, so offsets (and line numbers) stay true
    body = _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), body)
    found = [(m.start(1), m.group(1)) for m in _INLINE_LINK.finditer(body)]
    found += [(m.start(1), m.group(1)) for m in _REFERENCE.finditer(body)]
    return [
        Link(body.count("\n", 0, start) + 1, target.removeprefix("<").removesuffix(">"))
        for start, target in sorted(found)
    ]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading, before duplicates are numbered: the rendered text in
    lower case, without punctuation other than `-` and `_`, each space a `-`."""
    text = re.sub(r"`+([^`]*)`+", r"\1", heading)  # code keeps its text
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags render as nothing
    text = re.sub(r"(?<!\w)(__|_)(.+?)\1(?!\w)", r"\2", text)  # _emphasis_, not snake_case
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every `#anchor` the rendered document has: each heading's slug, the second of a slug
    numbered `-1` and so on, and the names of explicit `<a name=...>` / `id=` anchors."""
    seen: Counter[str] = Counter()
    found = set()
    for line in prose(text):
        heading = _HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(1) or "")
            found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
        found.update(_HTML_ANCHOR.findall(line))
    return found
