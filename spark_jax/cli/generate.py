"""Stage 1 sub-commands: ``generate`` (judged rarity-first rollouts) and ``export`` (JSONL)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from spark_jax.judge.config import BACKENDS as JUDGE_BACKENDS
from spark_jax.judge.config import DEFAULT_BACKEND as DEFAULT_JUDGE
from spark_jax.rollout.selection import RULES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="roll MMLU-Pro questions with a judge and write step records (resumable)")
    add_generate_args(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("export", help="write a run's step records as one JSON object per line")
    p.add_argument("run_dir", metavar="DIR", help="a `spark-jax generate --out` directory")
    p.add_argument("--jsonl", required=True, metavar="FILE", help="output file ('-' for stdout)")
    p.set_defaults(func=_export)


def add_generate_args(p: argparse.ArgumentParser) -> None:
    # Flags default to None so that only the ones given override --config and the defaults.
    p.add_argument("--data", metavar="PATH", help="MMLU-Pro JSONL/Parquet file or folder (default: $SPARK_MMLU_PRO, else the HF hub)")
    p.add_argument("--num-questions", type=int, metavar="N", help="training questions to roll out (default 2500)")
    p.add_argument("--steps", type=int, metavar="K", help="steps per question; the last is the answer (default 5)")
    p.add_argument("--selection", choices=RULES, help="selection rule (default lowest_viable)")
    p.add_argument("--threshold", type=float, help="judge score at or above which an action is viable (default 6.0)")
    p.add_argument("--judge", choices=JUDGE_BACKENDS, default=DEFAULT_JUDGE,
                   help=f"judge backend (default {DEFAULT_JUDGE}: runs here, no API key)")
    p.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible endpoint of the judge")
    p.add_argument("--judge-model", metavar="NAME", help="judge model name (openai) or path (local)")
    p.add_argument("--generator", metavar="PATH_OR_URL", default="embedded",
                   help="generator: model directory/.gguf/'embedded', or an OpenAI-compatible base URL")
    p.add_argument("--generator-model", metavar="NAME", help="served model name when --generator is a URL")
    p.add_argument("--concurrency", type=int, metavar="C", help="questions in flight / local batch size (default 8)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (created, or resumed)")
    p.add_argument("--config", metavar="FILE", help="YAML with GenerateConfig fields")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--heldout-per-category", type=int, help="held-out evaluation questions per category (default 10)")
    p.add_argument("--questions-per-shard", type=int, help="questions per lockstep block and shard (default 8)")
    p.add_argument("--data-dir", metavar="DIR", help="read the data through the TFDS builder with this data_dir "
                                                     "(ArrayRecord cache); default: read the file directly")
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid MMLU-Pro records instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. rewards.diversity=1.0")


_FLAG_FIELDS = {
    "data": "data", "num_questions": "num_questions", "steps": "steps", "selection": "selection",
    "threshold": "threshold", "concurrency": "concurrency", "seed": "seed",
    "heldout_per_category": "heldout_per_category", "questions_per_shard": "questions_per_shard",
}


def build_config(args: argparse.Namespace):
    """GenerateConfig from defaults < --config FILE < flags < KEY=VALUE overrides."""
    from spark_jax.core.config_io import load_config, parse_overrides, to_dict
    from spark_jax.rollout.config import GenerateConfig

    base = load_config(GenerateConfig, args.config) if args.config else GenerateConfig()
    data = to_dict(base)
    for flag, field in _FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            data[field] = value
    if args.no_progress:
        data["progress"] = False
    overrides = list(args.overrides or [])
    parse_overrides(overrides)  # reports a malformed override before anything runs
    return load_config(GenerateConfig, None, overrides, base=data)


def load_run_questions(cfg, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The validated questions and the data's content hash."""
    from spark_jax.data import mmlu_pro

    source = mmlu_pro.resolve_source(cfg.data or None)
    if args.data_dir:
        from spark_jax.data.mmlu_pro_tfds import load_questions_tfds

        questions = load_questions_tfds(source, args.data_dir, skip_invalid=args.skip_invalid)
    else:
        questions = mmlu_pro.load_questions(source, skip_invalid=args.skip_invalid)
    return questions, mmlu_pro.fingerprint(source)


def run_generate(args: argparse.Namespace, *, judge: Any, generator: Any, tool_runner: Any) -> int:
    """`generate` with the given backends (the CLI builds the real ones; tests inject fakes)."""
    from spark_jax.rollout.driver import generate

    cfg = build_config(args)
    questions, data_sha = load_run_questions(cfg, args)
    summary = generate(cfg, questions=questions, data_sha256=data_sha, judge=judge, generator=generator,
                       tool_runner=tool_runner, out_dir=args.out)
    print(json.dumps({
        "run_dir": str(summary.run_dir), "resumed": summary.resumed,
        "train_questions": summary.train_questions, "completed_questions": summary.completed_questions,
        "records": summary.records, "failed": len(summary.failed), "usage_counts": summary.usage_counts,
        "stats": dataclasses.asdict(summary.stats),
    }))
    if summary.failed:
        print(f"{len(summary.failed)} question(s) failed (listed in {summary.run_dir}/manifest.json); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _generate(args: argparse.Namespace) -> int:
    """Builds the real judge, generator and tool runner, then runs ``run_generate``."""
    from spark_jax.core.distributed import is_main_process, maybe_initialize
    from spark_jax.judge import JudgeConfig, build_judge
    from spark_jax.rollout.generators import GeneratorConfig, build_generator
    from spark_jax.tools import run_tool

    build_config(args)  # report config errors before loading a model

    # Stage 1 is one process writing one run directory (its store takes a file lock). Launched on
    # every worker of a slice, the other processes step aside instead of racing for the lock.
    maybe_initialize()
    if not is_main_process():
        print("Stage 1 generation runs on process 0 only; this process has nothing to do", file=sys.stderr)
        return 0
    generator_url = _is_url(args.generator)
    judge_cfg = JudgeConfig(backend=args.judge, model=args.judge_model, base_url=args.judge_base_url)
    gen_cfg = (GeneratorConfig(backend="openai", base_url=args.generator, model=args.generator_model)
               if generator_url else GeneratorConfig(backend="local", model=args.generator))
    local_model = None
    if not generator_url:  # one in-process model serves the generator and a local judge of the same path
        from spark_jax.model.pretrained import load_pretrained

        local_model = load_pretrained(gen_cfg.model)
    same_model = judge_cfg.backend == "local" and judge_cfg.model == gen_cfg.model
    judge = build_judge(judge_cfg, local_model=local_model if same_model else None)
    generator = build_generator(gen_cfg, local_model=local_model)
    return run_generate(args, judge=judge, generator=generator, tool_runner=run_tool)


def _export(args: argparse.Namespace) -> int:
    from spark_jax.rollout.export import export_jsonl, summarize_run

    n = export_jsonl(args.run_dir, args.jsonl)
    if args.jsonl != "-":
        print(f"wrote {n} step records to {args.jsonl}", file=sys.stderr)
        print(json.dumps(summarize_run(args.run_dir)))
    return 0
