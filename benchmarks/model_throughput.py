"""Prefill and greedy-decode throughput of spark-jax against PyTorch transformers, same run.

Both sides use the same float32 SmolLM2-135M-Instruct weights (the embedded model; PyTorch
reads the safetensors copy spark-jax makes of the GGUF, since the GGUF-loaded torch object is
~4x slower). Prefill: batch x length random tokens, full logits. Decode: batch prompts of
`--prompt-len` tokens, exactly `--new-tokens` greedy tokens (EOS ignored on both sides).
The two sides are timed alternately, call by call, and each figure is the median over the
repeats. Prints one JSON line with tokens/s for each side, the ratios (spark-jax / PyTorch)
and their spread over the back-to-back pairs.

    python benchmarks/model_throughput.py [--model embedded] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import numpy as np
import torch
from _timing import interleaved_times, ratio_spread  # this folder (run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prefill-len", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    args = ap.parse_args()

    from transformers import LlamaForCausalLM

    from spark_jax.model import checkpoint_hf
    from spark_jax.model.pretrained import load_pretrained, resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    ours = load_pretrained(args.model)
    path = resolve_model_path(args.model)
    hf_dir = checkpoint_hf.gguf_cache_dir(path) if path.suffix == ".gguf" else path
    ref = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()

    rng = np.random.default_rng(0)
    vocab = ours.config.vocab_size
    b, t = args.batch, args.prefill_len
    ids = rng.integers(100, vocab, (b, t)).astype(np.int32)

    ids_dev = jax.numpy.asarray(ids)
    mask_dev = jax.numpy.ones_like(ids_dev)
    ids_t = torch.as_tensor(ids, dtype=torch.long)

    def torch_prefill_once():
        with torch.inference_mode():
            ref(ids_t).logits

    # The executables behind ``ours.logits``, without its host copy of the [B, T, V] logits.
    prefill_times = interleaved_times(lambda: ours.logits_device(ids_dev, mask_dev).block_until_ready(),
                                       torch_prefill_once, args.repeats)
    jax_prefill, torch_prefill = map(statistics.median, prefill_times)

    prompts = [list(map(int, rng.integers(100, vocab, args.prompt_len))) for _ in range(b)]
    n = args.new_tokens
    prompt_t = torch.as_tensor(prompts, dtype=torch.long)

    def torch_generate_once():
        with torch.inference_mode():
            out = ref.generate(
                prompt_t, attention_mask=torch.ones_like(prompt_t), max_new_tokens=n,
                min_new_tokens=n, do_sample=False, pad_token_id=0,
            )
        assert out.shape[1] == args.prompt_len + n

    decode_times = interleaved_times(lambda: ours.generate(prompts, n, eos_token_ids=()), torch_generate_once,
                                      args.repeats)
    jax_decode, torch_decode = map(statistics.median, decode_times)
    prefill_tokens, decode_tokens = b * t, b * n
    print(json.dumps({
        "bench": "model_throughput",
        "model": str(args.model),
        "device": jax.devices()[0].device_kind,
        "prefill_shape": [b, t],
        "decode_shape": [b, args.prompt_len, n],
        "jax_prefill_tok_s": round(prefill_tokens / jax_prefill, 1),
        "torch_prefill_tok_s": round(prefill_tokens / torch_prefill, 1),
        "prefill_ratio": round(torch_prefill / jax_prefill, 3),
        "prefill_ratio_min_max": ratio_spread(*prefill_times),
        "jax_decode_tok_s": round(decode_tokens / jax_decode, 1),
        "torch_generate_tok_s": round(decode_tokens / torch_decode, 1),
        "decode_ratio": round(torch_decode / jax_decode, 3),
        "decode_ratio_min_max": ratio_spread(*decode_times),
        "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
