import pytest

from spark_jax.protocol.answers import extract_answer
from spark_jax.protocol.answers import extract_answer_strict


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Let's think. 17*23 = 391, so the answer is (C).", "C"),
        ("the answer is D", "D"),
        # The first pattern wins over a later 'Answer:' and over other letters.
        ("Options A and B are wrong. The answer is (B). Answer: C", "B"),
        # Pattern 1 takes the FIRST 'answer is', even if the model changes its mind later.
        ("the answer is (A)... wait, the answer is (E)", "A"),
        ("Answer: (C)", "C"),
        ("Final Answer:   G", "G"),
        # Pattern 2 is greedy ('.*'), so the LAST 'Answer:' on a line wins.
        ("Answer: A, no. Answer: H", "H"),
        # Bold markers break 'answer is (' but not the last-letter pattern.
        ("The answer is **(F)**", "F"),
        ("**Answer: J**", "J"),
        # Third pattern: the last standalone capital letter anywhere, across lines.
        ("I pick B\nbecause of reason\nthen maybe D.", "D"),
        # Lowercase letters are not answers; 'A' as an article still counts (official behaviour).
        ("the answer is (c)", None),
        ("no letters here at all", None),
        ("", None),
        # Letters outside A-J are ignored.
        ("The answer is (K)", None),
    ],
)
def test_official_patterns(text, expected):
    assert extract_answer(text) == expected


def test_article_a_counts_as_a_letter_like_the_official_script():
    assert extract_answer("This is A good question about gases") == "A"


def test_strict_ignores_stray_letters():
    assert extract_answer_strict("Option B looks plausible, so does D") is None
    assert extract_answer_strict("So the answer is (D).") == "D"
    assert extract_answer_strict("Answer: E") == "E"
