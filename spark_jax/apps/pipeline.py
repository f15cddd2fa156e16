"""The pipeline steps ``demo``, ``experiment`` and ``eval`` share: a local judge and generator
on one model, a Stage 1 run, a trained arm, and a Stage 1 run's held-out questions."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from spark_jax.rl.config import TrainConfig
    from spark_jax.rollout.config import GenerateConfig
    from spark_jax.rollout.driver import RunSummary

# Each step imports the layers it drives inside itself: they load jax (model, trainer) and the tool
# registry, while `spark-jax eval` and the benchmarks use the manifest helpers alone.


@dataclasses.dataclass(frozen=True)
class LocalEnv:
    """The questions of ``source`` and one model serving as base policy, judge and generator."""
    source: str
    questions: list[dict[str, Any]]
    base: Any
    judge: Any
    generator: Any


def local_env(model: str, source: str, questions: list[dict[str, Any]]) -> LocalEnv:
    """Loads ``model`` once and builds the local judge and generator on it."""
    from spark_jax.judge import JudgeConfig, build_judge  # deferred: see the module comment
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.rollout.generators import GeneratorConfig, build_generator

    base = load_pretrained(model)
    judge = build_judge(JudgeConfig(backend="local", model=model), local_model=base)
    generator = build_generator(GeneratorConfig(backend="local", model=model), local_model=base)
    return LocalEnv(source, questions, base, judge, generator)


def run_stage1(env: LocalEnv, gen_cfg: GenerateConfig, out_dir: pathlib.Path,
               questions: list[dict[str, Any]] | None = None) -> RunSummary:
    """Runs (or resumes) Stage 1 on ``questions`` (default: all of ``env``'s) into ``out_dir``;
    raises when it produced no records."""
    from spark_jax.data import mmlu_pro  # deferred: see the module comment
    from spark_jax.rollout.driver import generate
    from spark_jax.tools import run_tool

    summary = generate(gen_cfg, questions=env.questions if questions is None else questions,
                       data_sha256=mmlu_pro.fingerprint(env.source), judge=env.judge, generator=env.generator,
                       tool_runner=run_tool, out_dir=out_dir)
    if summary.records == 0:
        first = next(iter(summary.failed.values()), {}) if summary.failed else {}
        raise RuntimeError(f"Stage 1 ({gen_cfg.selection}) produced no records ({len(summary.failed)} questions "
                           f"failed; first error: {first.get('error', 'unknown')}); see {out_dir / 'manifest.json'}")
    return summary


def objective(base: TrainConfig, algo: str) -> dict[str, Any]:
    """TrainConfig fields for an arm's objective: ``sft``, ``ppo``, or ``cand`` (PPO's token loss on
    the selected action's input plus cross-entropy over the ten judged headers; docs/training.md)."""
    if algo == "cand":
        return {"algo": "ppo", "candidates": dataclasses.replace(base.candidates, loss="xent", token_header=False)}
    if algo not in ("sft", "ppo"):
        raise ValueError(f"unknown objective {algo!r}: expected sft, ppo or cand")
    return {"algo": algo}


def train_arm(train_cfg: TrainConfig, run_dir: pathlib.Path) -> pathlib.Path:
    """Trains (or resumes) one arm into ``run_dir``, fitted to the device's memory first."""
    from spark_jax.plan.fit import fit_to_memory  # deferred: see the module comment
    from spark_jax.rl.trainer import Trainer

    trainer = Trainer(fit_to_memory(train_cfg).cfg, run_dir)
    try:
        trainer.run(progress=True)
    finally:
        trainer.close()
    return run_dir


def read_manifest(run_dir: pathlib.Path) -> dict[str, Any]:
    """A Stage 1 run's ``manifest.json``."""
    return json.loads((pathlib.Path(run_dir) / "manifest.json").read_text())


def split_questions(manifest: dict[str, Any], questions: list[dict[str, Any]], split: str = "heldout",
                    source: str = "the questions") -> list[dict[str, Any]]:
    """The manifest's ``split`` ("heldout" or "train") as question dicts, in the manifest's order;
    raises ValueError naming ``source`` when it lacks some of the ids."""
    ids = manifest["questions"][split]
    by_id = {q["question_id"]: q for q in questions}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} of the run's {split} question ids, e.g. {missing[:5]}")
    return [by_id[i] for i in ids]


def systems(base: Callable[[], Any] | None, runs: dict[str, pathlib.Path]) -> list[tuple[str, Callable[[], Any]]]:
    """``evaluate_systems``' (name, loader) list: "base" (unless None), then each trained run."""
    from spark_jax.rl.export import pretrained_from_run  # deferred: see the module comment

    out = [] if base is None else [("base", base)]
    return out + [(name, lambda run=run: pretrained_from_run(run)) for name, run in runs.items()]
