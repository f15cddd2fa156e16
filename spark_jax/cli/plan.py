"""``spark-jax plan``: per-device memory of a training config, and a verdict against the device."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="per-device memory of a training config; refuses configs that cannot fit",
        description="Estimates per-device memory (weights, adapters, AdamW state, gradients, activations "
                    "per sequence bucket with and without remat, KV cache) and tokens per step for a "
                    "`spark-jax train` config, and checks it against the device's memory. Exit 0: fits; "
                    "exit 1: does not fit (the message names what to change).")
    p.add_argument("--config", required=True, help="YAML TrainConfig (e.g. configs/llama3_1_8b_v5e_8.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. remat=true")
    p.add_argument("--arch", help="architecture: a preset (llama3_1_8b, llama3_2_1b, smollm2_135m, tiny) or an HF "
                                  "directory / config.json; default: from the config's model")
    p.add_argument("--device", help="cpu, h100, h200, v4, v5e, v5p, v6e (default: hardware.device, else the "
                                    "device jax sees)")
    p.add_argument("--device-memory-gb", type=float, help="memory per device in GB (overrides the table)")
    p.add_argument("--measure", action="store_true",
                   help="also compile the train step here and print XLA's memory analysis (needs the mesh's devices)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    import yaml

    from spark_jax.core.config_io import load_config, to_dict
    from spark_jax.plan.advice import format_plan, resolve_arch, resolve_device, suggestions
    from spark_jax.plan.memory import USABLE_FRACTION, plan_memory
    from spark_jax.rl.config import TrainConfig

    cfg = load_config(TrainConfig, args.config, list(args.overrides))
    arch = resolve_arch(cfg.model, args.arch)
    device, memory_gb = resolve_device(cfg, args.device, args.device_memory_gb)
    plan = plan_memory(cfg, arch, device)
    budget = memory_gb * 1e9 * USABLE_FRACTION
    fits = plan.peak <= budget
    measured = None
    if args.measure:
        from spark_jax.plan.measure import compiled_step_memory

        measured = compiled_step_memory(cfg, arch, max(cfg.seq_buckets))
    advice = [] if fits else suggestions(cfg, arch, budget, device)
    if args.json:
        out = {**{k: v for k, v in dataclasses.asdict(plan).items()}, "device": device, "device_memory_gb": memory_gb,
               "usable_gb": budget / 1e9, "peak_gb": plan.peak / 1e9, "fits": fits, "suggestions": advice,
               "config": to_dict(cfg)}
        if measured:
            out["xla_memory_analysis"] = measured
        print(json.dumps(out))
    else:
        # The config as the run will see it: defaults, then base_config files, the file, overrides.
        print("config (merged):\n  " + yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None).rstrip().replace("\n", "\n  "))
        print()
        print(format_plan(plan, cfg, arch, device, memory_gb))
        if measured:
            print("XLA memory analysis of the compiled step (longest bucket): "
                  + ", ".join(f"{k} {v / 1e9:.3f} GB" for k, v in measured.items()))
    if fits:
        if not args.json:
            print(f"verdict: fits ({plan.peak / budget:.0%} of usable memory)")
        return 0
    msg = (f"verdict: does NOT fit: needs {plan.peak / 1e9:.2f} GB per device, {budget / 1e9:.2f} GB usable on "
           f"{device}. Change: " + ("; or ".join(advice) if advice else "a larger device or more devices"))
    print(msg, file=sys.stderr)
    return 1


