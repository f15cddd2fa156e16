"""``spark-jax demo``: the whole SPaRK pipeline on the embedded model, end to end.

Stage 1 (judged rarity-first rollouts, local judge) -> Stage 2 (SFT, then a third arm with LoRA,
by default PPO warm-started from SFT) -> evaluation of base, SFT and that arm on held-out
questions -> report and plots. Every stage writes its own directory under ``--out`` and the
whole run resumes where it stopped.

By default it runs on the original question set that ships with spark-jax
(``spark_jax/data/demo_questions.jsonl``: 4 questions per MMLU-Pro category, MMLU-Pro's
schema); ``--data`` takes a local MMLU-Pro file instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import pathlib
import shutil
import sys
import time
from typing import Any

DEMO_QUESTIONS = "demo_questions.jsonl"
# arm -> (algo for the experiment's train_config grammar, warm-started from SFT, the system's name)
DEMO_ARMS = {
    "ppo": ("ppo", False, "SPaRK (PPO)"),
    "ppo@sft": ("ppo", True, "SPaRK (PPO from SFT)"),
    "cand@sft": ("cand", True, "Candidates (from SFT)"),
    # the experiment's compute-matched SFT: the demo's SFT run trained train_steps more
    "sft@sft": ("sft", True, "SFT (from SFT)"),
}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    model: str = "embedded"
    data: str | None = None  # an MMLU-Pro file; None: the shipped demo questions
    # Defaults sized for `make demo` on a 2-core CPU (docs/results/demo-2026-12-01/): enough
    # LoRA steps at a high learning rate to move the policy's choice of action, scored in score mode.
    train_questions: int = 14  # Stage 1 questions (category-stratified)
    heldout_per_category: int = 1  # evaluation questions per category
    rollout_steps: int = 2  # K for Stage 1 (the last step is the answer)
    selection: str = "lowest_viable"
    # SmolLM2-135M as a local judge scores in a narrow band where GPT-4o spreads 0-10; at the
    # paper's 6.0 most steps would have nothing viable (docs/stage1.md).
    threshold: float = 5.0
    train_steps: int = 6  # optimizer steps for SFT and for PPO each
    batch_size: int = 2  # trajectories per step (packed)
    lora_rank: int = 8
    lr: float = 5e-4
    warmup_steps: int = 2
    eval_steps: int = 1  # policy actions before the forced answer
    # score: the ten action headers are ranked by log-probability (no format errors), which shows
    # the action distribution a few training steps produce; generate needs longer training for it.
    eval_mode: str = "score"
    # The third system, beside base and SFT (DEMO_ARMS): PPO from the base model, or an arm
    # warm-started from the demo's SFT run (PPO's token objective, the candidate objective, or SFT).
    # Default: the arm the multi-seed experiment found acting with the most diverse tools in this
    # eval_mode (docs/results/experiment-seeds-2026-12-07/; tests/apps/test_demo.py checks it).
    arm: str = "ppo@sft"
    seed: int = 0
    reference_preds: str | None = None

    def __post_init__(self):
        for name in ("train_questions", "heldout_per_category", "rollout_steps", "train_steps", "batch_size",
                     "lora_rank", "eval_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.arm not in DEMO_ARMS:
            raise ValueError(f"arm must be one of {sorted(DEMO_ARMS)}, got {self.arm!r}")
        if self.eval_mode not in ("generate", "score"):
            raise ValueError(f"eval_mode must be 'generate' or 'score', got {self.eval_mode!r}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline (Stage 1 -> SFT + PPO -> evaluation -> report) on the "
                                    "embedded model")
    p.add_argument("--out", default="runs/demo", help="output directory (resumed if it exists)")
    p.add_argument("--data", help="a local MMLU-Pro JSONL/Parquet file (default: the shipped demo questions)")
    p.add_argument("--model", default="embedded")
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of resuming")
    p.add_argument("--reference-preds", help="published predictions for a reference row (real MMLU-Pro ids only)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="DemoConfig overrides, e.g. train_steps=50")
    p.set_defaults(func=_demo)


def demo_questions_path() -> pathlib.Path:
    return pathlib.Path(str(importlib.resources.files("spark_jax.data") / DEMO_QUESTIONS))


def _demo(args: argparse.Namespace) -> int:
    from spark_jax.core.config_io import load_config
    from spark_jax.core.provenance import record_invocation
    from spark_jax.eval.report import summary_table

    extra = [f"data={json.dumps(args.data)}"] if args.data else []
    extra += [f"model={json.dumps(args.model)}"]
    if args.reference_preds:
        extra.append(f"reference_preds={json.dumps(args.reference_preds)}")
    cfg = load_config(DemoConfig, None, extra + list(args.overrides))
    out = pathlib.Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    with record_invocation(out, getattr(args, "command_line", None)):
        summary = run_demo(cfg, out)
    print("\n" + summary_table(summary))
    print(f"\nreport: {out / 'report' / 'report.md'} (plots beside it)", file=sys.stderr)
    return 0


def _stage(name: str) -> None:
    print(f"\n== {name}", file=sys.stderr, flush=True)


def run_demo(cfg: DemoConfig, out: pathlib.Path) -> dict[str, Any]:
    """Runs (or resumes) every stage into ``out``; returns the evaluation summary."""
    from spark_jax.apps import pipeline
    from spark_jax.data import mmlu_pro
    from spark_jax.eval.agent import AgentConfig
    from spark_jax.eval.evaluate import evaluate_systems, write_trajectories
    from spark_jax.eval.report import load_reference_predictions, write_report
    from spark_jax.rollout.config import GenerateConfig

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    source = pathlib.Path(cfg.data) if cfg.data else demo_questions_path()
    questions = mmlu_pro.load_questions(str(source))
    timings: dict[str, float] = {}

    _stage(f"Stage 1: {cfg.train_questions} questions x {cfg.rollout_steps} steps, local judge, "
           f"{cfg.selection} (threshold {cfg.threshold})")
    t = time.perf_counter()
    env = pipeline.local_env(cfg.model, str(source), questions)
    gen_cfg = GenerateConfig(
        data=str(source), num_questions=cfg.train_questions, heldout_per_category=cfg.heldout_per_category,
        seed=cfg.seed, steps=cfg.rollout_steps, selection=cfg.selection, threshold=cfg.threshold,
        questions_per_shard=cfg.train_questions,
        concurrency=cfg.train_questions, max_tokens_tool=48, max_tokens_thought=64, max_tokens_answer=64,
        max_observation_chars=400,
    )
    stage1 = out / "stage1"
    pipeline.run_stage1(env, gen_cfg, stage1)
    timings["stage1_s"] = time.perf_counter() - t

    runs = {}
    algo, warm, arm_system = DEMO_ARMS[cfg.arm]
    arms = [("sft", "SFT", "train_sft", None),
            (algo, arm_system, f"train_{algo}" + ("_from_sft" if warm else ""), out / "train_sft" if warm else None)]
    for algo_i, name, folder, init_from in arms:
        _stage(f"Stage 2: {name}, {cfg.train_steps} steps, LoRA rank {cfg.lora_rank}")
        t = time.perf_counter()
        runs[name] = pipeline.train_arm(train_config(cfg, algo_i, stage1, init_from), out / folder)
        timings[f"{folder}_s"] = time.perf_counter() - t

    _stage(f"Evaluation: base, SFT and {arm_system} on the held-out questions ({cfg.eval_mode}, "
           f"{cfg.eval_steps} steps)")
    t = time.perf_counter()
    manifest = pipeline.read_manifest(stage1)
    heldout = pipeline.split_questions(manifest, questions, "heldout", source=str(source))
    agent_cfg = AgentConfig(max_steps=cfg.eval_steps, mode=cfg.eval_mode, max_action_tokens=48,
                            max_answer_tokens=64, observation_chars=400)
    rows = evaluate_systems(pipeline.systems(lambda: env.base, runs), heldout, agent_cfg)
    if cfg.reference_preds:
        rows += load_reference_predictions(cfg.reference_preds, heldout, "Llama-3.1-8B-Instruct (published)")
    timings["eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    report_dir = out / "report"
    summary = write_report(report_dir, rows, title=f"spark-jax demo: base vs SFT vs {arm_system}", meta={
        "model": cfg.model, "questions": f"{source.name}: {len(manifest['questions']['train'])} train, "
                                         f"{len(heldout)} held-out",
        "config": json.dumps(dataclasses.asdict(cfg)),
        **{k: round(v, 1) for k, v in timings.items()},
    })
    write_trajectories(report_dir / "trajectories.jsonl", rows)
    return summary


def train_config(cfg: DemoConfig, algo: str, stage1: pathlib.Path, init_from: pathlib.Path | None = None):
    """SFT's, PPO's or the candidate objective's (``cand``: PPO plus cross-entropy over the ten
    judged headers) TrainConfig on the Stage 1 run ``stage1``, warm-started from ``init_from``."""
    from spark_jax.apps import pipeline
    from spark_jax.rl.adapters import LoraConfig
    from spark_jax.rl.config import CheckpointConfig, OptimConfig, TrainConfig

    base = TrainConfig()
    return dataclasses.replace(
        base, **pipeline.objective(base, algo), init_from=str(init_from or ""), data=str(stage1), model=cfg.model,
        steps=cfg.train_steps,
        batch_size=cfg.batch_size, grad_accum=1, seed=cfg.seed,
        # A packed demo trajectory (system prompt, question, one action, the answer) is 475-655
        # tokens on the shipped questions and its two actions (headers, at most 48 + 64 written
        # tokens, end markers) stay under 192: one compilation, and no row padded to 1024.
        seq_buckets=(768, 1024), action_buckets=(192,),
        lora=LoraConfig(rank=cfg.lora_rank, alpha=2.0 * cfg.lora_rank),
        optim=dataclasses.replace(OptimConfig(), lr=cfg.lr, warmup_steps=cfg.warmup_steps),
        checkpoint=CheckpointConfig(every=max(1, cfg.train_steps // 2), keep=1),
    )
