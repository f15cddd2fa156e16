import collections
import os
import pathlib

import pytest

from spark_jax.data import mmlu_pro
from spark_jax.data.mmlu_pro import QuestionDataError, load_questions, read_questions, stratified_split
from tests.data.mmlu_fixtures import make_bank, make_question, write_jsonl

# The real split is read at run time, never copied: MMLU_PRO=/path/to/test.jsonl points at it
# (default: the project machines' shared folder beside the checkout).
REAL = pathlib.Path(os.environ.get(
    "MMLU_PRO", pathlib.Path(__file__).resolve().parents[3] / "shared/data/mmlu_pro/test.jsonl"))


def test_valid_records_load_unchanged(tmp_path):
    bank = make_bank({"math": 3, "law": 2})
    qs = load_questions(write_jsonl(tmp_path / "test.jsonl", bank))
    assert qs == bank


def test_each_broken_record_is_reported_with_its_id_and_line(tmp_path):
    good = make_question(1)
    no_field = make_question(2)
    del no_field["category"]
    empty_options = make_question(3, options=[])
    outside = make_question(4, n_options=3, answer="E", answer_index=4)
    bad_letter = make_question(5, answer="Z")
    path = write_jsonl(tmp_path / "test.jsonl", [good, no_field, empty_options, outside, bad_letter], ["{not json"])
    qs, issues = read_questions(str(path))
    assert [q["question_id"] for q in qs] == [1]
    by_id = {i.question_id: i for i in issues}
    assert "missing field(s) ['category']" in by_id[2].message and by_id[2].where == f"{path}:2"
    assert "empty options" in by_id[3].message and by_id[3].where == f"{path}:3"
    assert "outside the 3 options" in by_id[4].message
    assert "not a letter" in by_id[5].message
    assert by_id[None].where == f"{path}:6" and "not valid JSON" in by_id[None].message
    assert all(i.fatal for i in issues)
    with pytest.raises(QuestionDataError) as e:
        load_questions(path)
    msg = str(e.value)
    for qid in (2, 3, 4, 5):
        assert f"question_id={qid}" in msg
    assert "--skip-invalid" in msg
    assert [q["question_id"] for q in load_questions(path, skip_invalid=True)] == [1]


def test_letter_index_disagreement_keeps_the_letter(tmp_path, caplog):
    # Reproduces question 3983 of the real test split: letter and answer_index disagree.
    q = make_question(3983, n_options=10, answer="I", answer_index=2)
    path = write_jsonl(tmp_path / "test.jsonl", [q])
    qs, issues = read_questions(str(path))
    assert len(issues) == 1 and not issues[0].fatal and issues[0].question_id == 3983
    assert qs[0]["answer"] == "I" and qs[0]["answer_index"] == 8
    with caplog.at_level("WARNING"):
        load_questions(path)
    assert "question_id=3983" in caplog.text and "the letter is kept" in caplog.text


def test_duplicate_ids_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [make_question(7), make_question(7)])
    with pytest.raises(QuestionDataError, match="duplicate question_id"):
        load_questions(path)


def test_parquet_reads_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bank = make_bank({"math": 2, "history": 2})
    pq.write_table(pa.Table.from_pylist(bank), tmp_path / "test-00000.parquet")
    assert load_questions(tmp_path) == bank  # a directory of test-*.parquet files


def test_env_var_names_the_source(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "t.jsonl", make_bank({"math": 1}))
    monkeypatch.setenv("SPARK_MMLU_PRO", str(path))
    assert mmlu_pro.resolve_source(None) == str(path)
    assert len(load_questions()) == 1
    monkeypatch.delenv("SPARK_MMLU_PRO")
    assert mmlu_pro.resolve_source(None) == "hf://TIGER-Lab/MMLU-Pro"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_questions(tmp_path / "nope.jsonl")


def test_stratified_split_is_proportional_disjoint_and_deterministic():
    bank = make_bank({"math": 40, "law": 25, "history": 12, "biology": 3})
    train, held = stratified_split(bank, num_train=30, heldout_per_category=2, seed=7)
    assert len(train) == 30 and len(set(train)) == 30
    assert len(held) == 8 and not set(train) & set(held)
    cat = {q["question_id"]: q["category"] for q in bank}
    counts = collections.Counter(cat[i] for i in train)
    # Remaining pools 38, 23, 10, 1 (72 in all); exact shares 15.83, 9.58, 4.17, 0.42 -> 16, 10, 4, 0.
    assert counts == {"math": 16, "law": 10, "history": 4}
    assert collections.Counter(cat[i] for i in held) == {"math": 2, "law": 2, "history": 2, "biology": 2}
    assert stratified_split(bank, 30, 2, seed=7) == (train, held)
    assert stratified_split(list(reversed(bank)), 30, 2, seed=7) == (train, held)  # input order is irrelevant
    assert stratified_split(bank, 30, 2, seed=8)[0] != train


def test_stratified_split_refuses_too_many():
    with pytest.raises(QuestionDataError, match="only 8 are available"):
        stratified_split(make_bank({"math": 5, "law": 5}), num_train=9, heldout_per_category=1, seed=0)


@pytest.mark.skipif(not REAL.is_file(), reason="set MMLU_PRO=/path/to/test.jsonl (the real MMLU-Pro test split) to run this test")
def test_real_data_reports_question_3983():
    qs, issues = read_questions(str(REAL))
    assert len(qs) == 12032
    assert not [i for i in issues if i.fatal]
    assert 3983 in {i.question_id for i in issues}


def test_hub_source_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(QuestionDataError, match="could not download .* give a local JSONL/Parquet file"):
        load_questions("hf://TIGER-Lab/MMLU-Pro")
