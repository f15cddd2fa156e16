import grain
import pytest

from spark_jax.data import mmlu_pro_tfds
from spark_jax.data.mmlu_pro import QuestionDataError
from tests.data.mmlu_fixtures import make_bank, make_question, write_jsonl


def test_builder_writes_array_record_that_grain_reads(tmp_path):
    bank = make_bank({"math": 3, "law": 2})
    bank.append(make_question(3983, "law", n_options=10, answer="I", answer_index=2))  # warns, kept
    src_path = write_jsonl(tmp_path / "test.jsonl", bank)
    builder = mmlu_pro_tfds.prepare(str(src_path), tmp_path / "tfds")
    assert list((tmp_path / "tfds").rglob("*.array_record*"))
    source = builder.as_data_source(split="test")
    assert len(source) == len(bank)
    got = sorted((mmlu_pro_tfds.decode_example(source[i]) for i in range(len(source))), key=lambda q: q["question_id"])
    expected = sorted(bank, key=lambda q: q["question_id"])
    expected[-1] = dict(expected[-1], answer_index=8)  # the letter is authoritative
    assert got == expected
    # Options are ragged, so the Grain pipeline decodes (and later tokenizes) before batching.
    ds = grain.MapDataset.source(source).shuffle(seed=0).map(mmlu_pro_tfds.decode_example)
    assert sorted(q["question_id"] for q in ds) == sorted(q["question_id"] for q in bank)
    # Same source again: reused, not rebuilt; fast path and TFDS path agree.
    again = mmlu_pro_tfds.load_questions_tfds(str(src_path), tmp_path / "tfds")
    assert sorted(q["question_id"] for q in again) == sorted(q["question_id"] for q in bank)


def test_builder_refuses_invalid_records_like_the_fast_path(tmp_path):
    bad = make_question(5, options=[])
    src_path = write_jsonl(tmp_path / "test.jsonl", [make_question(1), bad])
    with pytest.raises(QuestionDataError, match="question_id=5"):
        mmlu_pro_tfds.prepare(str(src_path), tmp_path / "tfds")


def test_missing_tensorflow_datasets_names_the_extra(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "spark_jax.data.mmlu_pro_tfds")
    with pytest.raises(ImportError, match=r"pip install 'spark-jax\[tfds\]'"):
        importlib.import_module("spark_jax.data.mmlu_pro_tfds")
