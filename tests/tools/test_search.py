import json

import pytest

import spark_jax.tools as tools
from spark_jax.tools import ToolsConfig, run_tool
from spark_jax.tools.search import DEMO_CORPUS, CorpusError, read_corpus, write_index


def test_no_corpus_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SPARK_SEARCH_CORPUS", raising=False)
    r = run_tool("search", "ideal gas")
    assert not r.ok and r.error.startswith("no search corpus configured: ")


def test_demo_corpus_covers_all_categories():
    cats = {json.loads(line)["category"] for line in DEMO_CORPUS.read_text().splitlines()}
    assert len(cats) == 14


@pytest.mark.parametrize(
    "query, title",
    [("ideal gas constant", "Ideal gas law"), ("Okazaki fragments lagging strand", "DNA replication"),
     ("out-of-court statement evidence", "Hearsay"), ("break-even fixed costs", "Break-even point")],
)
def test_demo_retrieval(query, title):
    tools.configure(ToolsConfig(search_corpus="demo"))
    r = run_tool("search", query)
    assert r.ok, r.error
    assert r.output.startswith(f"[1] {title} ")


def test_env_var_and_index_directory(tmp_path, monkeypatch):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        json.dumps({"id": "a", "title": "Zebra", "text": "Zebras have black and white stripes."}) + "\n"
        + json.dumps({"id": "b", "text": "Penguins live in the southern hemisphere."}) + "\n"
    )
    monkeypatch.setenv("SPARK_SEARCH_CORPUS", str(corpus))
    r = run_tool("search", "penguin southern hemisphere")
    assert r.ok and "(id b," in r.output.splitlines()[0]
    out = tmp_path / "idx"
    assert write_index(corpus, out) == 2
    tools.configure(ToolsConfig(search_corpus=str(out)))
    r = run_tool("search", "zebras stripes")
    assert r.ok and r.output.startswith("[1] Zebra (id a,")


def test_bad_corpus_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: not valid JSON"):
        read_corpus(bad)
    tools.configure(ToolsConfig(search_corpus=str(bad)))
    r = run_tool("search", "ok")
    assert not r.ok and "bad.jsonl:2" in r.error
    tools.configure(ToolsConfig(search_corpus=str(tmp_path / "missing.jsonl")))
    assert "does not exist" in run_tool("search", "x").error


def test_corpus_shape_errors_name_the_line_and_ids_default_to_it(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('\n{"text": "first"}\n\n{"id": 7, "text": "second"}\n')
    assert [d["id"] for d in read_corpus(corpus)] == ["line-2", "7"]  # blank lines keep numbering
    corpus.write_text('{"text": "ok"}\n["a list"]\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: each line must be an object"):
        read_corpus(corpus)
    corpus.write_bytes(b'{"text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    with pytest.raises(CorpusError, match=r"cannot read corpus .*c.jsonl"):
        read_corpus(corpus)
    corpus.write_text("\n")
    with pytest.raises(CorpusError, match=r"has no documents"):
        read_corpus(corpus)


def test_no_match():
    tools.configure(ToolsConfig(search_corpus="demo"))
    r = run_tool("search", "qqqqzzzz")
    assert r.ok and r.output == "no matching passages"
