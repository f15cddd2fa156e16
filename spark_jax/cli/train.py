"""``spark-jax train`` and ``spark-jax export-model``."""

from __future__ import annotations

import argparse
import json
import sys

from spark_jax.core.config_io import load_config, read_yaml_config


def register(sub) -> None:
    p = sub.add_parser("train", help="train the policy offline on Stage 1 records (PPO or SFT)",
                       description="Offline step-wise PPO (or the SFT baseline) with LoRA/QLoRA or full "
                                   "fine-tuning. Resumes from the latest checkpoint in --out by itself.")
    p.add_argument("--algo", choices=("ppo", "sft"), help="training algorithm (default: the config's, ppo)")
    p.add_argument("--data", help="Stage 1 run directory (manifest.json + shards/)")
    p.add_argument("--model", help="base model: HF directory, .gguf file or 'embedded'")
    p.add_argument("--out", required=True, help="run directory: config, checkpoints, metrics.jsonl, tb/")
    p.add_argument("--steps", type=int, help="training steps (batches)")
    p.add_argument("--lora-rank", type=int, help="LoRA rank; 0 = full fine-tuning")
    p.add_argument("--qlora", action="store_true", help="NF4 base weights (QLoRA)")
    p.add_argument("--init-from", metavar="RUN",
                   help="warm start from another train run's adapters (its latest checkpoint, or init_step=N); "
                        "the KL reference is then that starting policy (reference=base for the base model)")
    p.add_argument("--config", help="YAML TrainConfig (configs/tiny.yaml, configs/smollm2_135m.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. ppo.kl_coef=0.1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plan", action="store_true",
                   help="skip the memory plan (by default grad_accum is raised when the planned peak does not "
                        "fit the device, and a config that cannot fit is refused before compiling)")
    p.set_defaults(func=run_train)

    e = sub.add_parser("export-model", help="export a training run: merged HF weights and/or a PEFT adapter")
    e.add_argument("run_dir", metavar="DIR", help="a `spark-jax train` output directory")
    e.add_argument("--hf", required=True, metavar="OUT", help="write merged safetensors + config + tokenizer here")
    e.add_argument("--peft", metavar="OUT", help="also write the LoRA adapter in PEFT's format here")
    e.set_defaults(func=run_export)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, key in (("algo", "algo"), ("data", "data"), ("model", "model"), ("steps", "steps"),
                      ("init_from", "init_from")):
        v = getattr(args, flag)
        if v is not None:
            out.append(f"{key}={json.dumps(v) if isinstance(v, str) else v}")
    if args.lora_rank is not None:
        out.append(f"lora.rank={args.lora_rank}")
        out.append(f"full_finetune={'true' if args.lora_rank == 0 else 'false'}")
    if args.qlora:
        out.append("lora.qlora=true")
    return out


def run_train(args: argparse.Namespace) -> int:
    from spark_jax.core.distributed import is_main_process, maybe_initialize
    from spark_jax.rl.config import TrainConfig

    cfg = load_config(TrainConfig, args.config, flag_overrides(args) + list(args.overrides))
    if not cfg.data:
        raise ValueError("no Stage 1 data: give --data RUN_DIR (or data: in the config)")
    # Before any device is touched: with JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID
    # (or SPARK_JAX_DISTRIBUTED=1 on a TPU slice) every process joins one global mesh.
    maybe_initialize()
    if not args.no_plan:
        cfg = plan_to_fit(cfg, args)
        if cfg is None:
            return 1
    from spark_jax.rl.trainer import Trainer

    trainer = Trainer(cfg, args.out)
    try:
        rows = trainer.run(progress=not args.no_progress)
    finally:
        trainer.close()
    last = rows[-1] if rows else {"step": trainer.step}
    if not is_main_process():
        return 0
    print(json.dumps({"out": str(args.out), "step": trainer.step,
                      **{k: last.get(k) for k in ("loss", "kl", "clip_frac", "entropy")}}))
    return 0


def _grad_accum_set(args: argparse.Namespace) -> bool:
    """Whether the user chose grad_accum (an override or a key of the --config file)."""
    if any(o.split("=", 1)[0].strip() == "grad_accum" for o in args.overrides):
        return True
    if args.config:
        try:
            return "grad_accum" in read_yaml_config(args.config)  # with its base_config files
        except (OSError, ValueError):  # the wording of the message is all that depends on it
            return False
    return False


def plan_to_fit(cfg, args: argparse.Namespace):
    """``cfg`` with grad_accum raised as far as the memory plan needs (one line on stderr), or
    None after printing the planner's advice when nothing fits. Without an architecture or a
    device size to plan with, warns and returns ``cfg`` unchanged."""
    from spark_jax.core.distributed import is_main_process
    from spark_jax.plan.advice import resolve_arch
    from spark_jax.plan.fit import PlanError, fit_to_memory

    main = is_main_process()

    def warn(why: str):
        if main:
            print(f"spark-jax train: warning: no memory plan ({why}); training as configured", file=sys.stderr)
        return cfg

    try:  # config.json or a preset only: no weights are read
        arch = resolve_arch(cfg.model, None)
    except (ValueError, KeyError, TypeError, OSError):
        return warn(f"cannot tell the architecture of model {cfg.model!r}")
    try:
        fit = fit_to_memory(cfg, arch=arch, grad_accum_set=_grad_accum_set(args))
    except PlanError as e:
        if main:
            print(f"spark-jax train: {e} (or pass --no-plan to train anyway)", file=sys.stderr)
        return None
    except ValueError as e:  # e.g. a device whose memory is unknown
        return warn(str(e).splitlines()[0])
    if main:
        print(fit.message, file=sys.stderr)
    return fit.cfg


def run_export(args: argparse.Namespace) -> int:
    from spark_jax.rl.export import export_run

    print(json.dumps(export_run(args.run_dir, args.hf, args.peft)))
    return 0
