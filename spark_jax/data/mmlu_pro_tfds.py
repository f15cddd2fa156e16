"""A tensorflow-datasets builder for MMLU-Pro that writes ArrayRecord for Grain.

The builder reads the official schema from a local JSONL/Parquet file (or the hub) through
the same reader and validation as :func:`spark_jax.data.mmlu_pro.load_questions`. Its builder
config is named after the source's content hash, so a changed file is rebuilt instead of
silently reusing an old cache. Text features come back from the data source as bytes;
:func:`decode_example` turns a record back into the plain question dict.

    builder = prepare(path, data_dir)                      # builds once, then reuses
    source = builder.as_data_source(split="test")          # random access, Grain-ready
    grain.MapDataset.source(source).shuffle(seed=0).map(decode_example)  # options are ragged
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from spark_jax.data import mmlu_pro

try:
    import tensorflow_datasets as tfds
except ImportError as e:
    raise ImportError(
        f"reading MMLU-Pro through tensorflow-datasets (--data-dir) needs the tfds extra: "
        f"pip install 'spark-jax[tfds]' ({e})"
    ) from e

DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")


class MmluPro(tfds.core.GeneratorBasedBuilder):
    """MMLU-Pro (TIGER-Lab), one split per source split, validated record by record."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official schema; answer letter authoritative over answer_index."}

    def __init__(self, *, source: str | None = None, skip_invalid: bool = False, splits=("test",), **kwargs):
        self._source = mmlu_pro.resolve_source(source)
        self._skip_invalid = skip_invalid
        self._splits = tuple(splits)
        if "config" not in kwargs:
            # Name the config after the data's content so a changed file gets its own build.
            digest = mmlu_pro.fingerprint(self._source, self._splits[0])[:16]
            kwargs["config"] = tfds.core.BuilderConfig(name=f"sha256_{digest}", description=self._source)
        super().__init__(file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "question_id": np.int64,
                "question": tfds.features.Text(),
                "options": tfds.features.Sequence(tfds.features.Text()),
                "answer": tfds.features.Text(),
                "answer_index": np.int32,
                "cot_content": tfds.features.Text(),
                "category": tfds.features.Text(),
                "src": tfds.features.Text(),
            }),
            homepage="https://huggingface.co/datasets/TIGER-Lab/MMLU-Pro",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the source is local (or fetched by huggingface_hub), never through tfds
        return {split: self._generate_examples(split) for split in self._splits}

    def _generate_examples(self, split: str):
        questions, issues = mmlu_pro.read_questions(self._source, split)
        mmlu_pro.report_issues(issues, skip_invalid=self._skip_invalid, source=self._source)
        for q in questions:
            yield q["question_id"], q


def prepare(
    source: str | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    skip_invalid: bool = False,
    splits=("test",),
) -> MmluPro:
    """The builder for ``source``, with its ArrayRecord files written under ``data_dir``."""
    data_dir = os.path.expanduser(str(data_dir or DEFAULT_DATA_DIR))
    builder = MmluPro(source=source, skip_invalid=skip_invalid, splits=splits, data_dir=data_dir)
    builder.download_and_prepare()
    return builder


def decode_example(ex: Mapping[str, Any]) -> dict[str, Any]:
    """A data-source record (bytes and numpy) back to the plain question dict."""

    def text(v: Any) -> str:
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)

    return {
        "question_id": int(ex["question_id"]),
        "question": text(ex["question"]),
        "options": [text(o) for o in ex["options"]],
        "answer": text(ex["answer"]),
        "answer_index": int(ex["answer_index"]),
        "cot_content": text(ex["cot_content"]),
        "category": text(ex["category"]),
        "src": text(ex["src"]),
    }


def load_questions_tfds(
    source: str | None = None, data_dir: str | os.PathLike | None = None, *, split: str = "test",
    skip_invalid: bool = False,
) -> list[dict[str, Any]]:
    """Questions read back through the builder's random-access data source (``as_data_source``,
    the source Grain reads); builds the dataset first if needed."""
    builder = prepare(source, data_dir, skip_invalid=skip_invalid, splits=(split,))
    src = builder.as_data_source(split=split)
    return [decode_example(src[i]) for i in range(len(src))]
