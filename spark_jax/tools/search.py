"""The ``search`` tool: BM25 retrieval (bm25s) over a local JSONL corpus.

A corpus is JSONL with one document per line: ``{"id": ..., "title": ..., "text": ...}``
(``text`` required). ``spark-jax index-corpus CORPUS.jsonl --out DIR`` builds an index
directory (bm25s files plus ``docs.jsonl``); the tool accepts either a JSONL file (indexed in
memory on first use) or such a directory, from ``ToolsConfig.search_corpus`` or the
``SPARK_SEARCH_CORPUS`` environment variable. ``demo`` names the small corpus shipped with
the package (original paragraphs across the 14 MMLU-Pro categories)."""

from __future__ import annotations

import json
import pathlib
import threading

from spark_jax.core.jsonl import iter_jsonl
from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolInputError

DEMO_CORPUS = pathlib.Path(__file__).parent / "data" / "demo_corpus.jsonl"
DOCS_FILE = "docs.jsonl"
MAX_SNIPPET_CHARS = 600


class CorpusError(ValueError):
    """A corpus file or index directory that cannot be used."""


def read_corpus(path: str | pathlib.Path) -> list[dict]:
    """Documents of a JSONL corpus; errors name the file and line."""
    p = pathlib.Path(path)
    docs = []
    try:
        for where, doc in iter_jsonl(p, error=CorpusError):
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"].strip():
                raise CorpusError(f"{where}: each line must be an object with a non-empty 'text'")
            lineno = where.rpartition(":")[2]
            docs.append({"id": str(doc.get("id", f"line-{lineno}")), "title": str(doc.get("title", "")),
                         "text": doc["text"]})
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"cannot read corpus {p}: {e}") from None
    if not docs:
        raise CorpusError(f"corpus {p} has no documents")
    return docs


def _tokenize(texts: list[str]):
    # deferred: bm25s pulls in scipy; only a search index needs it
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


def build_index(docs: list[dict]):
    # deferred: see _tokenize
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(_tokenize([f"{d['title']}\n{d['text']}" for d in docs]), show_progress=False)
    return retriever


def write_index(corpus_path: str | pathlib.Path, out_dir: str | pathlib.Path) -> int:
    """Builds the index of ``corpus_path`` into ``out_dir``; returns the document count."""
    docs = read_corpus(corpus_path)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_index(docs).save(str(out), show_progress=False)
    with open(out / DOCS_FILE, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return len(docs)


class SearchIndex:
    def __init__(self, docs: list[dict], retriever) -> None:
        self.docs = docs
        self.retriever = retriever

    @classmethod
    def open(cls, location: str) -> "SearchIndex":
        path = DEMO_CORPUS if location == "demo" else pathlib.Path(location).expanduser()
        if path.is_dir():
            # deferred: see _tokenize
            import bm25s

            docs_file = path / DOCS_FILE
            if not docs_file.is_file():
                raise CorpusError(f"{path} is not an index directory (no {DOCS_FILE}); "
                                  "build one with `spark-jax index-corpus CORPUS.jsonl --out DIR`")
            docs = read_corpus(docs_file)
            retriever = bm25s.BM25.load(str(path))
            return cls(docs, retriever)
        if path.is_file():
            docs = read_corpus(path)
            return cls(docs, build_index(docs))
        raise CorpusError(f"search corpus {location!r} does not exist")

    def search(self, query: str, k: int) -> list[tuple[dict, float]]:
        tokens = _tokenize([query])
        if not tokens.vocab:
            return []
        k = min(k, len(self.docs))
        ids, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [(self.docs[int(i)], float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]


_CACHE: dict[str, SearchIndex] = {}
_CACHE_LOCK = threading.Lock()


def open_index(location: str) -> SearchIndex:
    with _CACHE_LOCK:
        if location not in _CACHE:
            _CACHE[location] = SearchIndex.open(location)
        return _CACHE[location]


class SearchTool(Tool):
    name = "search"
    in_worker = True
    description = action_spec("search").description
    argument_format = action_spec("search").argument_format

    def warm(self) -> None:
        location = self.config.resolved_search_corpus()
        if location:
            _tokenize(["warm"])
            open_index(location)

    def _run(self, argument: str, timeout_s: float) -> str:
        location = self.config.resolved_search_corpus()
        if not location:
            raise ToolInputError(
                "no search corpus configured: set tools.search_corpus or SPARK_SEARCH_CORPUS to a "
                "JSONL file or an index directory (spark-jax index-corpus), or 'demo'"
            )
        try:
            index = open_index(location)
        except CorpusError as e:
            raise ToolInputError(str(e)) from None
        hits = index.search(argument[:1000], self.config.search_top_k)
        if not hits:
            return "no matching passages"
        parts = []
        for rank, (doc, score) in enumerate(hits, 1):
            text = doc["text"]
            if len(text) > MAX_SNIPPET_CHARS:
                text = text[:MAX_SNIPPET_CHARS] + "..."
            title = f" {doc['title']}" if doc["title"] else ""
            parts.append(f"[{rank}]{title} (id {doc['id']}, score {score:.2f})\n{text}")
        return "\n\n".join(parts)
