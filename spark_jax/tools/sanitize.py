"""Observations without control or escape characters.

Tool output goes to the model and, through logs and ``spark-jax tool``, to terminals. ANSI and
OSC escape sequences can recolour or rewrite a terminal (OSC 52 even sets the clipboard), a bare
carriage return or backspace hides text that the model still reads, and bidirectional
overrides show text in an order other than the one stored. ``clean_text`` keeps printable text,
newlines and tabs, and removes the rest: escape sequences whole (so no ``[31m`` is left
behind), other C0/C1 controls and the bidirectional formatting characters.
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
    "\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks, embeddings, overrides, isolates
    "]"
)


def clean_text(text: str) -> str:
    """``text`` with escape sequences and control characters removed; CR and CRLF become LF."""
    if _CONTROLS.search(text) is None:  # the common case: nothing to remove
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
