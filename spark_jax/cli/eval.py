"""``spark-jax eval``: base model vs trained adapters on the same held-out questions."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, Sequence


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a base model and trained adapters on held-out MMLU-Pro questions")
    p.add_argument("--model", required=True, help="base model: HF directory, .gguf file or 'embedded'")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                   help="a `spark-jax train --out` directory (repeatable); NAME defaults to the folder name")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="a Stage 1 run directory (its manifest's split) or an MMLU-Pro JSONL/Parquet file")
    p.add_argument("--questions", metavar="PATH", help="MMLU-Pro file holding the run's questions "
                                                      "(default: the path recorded in the run's manifest)")
    p.add_argument("--split", default="heldout", choices=("heldout", "train"), help="which questions (default heldout)")
    p.add_argument("--per-category", type=int, default=10, metavar="N",
                   help="held-out questions per category when --data is a file (default 10)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --data is a file")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--mode", default="generate", choices=("generate", "score"),
                   help="the policy writes its action (generate) or ranks the ten action headers (score)")
    p.add_argument("--max-steps", type=int, default=5, metavar="K", help="actions before a forced final answer")
    p.add_argument("--answer-mode", default="letter", choices=("letter", "text"),
                   help="letter: the final answer is read by scoring the option letters after 'The answer is (' "
                        "(always answered); text: the free-text answer of earlier versions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reference-preds", metavar="FILE",
                   help="a predictions file (question_id, pred), e.g. the published Llama-3.1-8B-Instruct results")
    p.add_argument("--reference-name", default="Llama-3.1-8B-Instruct (5-shot CoT, published)")
    p.add_argument("--no-base", action="store_true", help="skip the base model row")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)


def parse_adapters(specs: Sequence[str]) -> list[tuple[str, pathlib.Path]]:
    out = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        p = pathlib.Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"--adapter {spec}: {p} is not a training run directory")
        out.append((name or p.name, p))
    names = [n for n, _ in out]
    if len(set(names)) != len(names) or "base" in names:
        raise ValueError(f"--adapter names must be unique and not 'base', got {names}")
    return out


def select_questions(data: str, split: str, *, questions_path: str | None = None, per_category: int = 10,
                     seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """(questions, description): a Stage 1 run's split, or a stratified held-out draw from a file."""
    from spark_jax.apps import pipeline
    from spark_jax.data import mmlu_pro

    path = pathlib.Path(data)
    if path.is_dir() and (path / "manifest.json").is_file():
        manifest = pipeline.read_manifest(path)
        source = questions_path or manifest.get("data") or mmlu_pro.resolve_source(None)
        questions = mmlu_pro.load_questions(mmlu_pro.resolve_source(source))
        try:
            chosen = pipeline.split_questions(manifest, questions, split, source=source)
        except ValueError as e:
            raise ValueError(f"{e}; pass the run's data with --questions") from None
        return chosen, f"{split} split of Stage 1 run {path}"
    questions = mmlu_pro.load_questions(mmlu_pro.resolve_source(data))
    train, heldout = mmlu_pro.stratified_split(questions, 0 if split == "heldout" else len(questions),
                                               per_category, seed)
    by_id = {q["question_id"]: q for q in questions}
    ids = heldout if split == "heldout" else train
    return [by_id[i] for i in ids], f"{split}: {per_category} per category from {data} (seed {seed})"


def _eval(args: argparse.Namespace) -> int:
    from spark_jax.apps import pipeline
    from spark_jax.eval.agent import AgentConfig
    from spark_jax.eval.evaluate import evaluate_systems, write_trajectories
    from spark_jax.eval.report import load_reference_predictions, summary_table, write_report
    from spark_jax.model.pretrained import load_pretrained

    adapters = parse_adapters(args.adapter)
    agent_config = AgentConfig(max_steps=args.max_steps, mode=args.mode, batch_size=args.batch_size,
                               answer_mode=args.answer_mode)
    questions, described = select_questions(args.data, args.split, questions_path=args.questions,
                                            per_category=args.per_category, seed=args.seed)
    if not questions:
        raise ValueError(f"no questions selected ({described})")
    systems = pipeline.systems(None if args.no_base else lambda: load_pretrained(args.model), dict(adapters))
    t0 = time.perf_counter()
    rows = evaluate_systems(systems, questions, agent_config, progress=not args.no_progress)
    if args.reference_preds:
        rows += load_reference_predictions(args.reference_preds, questions, args.reference_name)
    out = pathlib.Path(args.out)
    summary = write_report(out, rows, title="spark-jax evaluation", meta={
        "questions": f"{len(questions)} ({described})", "base model": args.model, "mode": args.mode,
        "answer mode": args.answer_mode,
        "max steps": args.max_steps, "seconds": round(time.perf_counter() - t0, 1),
    })
    write_trajectories(out / "trajectories.jsonl", rows)
    print(summary_table(summary))
    print(f"\nreport: {out / 'report.md'}", file=sys.stderr)
    return 0
