"""XLA:CPU dot backend for the train step: the default (YNNPACK fusions) against Eigen dots.

Builds the real ``Trainer`` on a Stage 1 run, takes one batch, and compiles the same train step
twice: with the default compiler options and with ``xla_cpu_experimental_ynn_fusion_type=""``
(dots through Eigen, which runs each product on all cores). Prints the compile seconds of each
and the step seconds of each, timed alternately, with their ratio. CPU only.

    PYTHONPATH=. python benchmarks/train_step_dots.py --data runs/demo/stage1 [--algo sft] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from statistics import median

import jax
from _timing import interleaved_times, ratio_spread  # this folder (run as a script)

from spark_jax.core.provenance import code_version
from spark_jax.rl.adapters import LoraConfig
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.steps import make_train_step
from spark_jax.rl.trainer import Trainer

EIGEN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a Stage 1 run directory")
    p.add_argument("--algo", default="sft", choices=["sft", "ppo"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-buckets", default="768,1024")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if jax.default_backend() != "cpu":
        raise SystemExit(f"this benchmark compares XLA:CPU dot backends; the backend is {jax.default_backend()}")
    cfg = dataclasses.replace(
        TrainConfig(), algo=args.algo, data=args.data, model="embedded", steps=1, batch_size=args.batch,
        grad_accum=1, seq_buckets=tuple(int(x) for x in args.seq_buckets.split(",")), action_buckets=(192,),
        lora=LoraConfig(rank=8, alpha=16.0))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp)
        batch = trainer._put_batch(next(trainer.data))
        step_fn = make_train_step(cfg, trainer.policy_graphdef, trainer.critic_graphdef, trainer.optimizer,
                                  trainer.schedule)
        operands = (trainer.state, trainer.frozen, trainer.ref, batch)
        compiled, compile_s = {}, {}
        for name, options in (("eigen", EIGEN), ("default", None)):
            t = time.perf_counter()
            compiled[name] = jax.jit(step_fn, compiler_options=options).lower(*operands).compile()
            compile_s[name] = time.perf_counter() - t

        def run(name):
            return lambda: jax.block_until_ready(compiled[name](*operands))

        eigen_t, default_t = interleaved_times(run("eigen"), run("default"), args.repeats)
        trainer.close()
    commit = (code_version()["commit"] or "")[:7]
    print(json.dumps({
        "benchmark": "train_step_cpu_dots", "algo": args.algo, "batch_shape": list(batch["input_ids"].shape),
        "compile_s": {k: round(v, 1) for k, v in compile_s.items()},
        "step_s": {"eigen": round(median(eigen_t), 2), "default": round(median(default_t), 2)},
        "speedup_eigen_over_default": round(median(default_t) / median(eigen_t), 3),
        "pair_speedups": ratio_spread(eigen_t, default_t), "repeats": args.repeats, "commit": commit,
    }))


if __name__ == "__main__":
    main()
