"""Observations reach the model and terminals without control or escape characters."""

from __future__ import annotations

import random
import unicodedata

import pytest

from spark_jax.tools import run_tool
from spark_jax.tools.sanitize import clean_text


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("\x1b[31mred\x1b[0m", "red"),  # CSI (SGR colours)
        ("\x1b[2J\x1b[Hcleared", "cleared"),  # CSI: clear screen, cursor home
        ("\x9b31mC1 CSI", "C1 CSI"),  # the 8-bit CSI
        ("\x1b]52;c;cHduZWQ=\x07after", "after"),  # OSC 52: set the clipboard, BEL-terminated
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST-terminated
        ("\x1b]0;title", ""),  # an unterminated OSC swallows the rest of its string
        ("\x1bP+q\x1b\\dcs", "dcs"),  # DCS
        ("a\x1b(Bb\x1b=c", "abc"),  # two-character ESC sequences
        ("bell\x07 back\x08space\x7f", "bell backspace"),
        ("over\rwrite", "over\nwrite"),  # a bare CR would hide the first part on a terminal
        ("crlf\r\nline", "crlf\nline"),
        ("\u202eevil\u202c \u2066iso\u2069 \u200fmark", "evil iso mark"),  # bidirectional controls
        ("tab\tand\nnewline stay; ünïcödé ✓ 数学", "tab\tand\nnewline stay; ünïcödé ✓ 数学"),
    ],
)
def test_escape_and_control_sequences_are_removed(raw, clean):
    assert clean_text(raw) == clean


def test_no_control_character_survives_random_text():
    rng = random.Random(17)
    alphabet = [chr(c) for c in range(0, 0xA0)] + ["\u202e", "\u2066", "a", "é", "ß", "\x1b["]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
        out = clean_text(text)
        bad = [c for c in out if unicodedata.category(c) == "Cc" and c not in "\n\t"]
        assert not bad and "\x1b" not in out, (text, out)
        assert clean_text(out) == out  # idempotent


@pytest.mark.parametrize(
    "tool, argument",
    [
        ("python", "print('\\x1b[31mred\\x1b]52;c;cHduZWQ=\\x07 done\\r\\x08')"),
        ("python", "import sys\nsys.stderr.write('\\x1b[2J\\x9bK')\nraise SystemExit(1)"),
        ("cot", "\x1b[31mred\x1b[0m done"),
        ("calculator", "\x1b[31m1+"),
    ],
)
def test_tool_results_are_clean(tool, argument):
    r = run_tool(tool, argument)
    text = r.output + (r.error or "")
    assert text and not [c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"], repr(text)
    assert "\u009b" not in text and "[31m" not in text
