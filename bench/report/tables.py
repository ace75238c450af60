"""Markdown tables of the generated pages: rows of raw values in, formatted text out; and the one
escaping of text that reaches a page.

A page builds its rows as dicts of numbers (and text, and None where there is nothing to say), sorts
them on those numbers, and only then renders them here: each cell through its column's format, a
missing value as "–", the whole table by pandas' `to_markdown` (tabulate's "pipe" format).

Text is inert by default. A record's text (model, submitter, device, notes, gate summaries, a perf
file's fields) may come from anyone who can submit, so every `str` cell is escaped with `escape_cell`;
only `Markdown` (text this package built from escaped parts: badges, links, code spans) passes through.
The same functions render text outside tables (headings, notes, captions, the index):

- `escape_cell(text)`: plain text, shown as it is: no table row, heading, list, emphasis, link, image,
  code, math or HTML can start from it (the rules are in its docstring).
- `code_span(text)`: text in backticks when that is inert, else `escape_cell(text)`.
- `safe_url(url)` / `markdown_link(text, url)`: http(s) links only, rebuilt so that no part of them can
  close the link; anything else is withheld.
- `local_link(text, path)`: a link to a file the leaderboard wrote; `safe_name` makes such file names.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pandas as pd

NONE = "–"

Format = str | Callable[[Any], str]  # a format spec ("{:.2f}") or a function of the value


class Markdown(str):
    """Text that is already markdown, built by the report from escaped parts: cells show it as it is."""


# characters that end a line or a table row, or reorder text (bidi controls): shown as a space
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_BACKSLASHED = set("\\`*[]|~$")  # code, emphasis, links/images, table cells, strikethrough, math
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # entities and raw HTML
# no dangerous scheme in the text (`data:`/`file:` as a word, so "metadata:" stays as it is)
_SCHEMES = re.compile(r"(?i)(javascript|vbscript|(?<![a-z0-9])data|(?<![a-z0-9])file)\s*:")
_LEADING_NUMBER = re.compile(r"^(\d+)([.)])")  # an ordered-list marker at the start of a line


def escape_cell(value: Any) -> str:
    """`value` as markdown text that renders as itself, safe in a table cell, a heading, a list item or
    a link text:

    - line breaks, other control characters and bidi overrides become spaces (a row stays one row);
    - `&`, `<`, `>` become entities (no raw HTML, no entity of the writer's choosing);
    - `\\`, `` ` ``, `*`, `[`, `]`, `|`, `~`, `$` are backslash-escaped (no code span, emphasis, link
      or image, cell boundary, strikethrough or math);
    - `_` is escaped except between two letters or digits (where it cannot start emphasis: `resnet20_wider`
      stays as it is), `#` at the start or after a space (no heading, no closing sequence), and a
      leading `-`, `+`, `=` or `1.` (no list or setext underline when the text starts a line);
    - the colon of `javascript:`, `vbscript:`, `data:`, `file:` becomes `&#58;` (shown as a colon).

    Text without these characters comes back unchanged."""
    text = _BREAKS.sub(" ", str(value))
    out = []
    for i, ch in enumerate(text):
        before = text[i - 1] if i else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _BACKSLASHED:
            out.append("\\" + ch)
        elif ch == "_" and not (before.isalnum() and after.isalnum()):
            out.append("\\_")
        elif ch == "#" and before.isspace():
            out.append("\\#")
        elif i == 0 and ch in "-+=":
            out.append("\\" + ch)
        else:
            out.append(ch)
    escaped = _LEADING_NUMBER.sub(r"\1\\\2", "".join(out))
    return _SCHEMES.sub(lambda m: m.group(0)[:-1] + "&#58;", escaped)


_CODE_UNSAFE = set("`|<>&") | {"\n", "\r"}


def code_span(value: Any) -> Markdown:
    """`value` in backticks (shown as code); text that a code span cannot hold inertly (a backtick, a
    pipe, `<`, `>`, `&`, a line break or control character, a `javascript:`-like scheme) is shown
    escaped, not as code."""
    text = str(value)
    if not text.strip() or _BREAKS.search(text) or _CODE_UNSAFE & set(text) or _SCHEMES.search(text):
        return Markdown(escape_cell(text))
    return Markdown(f"`{text}`")


_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")
_PATH_SAFE = "/-._~!$+,=@%"  # kept in a path and fragment; everything else is percent-encoded
_QUERY_SAFE = _PATH_SAFE + "&?"  # `;` is encoded, so no `&name;` entity can form


def safe_url(url: Any) -> str | None:
    """`url` as an absolute http(s) URL that no markdown or HTML can be read into, or None.

    It must parse (urllib.parse) as http or https with `//`, a host name (letters, digits, dots,
    hyphens; IDNA for other letters) and an optional port, and no user info, whitespace or control
    character. The URL is rebuilt from its parts with scheme and host lower-cased and every character of
    the path, query and fragment outside `A-Z a-z 0-9 / - . _ ~ ! $ + , = @ %` (and `& ?` in the query)
    percent-encoded: `(`, `)`, `[`, `]`, `<`, `>`, quotes, backticks, backslashes, `|`, `:` and `;`
    among them."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return None
    if _BREAKS.search(url) or any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url[len(scheme) :].startswith("://"):
        return None
    if not host or "@" in parts.netloc or "[" in parts.netloc:
        return None
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if not _HOST.fullmatch(host):
        return None
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit(
        (
            scheme,
            netloc,
            quote(parts.path, safe=_PATH_SAFE),
            quote(parts.query, safe=_QUERY_SAFE),
            quote(parts.fragment, safe=_PATH_SAFE + "?"),
        )
    )


def markdown_link(text: Any, url: Any) -> Markdown:
    """`[text](url)` with `text` escaped and `url` through `safe_url`; a URL it rejects is not linked
    and not shown: `text (link withheld: not an http(s) URL)`."""
    target = safe_url(url)
    if target is None:
        return Markdown(f"{escape_cell(text)} (link withheld: not an http(s) URL)")
    return Markdown(f"[{escape_cell(text)}]({target})")


def local_link(text: Any, path: str, *, image: bool = False) -> Markdown:
    """A link (or `image`) to a file the leaderboard wrote, `path` relative to the page (its parts made
    by `safe_name`; percent-encoded again here)."""
    return Markdown(f"{'!' if image else ''}[{escape_cell(text)}]({quote(path, safe='/-._~')})")


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


def safe_name(text: Any) -> str:
    """`text` as one file-name part: unchanged when it is letters, digits and `_ . + -` (not starting
    with a dot, at most 100 characters); otherwise every other character becomes `_` and a hash of the
    text is appended, so two names stay two files and none leaves its folder."""
    text = str(text)
    if _NAME.fullmatch(text) and ".." not in text:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_+-]", "_", text)[:80]
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def device_label(device: str, device_name: str) -> str:
    """Where a result was measured: the CPU's name, or `cuda (GPU name)`."""
    return device_name if device == "cpu" else f"{device} ({device_name})"


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value: Any, fmt: Format | None = None) -> str:
    """One cell's text: `Markdown` as it is, other text through `escape_cell` ("–" when that leaves
    nothing), "–" for a missing value, any other value through `fmt` (str() without one)."""
    if isinstance(value, Markdown):
        return value
    if isinstance(value, str):
        return escape_cell(value) if value.strip() else NONE
    if missing(value):
        return NONE
    if fmt is None:
        return str(value)
    return fmt.format(value) if isinstance(fmt, str) else fmt(value)


def markdown_table(
    rows: list[dict[str, Any]], formats: dict[str, Format] | None = None, *, compact: bool = False
) -> str:
    """`rows` (in the order given) as a markdown table; the columns are the rows' keys in order of first
    appearance, and a row without a column's key shows "–" there. `compact` leaves the cells unpadded
    (the index page's tables, whose rows other tests and tools match as `| 1 | 2 | quick |`)."""
    formats = formats or {}
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = [[cell(row.get(c), formats.get(c)) for c in columns] for row in rows]
    header = [escape_cell(c) for c in columns]
    if compact:
        lines = ["| " + " | ".join(cells) + " |" for cells in [header, *text]]
        return "\n".join([lines[0], "|" + "---|" * len(columns), *lines[1:]])
    return pd.DataFrame(text, columns=header).to_markdown(index=False, disable_numparse=True)
