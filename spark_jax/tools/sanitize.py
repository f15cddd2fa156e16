"""Observations without control, escape or invisible format characters.

Tool output goes to the model and, through logs and ``spark-jax tool``, to terminals. ANSI and
OSC escape sequences can recolour or rewrite a terminal (OSC 52 even sets the clipboard), a bare
carriage return or backspace hides text that the model still reads, bidirectional overrides
show text in an order other than the one stored, and invisible characters (zero-width spaces,
the BOM, the tag block U+E0000-E007F, which can spell out a whole hidden instruction) carry text
a reader never sees. ``clean_text`` keeps printable text, newlines and tabs, and removes the
rest: escape sequences whole (so no ``[31m`` is left behind), other C0/C1 controls, every
format character (Unicode category Cf, bidirectional controls among them) and the whole tag
block. CR, CRLF and the line and paragraph separators U+2028/U+2029 become newlines. Nothing
is allowed back: tool output needs no joiners or invisible marks.
"""

from __future__ import annotations

import re

# ESC- and C1-introduced sequences: CSI (ESC [ or 0x9B), OSC/DCS/SOS/PM/APC strings (ending at BEL
# or ST), and two-character ESC sequences (charset selection, keypad modes, ...).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 (less tab and newline), DEL, C1
    # Unicode category Cf (format characters), as of Unicode 15.1; test_sanitize checks this
    # list against the running Python's unicodedata.
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e007f"  # the tag block, assigned (Cf) or not
    "\u2028\u2029"  # line and paragraph separators (become newlines first)
    "]"
)


def clean_text(text: str) -> str:
    """``text`` with escape sequences, control and format characters removed; CR, CRLF, U+2028
    and U+2029 become LF."""
    # The common case, nothing to remove, checked in C: isprintable() is False for every
    # control, format (Cf), unassigned (the unassigned tags) and separator character but space.
    if all(line.isprintable() for line in text.replace("\t", " ").split("\n")):
        return text
    if _CONTROLS.search(text) is None:  # e.g. no-break spaces: printable enough, nothing to drop
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
