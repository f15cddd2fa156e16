"""MMLU-Pro questions: reading (JSONL, Parquet, the Hugging Face hub), validation and sampling.

Both the fast path (:func:`load_questions`) and the TFDS builder
(:mod:`spark_jax.data.mmlu_pro_tfds`) read records through :func:`iter_raw_records` and
check them with :func:`validate_question`, so they accept and reject exactly the same data.

A question is a dict with the official fields::

    question_id int, question str, options list[str] (1-10), answer str (letter A-J),
    answer_index int, cot_content str, category str, src str

Problems are reported with the question_id and the file:line. Fatal ones (a missing field,
an empty options list, an answer letter outside the options) drop the record, and by default
the whole load fails listing them; a letter that disagrees with ``answer_index`` (question
3983 of the real test split) is a warning: the letter is authoritative and ``answer_index`` is
corrected to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import random
from typing import Any, Iterator, Mapping, Sequence

from spark_jax.core.jsonl import JsonlError, iter_jsonl

log = logging.getLogger(__name__)

ENV_VAR = "SPARK_MMLU_PRO"
HUB_REPO = "TIGER-Lab/MMLU-Pro"
FIELDS = ("question_id", "question", "options", "answer", "answer_index", "cot_content", "category", "src")
LETTERS = "ABCDEFGHIJ"


class QuestionDataError(ValueError):
    """MMLU-Pro data that cannot be used; the message lists every problem with its location."""


@dataclasses.dataclass(frozen=True)
class Issue:
    where: str  # "file:line" (JSONL) or "file:row" (Parquet)
    question_id: Any  # None when the record has none
    message: str
    fatal: bool  # True: the record is dropped; False: it was corrected

    def __str__(self) -> str:
        kind = "error" if self.fatal else "warning"
        return f"{self.where}: question_id={self.question_id}: {kind}: {self.message}"


def validate_question(raw: Any, where: str) -> tuple[dict[str, Any] | None, list[Issue]]:
    """Checks one raw record; returns (the cleaned question or None if unusable, its issues)."""
    if not isinstance(raw, Mapping):
        return None, [Issue(where, None, f"a record must be an object, got {type(raw).__name__}", True)]
    qid = raw.get("question_id")
    issues: list[Issue] = []

    def fatal(msg: str) -> tuple[None, list[Issue]]:
        issues.append(Issue(where, qid, msg, True))
        return None, issues

    missing = [f for f in FIELDS if f not in raw or raw[f] is None]
    if missing:
        return fatal(f"missing field(s) {missing}")
    if isinstance(qid, bool) or not isinstance(qid, int):
        return fatal(f"question_id must be an integer, got {qid!r}")
    for f in ("question", "answer", "cot_content", "category", "src"):
        if not isinstance(raw[f], str):
            return fatal(f"field {f!r} must be a string, got {type(raw[f]).__name__}")
    if not raw["question"].strip():
        return fatal("empty question text")
    if not raw["category"].strip():
        return fatal("empty category")
    options = raw["options"]
    if hasattr(options, "tolist"):  # a numpy array from Parquet
        options = options.tolist()
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) for o in options):
        return fatal("options must be a list of strings")
    if not options:
        return fatal("empty options list")
    if len(options) > len(LETTERS):
        return fatal(f"{len(options)} options; at most {len(LETTERS)} (A-J) are possible")
    letter = raw["answer"].strip()
    if len(letter) != 1 or letter not in LETTERS:
        return fatal(f"answer {raw['answer']!r} is not a letter A-J")
    letter_index = LETTERS.index(letter)
    if letter_index >= len(options):
        return fatal(f"answer {letter!r} is outside the {len(options)} options (A-{LETTERS[len(options) - 1]})")
    index = raw["answer_index"]
    if isinstance(index, bool) or not isinstance(index, int):
        return fatal(f"answer_index must be an integer, got {index!r}")
    if index != letter_index:
        issues.append(Issue(
            where, qid,
            f"answer {letter!r} disagrees with answer_index {index} "
            f"({LETTERS[index] if 0 <= index < len(LETTERS) else 'out of range'}); the letter is kept",
            False,
        ))
    question = {
        "question_id": qid,
        "question": raw["question"],
        "options": list(options),
        "answer": letter,
        "answer_index": letter_index,
        "cot_content": raw["cot_content"],
        "category": raw["category"].strip(),
        "src": raw["src"],
    }
    return question, issues


def resolve_source(path: str | os.PathLike | None) -> str:
    """The data location: ``path``, else $SPARK_MMLU_PRO, else ``hf://TIGER-Lab/MMLU-Pro``."""
    if path:
        return str(path)
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    return f"hf://{HUB_REPO}"


def _hub_files(spec: str, split: str) -> list[pathlib.Path]:
    """Downloads the split's Parquet files from the hub (needs network and huggingface_hub)."""
    repo = spec[len("hf://"):] or HUB_REPO
    try:
        # deferred: only a download needs huggingface_hub
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise QuestionDataError(f"{spec}: reading from the hub needs huggingface_hub ({e})") from e
    try:
        local = snapshot_download(repo_id=repo, repo_type="dataset", allow_patterns=[f"data/{split}-*.parquet"])
    except Exception as e:
        raise QuestionDataError(
            f"{spec}: could not download the {split!r} split from the Hugging Face hub ({type(e).__name__}: {e}); "
            f"give a local JSONL/Parquet file with --data or ${ENV_VAR}"
        ) from e
    files = sorted(pathlib.Path(local).glob(f"data/{split}-*.parquet"))
    if not files:
        raise QuestionDataError(f"{spec}: the hub snapshot has no data/{split}-*.parquet files")
    return files


def _iter_parquet(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
    # deferred: pyarrow is needed only for Parquet sources
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for row, rec in enumerate(table.to_pylist()):
        yield f"{path}:row {row}", rec


def source_files(source: str, split: str = "test") -> list[pathlib.Path]:
    """The local files behind ``source`` (a file, a directory of them, or ``hf://repo``)."""
    if source.startswith("hf://"):
        return _hub_files(source, split)
    p = pathlib.Path(source).expanduser()
    if p.is_dir():
        files = sorted(x for x in p.iterdir() if x.suffix in (".jsonl", ".parquet") and x.stem.startswith(split))
        if not files:
            raise QuestionDataError(f"{p}: no {split}*.jsonl or {split}*.parquet files in this directory")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"MMLU-Pro data not found: {p} (give --data PATH or set ${ENV_VAR})")
    if p.suffix not in (".jsonl", ".parquet"):
        raise QuestionDataError(f"{p}: expected a .jsonl or .parquet file")
    return [p]


def iter_raw_records(source: str, split: str = "test") -> Iterator[tuple[str, Any]]:
    """(location, raw record) for every record of the source, in file order."""
    for path in source_files(source, split):
        yield from (_iter_parquet(path) if path.suffix == ".parquet" else iter_jsonl(path, keep_bad=True))


def read_questions(source: str, split: str = "test") -> tuple[list[dict[str, Any]], list[Issue]]:
    """All valid questions and every issue found (including duplicate question_ids)."""
    questions: list[dict[str, Any]] = []
    issues: list[Issue] = []
    seen: dict[int, str] = {}
    for where, raw in iter_raw_records(source, split):
        if isinstance(raw, JsonlError):  # message: "file:line: not valid JSON: ..."
            issues.append(Issue(where, None, str(raw).removeprefix(f"{where}: "), True))
            continue
        q, found = validate_question(raw, where)
        issues.extend(found)
        if q is None:
            continue
        if q["question_id"] in seen:
            issues.append(Issue(where, q["question_id"], f"duplicate question_id (first at {seen[q['question_id']]})", True))
            continue
        seen[q["question_id"]] = where
        questions.append(q)
    return questions, issues


def load_questions(
    path: str | os.PathLike | None = None, *, split: str = "test", skip_invalid: bool = False
) -> list[dict[str, Any]]:
    """Validated questions from a JSONL/Parquet file (or $SPARK_MMLU_PRO, or the hub).

    Warnings (corrected records) are logged. Fatal problems raise :class:`QuestionDataError`
    listing them, unless ``skip_invalid`` drops those records (and logs each one).
    """
    source = resolve_source(path)
    questions, issues = read_questions(source, split)
    report_issues(issues, skip_invalid=skip_invalid, source=source)
    if not questions:
        raise QuestionDataError(f"{source}: no valid questions")
    return questions


def report_issues(issues: Sequence[Issue], *, skip_invalid: bool, source: str) -> None:
    for issue in issues:
        if not issue.fatal or skip_invalid:
            log.warning("%s", issue)
    errors = [i for i in issues if i.fatal]
    if errors and not skip_invalid:
        shown = "\n  ".join(str(i) for i in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise QuestionDataError(
            f"{source}: {len(errors)} invalid record(s) (pass --skip-invalid to drop them):\n  {shown}{more}"
        )


def fingerprint(source: str, split: str = "test") -> str:
    """sha256 over the source files' bytes: identifies the data in a run's config hash."""
    h = hashlib.sha256()
    for path in source_files(source, split):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _largest_remainder(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Splits ``total`` over categories in proportion to ``sizes`` (Hamilton's method).

    Ties in the remainders go to the larger category, then to the name, so the result is
    deterministic. Quotas never exceed the category's size.
    """
    pool = sum(sizes.values())
    if total > pool:
        raise QuestionDataError(f"asked for {total} questions but only {pool} are available")
    exact = {c: total * n / pool for c, n in sizes.items()} if pool else {}
    quota = {c: int(v) for c, v in exact.items()}
    order = sorted(sizes, key=lambda c: (-(exact[c] - quota[c]), -sizes[c], c))
    short = total - sum(quota.values())
    for c in order[:short]:
        quota[c] += 1
    return quota


def stratified_split(
    questions: Sequence[Mapping[str, Any]], num_train: int, heldout_per_category: int, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic category-stratified (train ids, held-out ids), disjoint.

    Each category is shuffled with its own seeded generator; its first
    ``heldout_per_category`` questions are held out, and ``num_train`` questions are drawn
    from the rest in proportion to the categories' remaining sizes (largest remainder). The
    train list is shuffled once more so that consecutive questions mix categories.
    """
    if num_train < 0 or heldout_per_category < 0:
        raise ValueError("num_train and heldout_per_category must be >= 0")
    by_cat: dict[str, list[int]] = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q["question_id"])
    heldout: list[int] = []
    pools: dict[str, list[int]] = {}
    for cat in sorted(by_cat):
        ids = sorted(by_cat[cat])
        random.Random(f"{seed}/{cat}").shuffle(ids)
        heldout.extend(ids[:heldout_per_category])
        pools[cat] = ids[heldout_per_category:]
    quota = _largest_remainder({c: len(v) for c, v in pools.items()}, num_train)
    train = [qid for cat in sorted(pools) for qid in pools[cat][: quota[cat]]]
    random.Random(f"{seed}/train-order").shuffle(train)
    return train, heldout
