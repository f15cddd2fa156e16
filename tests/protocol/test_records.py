"""Reading a Stage 1 run's shards: validated records, errors that name ``shard:line``."""

from __future__ import annotations

import pytest

from spark_jax.protocol.records import RecordError, iter_shard_records, read_step_records
from tests.conftest import synthetic_records, write_run_dir


def test_records_read_back_in_order(tmp_path):
    records = synthetic_records(7)
    run = write_run_dir(tmp_path / "run", records, shard_size=4)
    assert read_step_records(run) == records
    assert list(iter_shard_records(run / "shards" / "shard-00001.jsonl")) == records[4:]


def test_bad_json_and_bad_records_name_shard_and_line(tmp_path):
    run = write_run_dir(tmp_path / "run", synthetic_records(3))
    shard = run / "shards" / "shard-00000.jsonl"
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join([lines[0], "", '{"question_id": ', *lines[1:]]) + "\n")
    with pytest.raises(RecordError, match=rf"^{shard}:3: not valid JSON"):
        read_step_records(run)
    shard.write_text("\n".join([lines[0], '{"question_id": 0}']) + "\n")
    with pytest.raises(RecordError, match=rf"^{shard}:2: "):
        read_step_records(run)
