import logging

from spark_jax.judge.cache import JudgeCache, cache_key

MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x"}}


def test_key_depends_on_model_messages_and_schema():
    k = cache_key("gpt-4o", MSGS, SCHEMA)
    assert len(k) == 64 and k == cache_key("gpt-4o", [dict(m) for m in MSGS], dict(SCHEMA))
    assert k != cache_key("gpt-4o-mini", MSGS, SCHEMA)
    assert k != cache_key("gpt-4o", MSGS[:1] + [{"role": "user", "content": "u "}], SCHEMA)
    assert k != cache_key("gpt-4o", MSGS, {"type": "json_schema", "json_schema": {"name": "y"}})


def test_roundtrip_and_no_temp_files_left(tmp_path):
    cache = JudgeCache(tmp_path)
    k = cache_key("m", MSGS, SCHEMA)
    assert cache.get(k) is None
    cache.put(k, {"content": "{}", "prompt_tokens": 3})
    assert cache.get(k) == {"content": "{}", "prompt_tokens": 3}
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{k}.json"]
    cache.put(k, {"content": "v2"})  # overwrite in place
    assert JudgeCache(tmp_path).get(k) == {"content": "v2"}


def test_corrupt_entry_is_ignored_with_warning_then_rewritten(tmp_path, caplog):
    cache = JudgeCache(tmp_path)
    k = cache_key("m", MSGS, SCHEMA)
    cache.path(k).parent.mkdir(parents=True, exist_ok=True)
    cache.path(k).write_text('{"key": "' + k + '", "value": {"content": "tru')  # a torn write
    with caplog.at_level(logging.WARNING):
        assert cache.get(k) is None
    assert "corrupt judge cache entry" in caplog.text and cache.corrupt_seen == 1
    cache.put(k, {"content": "fixed"})
    assert cache.get(k) == {"content": "fixed"}


def test_entry_under_the_wrong_key_is_not_served(tmp_path):
    cache = JudgeCache(tmp_path)
    k1, k2 = cache_key("a", MSGS, SCHEMA), cache_key("b", MSGS, SCHEMA)
    cache.put(k1, {"content": "x"})
    cache.path(k2).parent.mkdir(parents=True, exist_ok=True)
    cache.path(k2).write_bytes(cache.path(k1).read_bytes())
    assert cache.get(k2) is None
