import gc
import math
import time

import pytest

from spark_jax.tools import run_tool


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("2 + 3 * 4", "14"),
        ("2^10", "1024"),
        ("2**100", str(2**100)),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("1/4", "0.25"),
        ("factorial(20)", "2432902008176640000"),
        ("comb(10, 3)", "120"),
        ("gcd(84, 36)", "12"),
        ("sqrt(16) + abs(-2)", "6"),
        ("log(8, 2)", "3"),
        ("round(3.14159, 2)", "3.14"),
        ("max(3, 9, 4)", "9"),
        ("2**-2", "0.25"),
    ],
)
def test_worked_examples(expr, expected):
    r = run_tool("calculator", expr)
    assert r.ok, r.error
    assert r.output == expected


def test_floats_to_fifteen_digits():
    r = run_tool("calculator", "sin(pi/6) + e")
    assert r.ok and math.isclose(float(r.output), 0.5 + math.e, rel_tol=1e-14)


def _run_counting_cpu(expr):
    """Runs the calculator in this process; returns (result, CPU seconds of this thread).

    ``run_here`` (not the worker) so that the checks themselves are measured: they must
    refuse fast, whatever the worker's timeout would do. CPU time of the calling thread, with
    the collector paused, measures the calculator's own work. Wall time does not: in CI
    another worker shares the two cores and a full collection of a heap full of jax objects
    once took 0.6 s of wall time around a 1.4 ms call.
    """
    from spark_jax.tools import TOOLS

    gc.collect()
    gc.disable()
    try:
        start = time.thread_time()
        result = TOOLS["calculator"].run_here(expr)
        return result, time.thread_time() - start
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("9**9**9**9", "too large"),
        ("10**5000", "too large"),
        ("2**4000 * 2**4000", "too large"),
        ("factorial(100000)", "too large"),
        ("1e308 ** 2", "overflows"),
        ("1/0", "division by zero"),
        ("__import__('os').system('id')", "unknown function"),
        ("(1).__class__", "unsupported syntax"),
        ("[x for x in range(10**9)]", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("'a' * 10**9", "only numbers"),
        ("x + 1", "unknown name"),
        ("(" * 300 + "1" + ")" * 300, ""),
        ("1" + "+1" * 1500, "longer than"),
        ("-" * 1000 + "1", "nested"),
        ("2 +", "not a valid expression"),
        ("round(7, -10**8)", "round: digits"),  # int.__round__ would compute 10**(10**8)
        ("round(7, -99999999)", "round: digits"),
        ("round(2.5, 10**12)", "round: digits"),
    ],
)
def test_hostile_or_bad_input_fails_fast(expr, fragment):
    r, cpu_s = _run_counting_cpu(expr)
    assert cpu_s < 0.5
    assert not r.ok
    assert fragment in r.error


def test_huge_exponent_answers_in_milliseconds():
    r, cpu_s = _run_counting_cpu("9**9**9**9")
    assert not r.ok and cpu_s < 0.05
