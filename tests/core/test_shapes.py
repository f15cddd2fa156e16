"""Shape buckets bound both the number of compiles and the padding they add."""

from __future__ import annotations

import pytest

from spark_jax.core.shapes import bucket, length_bucket


def test_bucket_powers_of_two_and_explicit_list():
    assert [bucket(n, minimum=16) for n in (0, 1, 16, 17, 300)] == [16, 16, 16, 32, 512]
    assert bucket(5, buckets=(4, 8, 2)) == 8
    with pytest.raises(ValueError, match="exceeds the largest bucket 8"):
        bucket(9, buckets=(4, 8))


def test_length_bucket_ladder_and_padding_bound():
    assert [length_bucket(n) for n in (1, 16, 17, 24, 25, 33, 500, 513, 769, 1100)] == [
        16, 16, 24, 24, 32, 48, 512, 768, 1024, 1536]
    for n in range(17, 5000):
        size = length_bucket(n)
        assert size >= n and size < 1.5 * n + 1, n  # never more than half again as long
        assert size % 8 == 0
    with pytest.raises(ValueError, match=">= 0"):
        length_bucket(-1)


def test_length_bucket_with_four_steps_per_octave():
    from spark_jax.core.shapes import length_bucket

    assert [length_bucket(n, steps=4) for n in (1, 16, 17, 21, 25, 29, 33, 236, 260, 436)] == \
        [16, 16, 20, 24, 28, 32, 40, 256, 320, 448]
    assert [length_bucket(n) for n in (17, 25, 33, 100)] == [24, 32, 48, 128]  # the default: 2 steps
    with pytest.raises(ValueError, match="steps"):
        length_bucket(5, steps=0)
