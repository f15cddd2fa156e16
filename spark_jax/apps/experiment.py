"""``spark-jax experiment``: SPaRK's claim as one resumable command.

Stage 1 twice on the same MMLU-Pro training questions and seed (``lowest_viable`` and
``greedy``), then the trained arms (SFT and PPO on either data, same steps, seed and learning
rate), then every arm and the base model on the held-out questions, in score mode and in
generate mode. Every stage writes its own directory under ``--out`` and is skipped or resumed
when it is there: Stage 1 and training resume by themselves, and each system's evaluation rows
are kept once complete. Each arm is evaluated right after its training, so an arm with complete
rows needs its checkpoints only as the warm-start source of an arm still to be evaluated: a run
folder carried to a new machine without ``checkpoints/`` (the large part) resumes from there, and
retrains only such sources.

Outputs: ``report_<mode>/`` (report.json, predictions, plots, report.md) per evaluation mode and
``experiment.md``, the table this command writes itself (label entropy of each Stage 1 run, and
per system and mode: official accuracy, answered rate, pooled tool entropy and per-state header
entropy with intervals, tool calls, format errors).

Seeds (``seeds: [0, 1, 2]``): each seed runs the whole pipeline in ``seed_<s>/`` with its own
Stage 1 training sample, LoRA initialisation and data order; the held-out questions are the same
for every seed (drawn with ``seed``), so seeds are paired across arms. The base model decodes
greedily, so its rows are evaluated once (first seed) and reused. The top ``experiment.md`` then
gives each arm's mean over seeds and the paired differences the claim rests on, with 95% t
intervals over seeds (``spark_jax.eval.paired``); ``seeds.json`` keeps every seed's figures.
Each seed and each arm resumes on its own. Without ``seeds`` the single ``seed`` runs in ``--out``
itself, as before.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import signal
import sys
import time
from typing import Any

ARM_SEPARATOR = ":"
WARM_SEPARATOR = "@"
ALGOS = ("sft", "ppo", "cand")  # cand: PPO's token objective plus the candidate objective (xent)


def parse_arm(arm: str) -> tuple[str, str, str]:
    """"<algo>:<selection>[@<algo>]" -> (algo, selection, the algo whose arm on the same
    selection this one warm-starts from, or "")."""
    head, _, init = arm.partition(WARM_SEPARATOR)
    algo, _, selection = head.partition(ARM_SEPARATOR)
    return algo, selection, init


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: str = "embedded"
    data: str = ""  # MMLU-Pro JSONL/Parquet; "" -> $SPARK_MMLU_PRO
    train_questions: int = 32
    heldout_per_category: int = 10  # 14 categories: 140 evaluation questions
    rollout_steps: int = 3  # K for Stage 1 (the last step is the answer)
    threshold: float = 5.0  # the embedded model as judge scores about 4-7 (see docs/stage1.md)
    selections: tuple[str, ...] = ("lowest_viable", "greedy")
    # "<algo>:<selection>": SFT and PPO on each Stage 1 run
    arms: tuple[str, ...] = ("sft:greedy", "sft:lowest_viable", "ppo:lowest_viable", "ppo:greedy")
    train_steps: int = 60
    batch_size: int = 2  # trajectories per step (packed)
    lr: float = 3e-4
    warmup_steps: int = 5
    lora_rank: int = 16
    kl_coef: float = 0.05  # PPO's KL(policy || reference) penalty weight (PPOConfig.kl_coef)
    # optimizer updates per batch for every arm (TrainConfig.updates_per_batch): SFT and PPO make
    # the same number of updates on the same tokens
    updates_per_batch: int = 2
    remat: bool = False  # recompute each decoder layer in the backward pass (less memory, same update)
    seed: int = 0  # the held-out draw, and the only training seed when seeds is empty
    seeds: tuple[int, ...] = ()  # training seeds, each in seed_<s>/ (module docstring)
    eval_modes: tuple[str, ...] = ("score", "generate")
    eval_steps: int = 2  # policy actions before the forced answer
    answer_mode: str = "letter"  # letter: the final answer is always read (AgentConfig); text: free text
    # False: only the trained arms are evaluated, e.g. an arm run on its own after the others, whose
    # base-model rows an earlier run of the same questions already holds
    evaluate_base: bool = True
    max_tokens_tool: int = 64
    max_tokens_thought: int = 96
    max_tokens_answer: int = 96
    max_observation_chars: int = 600
    concurrency: int = 8

    def __post_init__(self):
        from spark_jax.rollout.selection import RULES

        for name in ("train_questions", "rollout_steps", "train_steps", "batch_size", "lora_rank", "eval_steps",
                     "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"experiment {name} must be >= 1, got {getattr(self, name)}")
        bad = [s for s in self.selections if s not in RULES]
        if bad or not self.selections:
            raise ValueError(f"experiment selections must be some of {list(RULES)}, got {list(self.selections)}")
        for i, arm in enumerate(self.arms):
            algo, selection, init = parse_arm(arm)
            if algo not in ALGOS or selection not in self.selections:
                raise ValueError(f"experiment arm {arm!r} must be '<algo>:<selection>[@<algo>]' with an algo from "
                                 f"{list(ALGOS)} and a selection from {list(self.selections)}")
            if init and f"{init}{ARM_SEPARATOR}{selection}" not in self.arms[:i]:
                raise ValueError(f"experiment arm {arm!r} warm-starts from '{init}:{selection}', which must be an "
                                 "earlier arm")
        if not self.kl_coef >= 0:
            raise ValueError(f"experiment kl_coef must be >= 0, got {self.kl_coef}")
        if not self.evaluate_base and not self.arms:
            raise ValueError("experiment has nothing to evaluate: evaluate_base is false and arms is empty")
        if self.answer_mode not in ("letter", "text"):
            raise ValueError(f"experiment answer_mode must be 'letter' or 'text', got {self.answer_mode!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"experiment seeds must be distinct, got {list(self.seeds)}")
        if not self.eval_modes or any(m not in ("score", "generate") for m in self.eval_modes):
            raise ValueError(f"experiment eval_modes must be some of score, generate; got {list(self.eval_modes)}")


def register(sub) -> None:
    p = sub.add_parser("experiment", help="SPaRK's claim on real MMLU-Pro: two Stage 1 runs, SFT/PPO arms, "
                                          "evaluation of every arm and the base model (resumable)")
    p.add_argument("--config", help="YAML ExperimentConfig (configs/experiments/smollm2_entropy.yaml)")
    p.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train_steps=20")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from spark_jax.core.config_io import load_config
    from spark_jax.core.provenance import invocations_summary, record_invocation

    cfg = load_config(ExperimentConfig, args.config, list(args.overrides))
    out = pathlib.Path(args.out)
    # A kill (SIGTERM) unwinds like Ctrl-C, so the stage it stops still records its time.
    signal.signal(signal.SIGTERM, _interrupt)
    with record_invocation(out, getattr(args, "command_line", None)):
        table = run_experiment(cfg, out)
    # every invocation of this run (commits, wall time), this one included, under the table
    table += "\n\n" + invocations_summary(out) + "\n"
    (out / "experiment.md").write_text(table)
    print(table)
    print(f"\nexperiment table: {out / 'experiment.md'}", file=sys.stderr)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stage(text: str) -> None:
    print(f"\n== {text}", file=sys.stderr, flush=True)


def arm_name(arm: str) -> str:
    algo, selection, init = parse_arm(arm)
    name = f"{algo.upper()}-{'rarity' if selection == 'lowest_viable' else selection}"
    return f"{name}-from-{init.upper()}" if init else name


def arm_dir(arm: str) -> str:
    algo, selection, init = parse_arm(arm)
    return f"train_{algo}_{selection}" + (f"_from_{init}" if init else "")


def train_config(cfg: ExperimentConfig, algo: str, data: pathlib.Path, init_from: pathlib.Path | None = None,
                 seed: int | None = None):
    """The arms' shared TrainConfig: same steps, seed (``cfg.seed`` unless given), learning rate,
    adapters and updates per batch; the seed sets the LoRA initialisation and the data order.
    ``cand`` adds the candidate objective to PPO, ``init_from`` warm-starts."""
    from spark_jax.apps import pipeline
    from spark_jax.rl.adapters import LoraConfig
    from spark_jax.rl.config import CheckpointConfig, OptimConfig, TrainConfig

    # every arm logs the header diagnostics (per-state and pooled header entropy, header KL)
    base = TrainConfig()
    base = dataclasses.replace(base, candidates=dataclasses.replace(base.candidates, metrics=True))
    return dataclasses.replace(
        base, **pipeline.objective(base, algo), init_from=str(init_from or ""),
        updates_per_batch=cfg.updates_per_batch, remat=cfg.remat,
        data=str(data), model=cfg.model, steps=cfg.train_steps, batch_size=cfg.batch_size,
        # A packed trajectory holds every step's actions: with the default token caps, one action
        # bucket and two sequence buckets mean at most two compilations per arm.
        grad_accum=1, seq_buckets=(1024, 1536, 2048), action_buckets=(cfg.rollout_steps * 128,),
        seed=cfg.seed if seed is None else seed,
        optim=dataclasses.replace(OptimConfig(), lr=cfg.lr, warmup_steps=cfg.warmup_steps),
        ppo=dataclasses.replace(base.ppo, kl_coef=cfg.kl_coef),
        lora=dataclasses.replace(LoraConfig(), rank=cfg.lora_rank, alpha=2.0 * cfg.lora_rank),
        checkpoint=CheckpointConfig(every=max(1, cfg.train_steps // 4), keep=1),
    )


def run_experiment(cfg: ExperimentConfig, out: pathlib.Path) -> str:
    """Runs (or resumes) every stage into ``out``; returns the Markdown table it wrote."""
    from spark_jax.apps import pipeline
    from spark_jax.data import mmlu_pro

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    source = mmlu_pro.resolve_source(cfg.data or None)
    questions = mmlu_pro.load_questions(source)
    env = pipeline.local_env(cfg.model, source, questions)
    if not cfg.seeds:
        timings = _Timings(out / "timings.json")
        labels, reports, _ = _run_seed(cfg, cfg.seed, out, env, timings, heldout_ids=None, base_rows=None)
        table = experiment_table(cfg, labels, reports, timings.totals(this_invocation_s=time.perf_counter() - t0))
        (out / "experiment.md").write_text(table)
        return table

    _, heldout_ids = mmlu_pro.stratified_split(questions, 0, cfg.heldout_per_category, cfg.seed)
    per_seed: dict[int, tuple[dict, dict, dict]] = {}
    first = out / f"seed_{cfg.seeds[0]}"
    for seed in cfg.seeds:
        _stage(f"seed {seed}")
        seed_out = out / f"seed_{seed}"
        seed_out.mkdir(parents=True, exist_ok=True)
        timings = _Timings(seed_out / "timings.json")
        labels, reports, rows = _run_seed(cfg, seed, seed_out, env, timings, heldout_ids=heldout_ids,
                                          base_rows=None if seed_out == first else first)
        table = experiment_table(cfg, labels, reports, timings.totals(this_invocation_s=time.perf_counter() - t0))
        (seed_out / "experiment.md").write_text(table)
        per_seed[seed] = (labels, reports, rows)
    table = seeds_table(cfg, per_seed, len(heldout_ids))
    (out / "experiment.md").write_text(table)
    from spark_jax.eval.paired import plot_seeds

    for mode in cfg.eval_modes:
        plot_seeds(out / f"seeds_{mode}.png", {seed: reports[mode] for seed, (_, reports, _) in per_seed.items()},
                   f"{mode} mode over {len(per_seed)} seeds")
    (out / "seeds.json").write_text(json.dumps(seeds_summary(cfg, per_seed), indent=2, allow_nan=False))
    return table


def _run_seed(cfg: ExperimentConfig, seed: int, out: pathlib.Path, env, timings: "_Timings", *,
              heldout_ids: list[int] | None, base_rows: pathlib.Path | None) -> tuple[dict, dict, dict]:
    """One seed's Stage 1 runs, arms and evaluations in ``out``: (labels, reports, rows), with
    ``reports`` ``{mode: summary}`` and ``rows`` ``{mode: {system: evaluation rows}}``.

    ``heldout_ids``: fixed held-out questions, kept out of the Stage 1 pool (None: Stage 1 draws
    them with ``seed``, the single-seed layout). ``base_rows``: a seed folder whose base-model
    evaluation rows are reused. ``env``: the shared ``pipeline.LocalEnv``.
    """
    from spark_jax.apps import pipeline
    from spark_jax.core.native_memory import release_compiled_code
    from spark_jax.rollout.config import GenerateConfig
    from spark_jax.rollout.export import summarize_run

    questions = env.questions
    held = set(heldout_ids or ())
    pool = [q for q in questions if q["question_id"] not in held]
    stage1: dict[str, pathlib.Path] = {}
    # Each phase (Stage 1, training, each evaluation mode) compiles its own shape buckets; the
    # previous phase's executables are dropped first, else a multi-seed run in one process holds
    # them all (the memory plan then refused seed 1's first arm on a 24 GB machine).
    release_compiled_code()
    for selection in cfg.selections:
        _stage(f"Stage 1 ({selection}, seed {seed}): {cfg.train_questions} questions x {cfg.rollout_steps} steps")
        with timings.stage(f"stage1_{selection}_s"):
            gen_cfg = GenerateConfig(
                data=env.source, num_questions=cfg.train_questions,
                heldout_per_category=cfg.heldout_per_category if heldout_ids is None else 0,
                seed=seed, steps=cfg.rollout_steps, selection=selection, threshold=cfg.threshold,
                questions_per_shard=cfg.concurrency, concurrency=cfg.concurrency, max_tokens_tool=cfg.max_tokens_tool,
                max_tokens_thought=cfg.max_tokens_thought, max_tokens_answer=cfg.max_tokens_answer,
                max_observation_chars=cfg.max_observation_chars)
            stage1[selection] = out / f"stage1_{selection}"
            pipeline.run_stage1(env, gen_cfg, stage1[selection], questions=pool)

    if heldout_ids is None:
        manifest = pipeline.read_manifest(stage1[cfg.selections[0]])
        heldout = pipeline.split_questions(manifest, questions, "heldout", source=env.source)
    else:
        by_id = {q["question_id"]: q for q in questions}
        heldout = [by_id[i] for i in heldout_ids]
    base = env.base if cfg.evaluate_base else None

    def evaluate(mode: str, runs: dict[str, pathlib.Path], with_base: Any | None) -> list[dict[str, Any]]:
        release_compiled_code()
        with timings.stage(f"eval_{mode}_s"):
            return _evaluate(cfg, mode, with_base, runs, heldout, out / f"eval_{mode}", seed=seed)

    if base is not None:
        for mode in cfg.eval_modes:
            if base_rows is not None:
                _reuse_rows(base_rows / f"eval_{mode}" / "base.jsonl", out / f"eval_{mode}" / "base.jsonl")
            _stage(f"Evaluation ({mode}, {cfg.eval_steps} policy actions): base on {len(heldout)} held-out questions")
            evaluate(mode, {}, base)

    # Each arm is evaluated as soon as it is trained, so an evaluated arm is a finished unit: a run
    # folder copied to a new machine without its checkpoints resumes without retraining any arm but
    # the warm-start source of an arm still to be evaluated, retrained right before that arm (not
    # up front: a stop before the arm would lose the retraining as well).
    runs = {arm_name(arm): out / arm_dir(arm) for arm in cfg.arms}

    def train(arm: str) -> None:
        algo, selection, init = parse_arm(arm)
        release_compiled_code()
        _stage(f"Stage 2: {arm_name(arm)}, seed {seed}, {cfg.train_steps} steps")
        with timings.stage(f"{arm_dir(arm)}_s"):
            source = out / arm_dir(f"{init}{ARM_SEPARATOR}{selection}") if init else None
            pipeline.train_arm(train_config(cfg, algo, stage1[selection], source, seed=seed), runs[arm_name(arm)])

    for arm in cfg.arms:
        _, selection, init = parse_arm(arm)
        name = arm_name(arm)
        if all(_evaluated(out, mode, name) for mode in cfg.eval_modes):
            _stage(f"Stage 2: {name}, seed {seed}: trained and evaluated before, skipped")
            continue
        source = f"{init}{ARM_SEPARATOR}{selection}"
        if init and not _trained(out / arm_dir(source), cfg.train_steps):
            _stage(f"{name} warm-starts from {arm_name(source)}, whose checkpoints are not here: retraining it")
            train(source)
        train(arm)
        for mode in cfg.eval_modes:
            if not _evaluated(out, mode, name):
                _stage(f"Evaluation ({mode}, {cfg.eval_steps} policy actions): {name} on {len(heldout)} "
                       "held-out questions")
                evaluate(mode, {name: runs[name]}, None)

    labels = {selection: summarize_run(d) for selection, d in stage1.items()}
    reports, rows_by_mode = {}, {}
    for mode in cfg.eval_modes:
        rows = evaluate(mode, runs, base)  # every system's saved rows; only a missing one is evaluated
        reports[mode] = _report(cfg, mode, rows, labels, out / f"report_{mode}", len(heldout))
        rows_by_mode[mode] = {}
        for row in rows:
            rows_by_mode[mode].setdefault(row["model"], []).append(row)
    return labels, reports, rows_by_mode


def _evaluated(out: pathlib.Path, mode: str, name: str) -> bool:
    """Whether system ``name`` has its complete rows for ``mode`` in the seed folder ``out``."""
    return (out / f"eval_{mode}" / f"{name}.jsonl").is_file()


def _trained(run_dir: pathlib.Path, steps: int) -> bool:
    """Whether the train run ``run_dir`` holds its final (step ``steps``) checkpoint."""
    return (run_dir / "checkpoints" / str(steps)).is_dir()


def _reuse_rows(src: pathlib.Path, dst: pathlib.Path) -> None:
    """Copies a finished system's rows (the deterministic base model) unless ``dst`` has them."""
    if src.is_file() and not dst.is_file():
        from spark_jax.rollout.store import atomic_write_text

        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dst, src.read_text(encoding="utf-8"))


class _Timings:
    """Seconds per stage, summed over every invocation that worked on it (a stage that was stopped
    or skipped as done adds the time it took this time), kept in ``path`` so the table states the
    whole experiment's wall time. While a stage runs, its time so far is rewritten every
    ``tick_s`` seconds: a process killed outright (SIGKILL, as at the end of a work session) runs
    no ``finally``, and its attempt would otherwise be missing from the stage's time."""

    def __init__(self, path: pathlib.Path, tick_s: float = 60.0):
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0 seconds, got {tick_s}")
        self.path, self.tick_s = path, tick_s
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, key: str, seconds: float) -> None:
        self._set(key, self.seconds.get(key, 0.0) + seconds)

    def _set(self, key: str, seconds: float) -> None:
        from spark_jax.rollout.store import atomic_write_text

        self.seconds[key] = seconds
        atomic_write_text(self.path, json.dumps(self.seconds, indent=2))

    @contextlib.contextmanager
    def stage(self, key: str):
        """Adds the time spent in the block to ``key``, also when it stops with an exception, and
        keeps the file within ``tick_s`` of it while the block runs."""
        from spark_jax.core.periodic import every

        t, before = time.perf_counter(), self.seconds.get(key, 0.0)
        try:
            with every(self.tick_s, lambda: self._set(key, before + time.perf_counter() - t), name=f"timings-{key}"):
                yield
        finally:  # after the ticking thread is joined: no tick can overwrite this
            self._set(key, before + time.perf_counter() - t)

    def totals(self, this_invocation_s: float) -> dict[str, float]:
        return {**self.seconds, "all stages_s": sum(self.seconds.values()), "this invocation_s": this_invocation_s}


EVAL_CHUNK = 32  # questions per saved chunk (two decode batches): a stopped evaluation resumes there


def _evaluate(cfg: ExperimentConfig, mode: str, base: Any | None, runs: dict[str, pathlib.Path],
              heldout: list[dict[str, Any]], out: pathlib.Path, seed: int | None = None) -> list[dict[str, Any]]:
    """The rows of the base model (unless ``base`` is None) and of each run in ``runs``, in that
    order; a run's model is loaded only when some of its rows are missing. ``<system>.partial.jsonl``
    is rewritten after each chunk and becomes ``<system>.jsonl`` when the system is complete; saved
    rows are not evaluated again."""
    from spark_jax.apps import pipeline
    from spark_jax.eval.agent import AgentConfig
    from spark_jax.eval.evaluate import evaluate_systems
    from spark_jax.rollout.store import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    agent_cfg = AgentConfig(max_steps=cfg.eval_steps, mode=mode, max_action_tokens=cfg.max_tokens_tool,
                            max_answer_tokens=cfg.max_tokens_answer, observation_chars=cfg.max_observation_chars,
                            seed=cfg.seed if seed is None else seed, answer_mode=cfg.answer_mode)
    rows: list[dict[str, Any]] = []
    for name, load in pipeline.systems(None if base is None else (lambda: base), runs):
        path, partial = out / f"{name}.jsonl", out / f"{name}.partial.jsonl"
        if path.is_file():
            rows += _read_rows(path)
            continue
        got = _read_rows(partial) if partial.is_file() else []
        done = {r["question_id"] for r in got}
        todo = [q for q in heldout if q["question_id"] not in done]
        if todo:
            model = load()
            if done:
                _stage(f"{name}: {len(done)} of {len(heldout)} questions already evaluated, resuming")
            for start in range(0, len(todo), EVAL_CHUNK):
                chunk = evaluate_systems([(name, lambda: model)], todo[start:start + EVAL_CHUNK], agent_cfg)
                got += chunk
                atomic_write_text(partial, "".join(json.dumps(r) + "\n" for r in got))
        order = {q["question_id"]: i for i, q in enumerate(heldout)}
        got.sort(key=lambda r: order[r["question_id"]])
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in got))
        partial.unlink(missing_ok=True)
        rows += got
    return rows


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    from spark_jax.core.jsonl import iter_jsonl

    return [row for _, row in iter_jsonl(path)]


def _report(cfg: ExperimentConfig, mode: str, rows: list[dict[str, Any]], labels: dict[str, dict],
            out: pathlib.Path, n: int) -> dict[str, Any]:
    from spark_jax.eval.report import write_report

    # each arm against its own training labels; the base model against the first selection's (rarity-first)
    label_counts = {"base": labels[cfg.selections[0]]["usage_counts"]} if cfg.evaluate_base else {}
    label_counts.update({arm_name(arm): labels[parse_arm(arm)[1]]["usage_counts"] for arm in cfg.arms})
    return write_report(out, rows, title=f"SPaRK entropy experiment: {mode} mode", label_counts=label_counts, meta={
        "model": cfg.model, "held-out questions": n, "policy actions before the forced answer": cfg.eval_steps,
        "answer mode": cfg.answer_mode,
        "label entropy (bits)": {s: labels[s]["selection_entropy_bits"] for s in labels},
        "config": json.dumps(dataclasses.asdict(cfg)),
    })


def experiment_table(cfg: ExperimentConfig, labels: dict[str, dict], reports: dict[str, dict],
                     timings: dict[str, float]) -> str:
    """The Markdown the command writes: Stage 1 label entropy, then one row per (mode, system)."""
    from spark_jax.eval.report import summary_table

    lines = ["## Stage 1 training data", "",
             "| selection | questions | judged steps | label entropy (bits) | label counts |", "|---|---|---|---|---|"]
    for selection, s in labels.items():
        counts = ", ".join(f"{a} {c}" for a, c in s["usage_counts"].items())
        lines.append(f"| {selection} | {s['questions']} | {s['judged_steps']} | {s['selection_entropy_bits']:.2f} | "
                     f"{counts} |")
    for mode, summary in reports.items():
        lines += ["", f"## Held-out evaluation, {mode} mode", "", summary_table(summary)]
    lines += ["", "Wall time (summed over resumed invocations): " +
              ", ".join(f"{k.removesuffix('_s')} {v / 60:.1f} min" for k, v in timings.items()), ""]
    return "\n".join(lines)


def seeds_summary(cfg: ExperimentConfig, per_seed: dict[int, tuple[dict, dict, dict]]) -> dict[str, Any]:
    """``seeds.json``: every seed's per-system figures, the means over seeds and the paired rows
    (intervals over seeds and over questions). ``per_seed``: ``{seed: (labels, reports, rows)}``."""
    from spark_jax.eval.paired import claim_pairs, most_diverse_acting, paired_differences, seed_means

    keep = ("questions", "accuracy", "accuracy_ci95", "answered_rate", "accuracy_strict", "tool_entropy_bits",
            "header_entropy_bits", "tool_calls_per_question", "format_error_rate", "action_counts")
    out: dict[str, Any] = {"seeds": list(per_seed), "label_entropy_bits": {
        str(seed): {sel: lab["selection_entropy_bits"] for sel, lab in labels.items()}
        for seed, (labels, _, _) in per_seed.items()}, "modes": {}}
    for mode in cfg.eval_modes:
        systems = {seed: reports[mode] for seed, (_, reports, _) in per_seed.items()}
        rows = {seed: seed_rows[mode] for seed, (_, _, seed_rows) in per_seed.items()}
        names = list(next(iter(systems.values())))
        out["modes"][mode] = {
            "per_seed": {str(seed): {n: {k: s[n].get(k) for k in keep} for n in s} for seed, s in systems.items()},
            "means": seed_means(systems),
            "paired": paired_differences(systems, claim_pairs(names), question_rows=rows),
            "most_diverse_acting": most_diverse_acting(systems, question_rows=rows),
        }
    return out


def seeds_table(cfg: ExperimentConfig, per_seed: dict[int, tuple[dict, dict, dict]], n_heldout: int) -> str:
    """The multi-seed ``experiment.md``: means over seeds and paired differences per mode, then
    every seed's own table (each also in ``seed_<s>/experiment.md``)."""
    from spark_jax.eval.paired import (QUESTION_BOOTSTRAP_RESAMPLES, claim_pairs, means_table, most_diverse_acting,
                                       most_diverse_acting_text, paired_differences, paired_table, seed_means)
    from spark_jax.eval.report import summary_table

    seeds = list(per_seed)
    lines = [f"# SPaRK entropy experiment over {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
             f"Held-out questions: {n_heldout}, the same for every seed (drawn with seed {cfg.seed}). Each seed "
             "draws its own Stage 1 training sample, LoRA initialisation and data order. Intervals: 95% Student t "
             "over seeds (paired across arms for differences; none with one seed). Each difference also has a 95% "
             "paired bootstrap interval over the held-out questions (one resample shared by both arms and every "
             f"seed, {QUESTION_BOOTSTRAP_RESAMPLES} resamples), as the seed interval holds the questions fixed; a "
             "difference is read as shown only when both intervals exclude 0. Pooled tool entropy: entropy "
             "of the tool choices pooled over all questions (SPaRK's claim); per-state header entropy: mean "
             "entropy of the policy's distribution over the ten action headers at each state (score mode).", ""]
    for mode in cfg.eval_modes:
        systems = {seed: reports[mode] for seed, (_, reports, _) in per_seed.items()}
        rows = {seed: seed_rows[mode] for seed, (_, _, seed_rows) in per_seed.items()}
        names = list(next(iter(systems.values())))
        lines += [f"## {mode} mode: mean over seeds", "", f"![{mode} mode over seeds](seeds_{mode}.png)", "",
                  means_table(seed_means(systems)), "",
                  most_diverse_acting_text(most_diverse_acting(systems, question_rows=rows), mode), "",
                  f"## {mode} mode: paired differences", "",
                  paired_table(paired_differences(systems, claim_pairs(names), question_rows=rows)), ""]
    lines += ["## Every seed", ""]
    for seed, (labels, reports, _) in per_seed.items():
        lines += [f"### seed {seed}", ""]
        for sel, lab in labels.items():
            lines.append(f"- Stage 1 {sel}: {lab['questions']} questions, label entropy "
                         f"{lab['selection_entropy_bits']:.2f} bits")
        for mode, summary in reports.items():
            lines += ["", f"{mode} mode:", "", summary_table(summary)]
        lines.append("")
    return "\n".join(lines)
