"""``spark_jax.eval``'s stable name: ``extract_answer`` is the protocol's official answer reader."""

from __future__ import annotations

import spark_jax.eval
from spark_jax.protocol import answers


def test_extract_answer_is_kept_on_the_eval_package():
    assert spark_jax.eval.extract_answer is answers.extract_answer
    assert spark_jax.eval.extract_answer("so the answer is (C).") == "C"
