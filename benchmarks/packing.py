"""Training step records per second on a real Stage 1 run of the embedded model, packed vs
unpacked, both measured in the same run.

With ``packing: true`` a trajectory's K step records are one causal sequence holding K action
spans; with ``packing: false`` every record is its own row and re-reads the shared prefix
(system prompt, question, earlier steps). Two ``Trainer`` objects are built on the same Stage 1 run
and model (LoRA rank 16, the config defaults otherwise: seq and action buckets, algo sft or
ppo), differing only in ``packing`` and the batch: by default the packed side takes one
trajectory per step and the unpacked side K records (K = the run's mean steps per question),
so both train about as many records per step. Each side's grad_accum is the smallest that the
memory plan fits, as ``spark-jax train`` picks it (the unpacked side's K long rows may need
micro-batches where one packed row does not); ``--packed-grad-accum`` / ``--unpacked-grad-accum``
set them. The target metric is records trained divided by the time of the steps that trained them.

Method: the shards present at start are copied to a temporary run directory (a Stage 1 job may
still be writing), so both sides read the same records. N batches are drawn per side up front
(``--batches``, default ``--pairs``); every distinct batch shape is compiled ahead of time
(``Trainer._step.lower(...).compile()``) and run once untimed. Then steps are timed alternately
packed, unpacked, packed, ... (``_timing.interleaved_times``, one untimed call of each side
first), cycling through each side's batches. One timed call is the compiled ``Trainer._step`` on
``Trainer._put_batch(batch)`` until its outputs are ready. Each pair gives a ratio (packed
records/s over unpacked records/s); the JSON line reports their median and [min, max].

Also reported: tokens per record (real and padded to the batch's bucket) of the timed steps and
of the whole run, the padded-token fraction, the shapes (B, T, A, S) of the timed steps (each
pair's too: pairs of different buckets explain most of the spread of the pair ratios), and the
commit.

    PYTHONPATH=. .venv/bin/python benchmarks/packing.py --data RUN_DIR [--pairs 5] [--algo sft|ppo]
    PYTHONPATH=. .venv/bin/python benchmarks/packing.py --small     # tiny random model, synthetic run (tests)
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import pathlib
import random
import shutil
import sys
import tempfile
import time
from statistics import median

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved_times, ratio_spread  # noqa: E402

from spark_jax.core.config_io import load_config  # noqa: E402
from spark_jax.protocol.records import SHARD_GLOB, read_step_records  # noqa: E402
from spark_jax.rl.config import TrainConfig  # noqa: E402
from spark_jax.rl.steps import BATCH_KEYS  # noqa: E402
from spark_jax.rl.trainer import Trainer  # noqa: E402

log = logging.getLogger("packing_benchmark")


def git_commit() -> tuple[str | None, bool | None]:
    """(short commit, whether tracked files differ from it) of the code that runs."""
    from spark_jax.core.provenance import code_version

    v = code_version()
    return (v["commit"][:7] if v["commit"] else None), v["dirty"]


def snapshot_run(src: pathlib.Path, dst: pathlib.Path) -> list[str]:
    """Copies the complete shards of the Stage 1 run ``src`` (and its manifest) to ``dst``."""
    shards = sorted(src.glob(SHARD_GLOB))
    if not shards:
        raise SystemExit(f"{src}: no {SHARD_GLOB}; is this a Stage 1 run directory?")
    (dst / "shards").mkdir(parents=True)
    for s in shards:
        shutil.copyfile(s, dst / "shards" / s.name)
    if (src / "manifest.json").is_file():
        shutil.copyfile(src / "manifest.json", dst / "manifest.json")
    return [s.name for s in shards]


# ---- --small: a tiny random model and synthetic trajectories -------------------------------------

def synthetic_records(questions: int, steps: int, seed: int = 0) -> list[dict]:
    """Whole trajectories of ``steps`` records each, every state extending the previous one by its
    action and an observation (the prefix property packing relies on)."""
    from spark_jax.protocol.actions import format_action

    rng = random.Random(seed)
    tools = ["calculator", "python", "chemistry", "cot", "answer"]
    records = []
    for qid in range(questions):
        msgs = [{"role": "system", "content": "solver : you solve multiple choice questions with tools ."},
                {"role": "user", "content": f"question {qid} : what is the sum of {rng.randint(1, 99)} and "
                                            f"{rng.randint(1, 99)} ? options : A B C D"}]
        for step in range(steps):
            name = tools[(qid + step) % len(tools)]
            action = format_action(name, " ".join(rng.choice(["sum", "plus", "value", "the", "number", "7", "3"])
                                                  for _ in range(rng.randint(3, 12))))
            records.append({
                "question_id": qid, "category": "math", "step": step, "messages": list(msgs),
                "action_text": action, "selected": name, "selection_rule": "synthetic", "candidates": [],
                "tool_input": None, "observation": None, "thought": None, "reward": rng.random(),
                "reward_components": {"quality": 0.0, "diversity": 0.0, "outcome": 0.0},
                "final_answer": None, "correct": None,
            })
            msgs = msgs + [{"role": "assistant", "content": action},
                           {"role": "user", "content": f"observation : {rng.randint(0, 999)}"}]
    return records


def write_small_inputs(root: pathlib.Path) -> tuple[str, pathlib.Path]:
    """(model directory, Stage 1 run directory) of the --small mode."""
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    model_dir = build_tiny_chat_model(root / "tiny_model")
    run = root / "small_stage1"
    (run / "shards").mkdir(parents=True)
    with open(run / "shards" / "shard-00000.jsonl", "w") as f:
        for rec in synthetic_records(questions=8, steps=5):
            f.write(json.dumps(rec) + "\n")
    (run / "manifest.json").write_text(json.dumps({"synthetic": True}))
    return str(model_dir), run


# ---- one side ------------------------------------------------------------------------------------

def make_trainer(args, name: str, packing: bool, batch_size: int, grad_accum: int | None,
                 data: pathlib.Path, out: pathlib.Path) -> Trainer:
    """A Trainer of one side. ``grad_accum`` None: the smallest that the memory plan fits, as
    ``spark-jax train`` picks it (``spark_jax.plan.fit.fit_to_memory``)."""
    overrides = [
        f"algo={args.algo}", f"data={data}", f"model={args.model}", f"packing={str(packing).lower()}",
        f"batch_size={batch_size}", f"grad_accum={grad_accum or 1}", f"seq_buckets={list(args.seq_buckets)}",
        f"action_buckets={list(args.action_buckets)}", f"lora.rank={args.rank}", f"lora.alpha={2.0 * args.rank}",
        "steps=1000000", "checkpoint.every=1000000", "checkpoint.async_save=false", f"seed={args.seed}",
    ]
    cfg = load_config(TrainConfig, None, overrides)
    if grad_accum is None:
        from spark_jax.plan.fit import fit_to_memory

        fit = fit_to_memory(cfg, memory_gb=args.memory_gb, grad_accum_set=False)
        print(f"[{name}] {fit.message}", file=sys.stderr, flush=True)
        cfg = fit.cfg
    return Trainer(cfg, out)


def shape_key(batch: dict[str, np.ndarray]) -> tuple:
    return tuple((k, batch[k].shape) for k in BATCH_KEYS)


def bta_s(batch: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    """(rows B, length T, action positions A, spans S) of a batch."""
    b, t = batch["input_ids"].shape
    return b, t, batch["action_positions"].shape[1], batch["span_mask"].shape[1]


class Side:
    """One trainer, its pre-drawn batches and its per-shape compiled step; calls cycle the batches."""

    def __init__(self, name: str, trainer: Trainer, n_batches: int):
        self.name, self.tr = name, trainer
        self.batches = [next(trainer.data) for _ in range(n_batches)]
        self.compiled: dict[tuple, object] = {}
        self.compile_s = 0.0
        for batch in self.batches:
            key = shape_key(batch)
            if key not in self.compiled:
                t0 = time.perf_counter()
                self.compiled[key] = trainer._step.lower(trainer.state, trainer.frozen, trainer.ref,
                                                         trainer._put_batch(batch)).compile()
                self.compile_s += time.perf_counter() - t0
                print(f"[{name}] compiled (B, T, A, S) = {bta_s(batch)} in {time.perf_counter() - t0:.1f} s",
                      file=sys.stderr, flush=True)
        self.calls = 0
        self.log: list[dict] = []  # per call: the batch's records and tokens
        self.last_metrics = None
        self.warm_s = 0.0

    def _run(self, batch: dict[str, np.ndarray]) -> None:
        tr = self.tr
        step = self.compiled[shape_key(batch)]
        tr.state, metrics = step(tr.state, tr.frozen, tr.ref, tr._put_batch(batch))
        jax.block_until_ready((tr.state, metrics))
        self.last_metrics = metrics

    def warm(self) -> None:
        """Runs one batch of every compiled shape once, except the first batch's shape: the first
        call (``interleaved_times``' untimed one) runs that. So no timed call is a shape's first."""
        done = {shape_key(self.batches[0])}
        for batch in self.batches:
            key = shape_key(batch)
            if key not in done:
                done.add(key)
                t0 = time.perf_counter()
                self._run(batch)
                self.warm_s += time.perf_counter() - t0
                print(f"[{self.name}] warmed (B, T, A, S) = {bta_s(batch)} in {time.perf_counter() - t0:.1f} s",
                      file=sys.stderr, flush=True)

    def __call__(self) -> None:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        self._run(batch)
        self.log.append({"records": float(batch["span_mask"].sum()), "tokens": int(batch["attention_mask"].sum()),
                         "padded_tokens": int(batch["input_ids"].size),
                         "action_tokens": int(batch["action_mask"].sum()),
                         "action_positions": int(batch["action_mask"].size), "shape": bta_s(batch)})


def side_summary(side: Side, times: list[float]) -> dict:
    timed = side.log[1:]  # the first call is interleaved_times' untimed warm-up
    assert len(timed) == len(times)
    records = sum(c["records"] for c in timed)
    tokens = sum(c["tokens"] for c in timed)
    padded = sum(c["padded_tokens"] for c in timed)
    stats = side.tr.data_stats
    shapes = collections.Counter(str(tuple(c["shape"])) for c in timed)
    m = {k: float(v) for k, v in jax.device_get(side.last_metrics).items()}
    return {
        "batch_size": side.tr.cfg.batch_size, "grad_accum": side.tr.cfg.grad_accum,
        "records_per_s": records / sum(times), "median_step_s": median(times),
        "step_times_s": [round(t, 3) for t in times],
        "records_per_step": records / len(timed), "tokens_per_record": tokens / records,
        "padded_tokens_per_record": padded / records, "padded_fraction": 1.0 - tokens / padded,
        "action_positions_per_record": sum(c["action_positions"] for c in timed) / records,
        "action_position_padded_fraction": 1.0 - sum(c["action_tokens"] for c in timed)
        / sum(c["action_positions"] for c in timed),
        "run_rows": stats.rows, "run_tokens_per_record": stats.tokens / stats.kept_records,
        "shapes_BTAS": dict(shapes), "distinct_batches": len(side.batches), "compile_s": side.compile_s,
        "warm_s": side.warm_s,
        "last_loss": m.get("loss"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="a Stage 1 run directory (required unless --small)")
    p.add_argument("--model", default="embedded")
    p.add_argument("--algo", default="sft", choices=("sft", "ppo"))
    p.add_argument("--pairs", type=int, default=5, help="timed (packed, unpacked) pairs")
    p.add_argument("--batches", type=int, default=None, help="distinct batches per side (default: --pairs)")
    p.add_argument("--packed-batch", type=int, default=1, help="trajectories per packed step")
    p.add_argument("--unpacked-batch", type=int, default=None,
                   help="records per unpacked step (default: packed batch x the run's mean steps per question)")
    p.add_argument("--packed-grad-accum", type=int, default=None,
                   help="default: the smallest the memory plan fits, as `spark-jax train` picks it")
    p.add_argument("--unpacked-grad-accum", type=int, default=None, help="likewise")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="memory the plan may use (default: the host's RAM, as `spark-jax train`)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seq-buckets", type=int, nargs="+", default=list(TrainConfig.seq_buckets))
    p.add_argument("--action-buckets", type=int, nargs="+", default=list(TrainConfig.action_buckets))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="tiny random model + synthetic trajectories (seconds)")
    args = p.parse_args(argv)
    if not args.small and not args.data:
        p.error("--data RUN_DIR (a Stage 1 run directory) is required unless --small")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    commit, dirty = git_commit()  # of the code that runs (taken before the long part)

    with tempfile.TemporaryDirectory(prefix="packing_bench_") as tmp:
        tmp = pathlib.Path(tmp)
        if args.small:
            args.model, data_src = write_small_inputs(tmp)
            args.seq_buckets, args.action_buckets, args.rank = [64, 128, 256], [16, 32, 64, 128], 4
            args.pairs = min(args.pairs, 2)
        else:
            data_src = pathlib.Path(args.data)
        data = tmp / "stage1"
        shards = snapshot_run(pathlib.Path(data_src), data)
        records = read_step_records(data)
        trajectories = len({r["question_id"] for r in records})
        steps_per_q = len(records) / trajectories
        if args.unpacked_batch is None:
            args.unpacked_batch = max(1, round(args.packed_batch * steps_per_q))
        n_batches = args.batches or args.pairs
        print(f"Stage 1 run {args.data if not args.small else '(synthetic)'}: {len(shards)} shard(s), "
              f"{trajectories} trajectories, {len(records)} records ({steps_per_q:.2f} steps per question); "
              f"packed batch {args.packed_batch} trajectories vs unpacked batch {args.unpacked_batch} records",
              file=sys.stderr, flush=True)

        sides = {}
        for name, packing, bs, ga in (("packed", True, args.packed_batch, args.packed_grad_accum),
                                      ("unpacked", False, args.unpacked_batch, args.unpacked_grad_accum)):
            t0 = time.perf_counter()
            tr = make_trainer(args, name, packing, bs, ga, data, tmp / f"out_{name}")
            print(f"[{name}] trainer ready in {time.perf_counter() - t0:.1f} s: {tr.data_stats}",
                  file=sys.stderr, flush=True)
            sides[name] = Side(name, tr, n_batches)
        packed, unpacked = sides["packed"], sides["unpacked"]
        packed.warm(), unpacked.warm()
        t0 = time.perf_counter()
        p_times, u_times = interleaved_times(packed, unpacked, args.pairs)
        timing_s = time.perf_counter() - t0

        p_sum, u_sum = side_summary(packed, p_times), side_summary(unpacked, u_times)
        # seconds per record of each call: the pair ratio is packed records/s over unpacked records/s
        p_spr = [t / c["records"] for t, c in zip(p_times, packed.log[1:])]
        u_spr = [t / c["records"] for t, c in zip(u_times, unpacked.log[1:])]
        ratios = [u / q for q, u in zip(p_spr, u_spr)]
        for s in sides.values():
            s.tr.close()

    print(f"\n{'':28s}{'packed':>14s}{'unpacked':>14s}")
    rows = [("rows per step", "batch_size", "{:.0f}"), ("grad_accum", "grad_accum", "{:.0f}"),
            ("records per step", "records_per_step", "{:.2f}"),
            ("median step time (s)", "median_step_s", "{:.2f}"), ("records/s", "records_per_s", "{:.3f}"),
            ("tokens per record", "tokens_per_record", "{:.1f}"),
            ("padded tokens per record", "padded_tokens_per_record", "{:.1f}"),
            ("padded-token fraction", "padded_fraction", "{:.3f}"),
            ("action positions/record", "action_positions_per_record", "{:.1f}"),
            ("run tokens per record", "run_tokens_per_record", "{:.1f}"),
            ("compile time (s)", "compile_s", "{:.1f}")]
    for label, key, fmt in rows:
        print(f"{label:28s}{fmt.format(p_sum[key]):>14s}{fmt.format(u_sum[key]):>14s}")
    print(f"{'shapes (B, T, A, S)':28s}  packed {p_sum['shapes_BTAS']}  unpacked {u_sum['shapes_BTAS']}")
    print(f"ratio packed/unpacked records/s: median {median(ratios):.3f}, pairs "
          f"{[round(r, 3) for r in ratios]} (packed T, unpacked T: "
          f"{[(q['shape'][1], u['shape'][1]) for q, u in zip(packed.log[1:], unpacked.log[1:])]})\n")
    print(json.dumps({
        "benchmark": "packing_train_step_records", "algo": args.algo, "model": args.model if not args.small
        else "tiny-random", "small": args.small, "device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
        "data": str(args.data) if not args.small else "synthetic", "shards": shards, "trajectories": trajectories,
        "records": len(records), "lora_rank": args.rank, "seq_buckets": args.seq_buckets,
        "action_buckets": args.action_buckets, "pairs": args.pairs,
        "records_per_s_packed": p_sum["records_per_s"], "records_per_s_unpacked": u_sum["records_per_s"],
        "ratio_packed_over_unpacked": median(ratios), "ratio_min_max": ratio_spread(p_spr, u_spr),
        "pair_ratios": [round(r, 4) for r in ratios],
        "pair_shapes_BTAS": [[list(q["shape"]), list(u["shape"])]
                             for q, u in zip(packed.log[1:], unpacked.log[1:])],
        "tokens_per_record_packed": p_sum["tokens_per_record"],
        "tokens_per_record_unpacked": u_sum["tokens_per_record"],
        "padded_tokens_per_record_packed": p_sum["padded_tokens_per_record"],
        "padded_tokens_per_record_unpacked": u_sum["padded_tokens_per_record"],
        "padded_fraction_packed": p_sum["padded_fraction"], "padded_fraction_unpacked": u_sum["padded_fraction"],
        "shapes_packed": p_sum["shapes_BTAS"], "shapes_unpacked": u_sum["shapes_BTAS"],
        "packed": p_sum, "unpacked": u_sum, "timing_s": timing_s, "git_commit": commit, "git_dirty": dirty,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
