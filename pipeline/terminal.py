"""Text from data (tenants, users, endpoints, models, provider messages, paths) made safe to print.

Job lines and provider answers may carry terminal escape sequences or rich markup; printed as
they are, they would recolour, rewrite or hide what the terminal shows. `printable` turns every
control character (C0, DEL, C1 and the bidirectional overrides) into a visible escape such as
`\\x1b`; `terminal_safe` also escapes rich markup, for text handed to a rich console or table.
"""

from __future__ import annotations

import re

from rich.markup import escape

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_KEEPING_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, keep_lines: bool = False) -> str:
    """`text` with every control character shown as an escape; tabs and newlines kept when
    `keep_lines` (for multi-line output that batchwise itself lays out)."""
    pattern = _CONTROL_KEEPING_LINES if keep_lines else _CONTROL
    return pattern.sub(_visible, str(text))


def terminal_safe(text: object, *, keep_lines: bool = False) -> str:
    """`printable` text with rich markup escaped: shown as written, never interpreted."""
    return escape(printable(text, keep_lines=keep_lines))
