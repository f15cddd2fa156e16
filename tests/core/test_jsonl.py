"""The one JSONL reader: values with ``file:line``, blank lines skipped, a bad line named."""

from __future__ import annotations

import pytest

from spark_jax.core.jsonl import JsonlError, iter_jsonl


def test_values_come_with_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2, 3]\n"s"\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(f"{path}:1", {"a": 1}), (f"{path}:4", [2, 3]), (f"{path}:5", "s")]


def test_a_bad_line_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"^{path}:2: not valid JSON"):
        list(iter_jsonl(path))

    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=rf"^{path}:2: not valid JSON"):
        list(iter_jsonl(path, error=MyError))


def test_keep_bad_yields_the_error_and_goes_on(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('nope\n{"a": 1}\n', encoding="utf-8")
    (where, bad), second = list(iter_jsonl(path, keep_bad=True))
    assert where == f"{path}:1" and isinstance(bad, JsonlError) and str(bad).startswith(f"{path}:1: not valid JSON")
    assert second == (f"{path}:2", {"a": 1})
