"""Shared fixtures: a random tiny Llama-3.1-style checkpoint written by transformers itself, a tiny
ChatML tokenizer + random tiny Llama on disk, and synthetic Stage 1 runs."""

from __future__ import annotations

import json
import os
import pathlib
import random

# Tests must never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from spark_jax.core.jax_setup import enable_compilation_cache  # noqa: E402

# Shared by xdist workers and later runs: each shape bucket compiles once per machine.
enable_compilation_cache()


def make_hf_llama(path, seed: int = 0, init_std: float = 0.1, **config_overrides):
    """Saves a random transformers LlamaForCausalLM (tiny preset shapes) to ``path``; returns it."""
    import torch
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    from spark_jax.model.config import tiny

    hf = tiny(**config_overrides).to_hf()
    for key in ("architectures", "model_type", "torch_dtype"):
        hf.pop(key)
    torch.manual_seed(seed)
    # A wider init than HF's 0.02 makes logits depend visibly on position, so rope bugs show.
    model = LlamaForCausalLM(HFLlamaConfig(initializer_range=init_std, **hf)).eval()
    model.save_pretrained(str(path))
    return model


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """(directory, torch model) of a tiny random Llama with GQA, untied embeddings and llama3
    rope scaling whose original context (64) is far below the 500-token test sequences."""
    path = tmp_path_factory.mktemp("tiny_hf")
    return path, make_hf_llama(path)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The following are multiple choice questions about physics. Think step by step.",
    "Action: calculator\nInput: 17 * 23", "Action: cot\nInput: First compute the sum.",
    "Action: answer\nInput: The answer is (C).", "Observation: 391", "What is the molar mass of water?",
    "Options: A. 18 B. 20 C. 16 D. 22", "Action: chemistry\nInput: molar_mass H2O",
    "Action: python\nInput: print(2 ** 10)", "Question: a ball falls from 20 m; how long?",
]


def build_tokenizer():
    """A byte-level BPE tokenizer (any text encodes) with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def chat_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, chat_tokenizer):
    """An HF directory (config.json, model.safetensors, tokenizer) of a random tiny Llama."""
    import jax
    from flax import nnx

    from spark_jax.model.checkpoint_hf import export_hf
    from spark_jax.model.config import tiny
    from spark_jax.model.llama import Llama

    tok = chat_tokenizer
    cfg = tiny().replace(vocab_size=len(tok), eos_token_ids=(tok.convert_tokens_to_ids("<|im_end|>"),),
               pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = Llama(cfg, rngs=nnx.Rngs(0))
    out = tmp_path_factory.mktemp("tiny_model")
    export_hf(model, out, tokenizer=tok)
    del jax
    return out


def write_run_dir(run_dir: pathlib.Path, records: list[dict], shard_size: int = 16) -> pathlib.Path:
    """A Stage 1 run directory in the layout of spark_jax.protocol.records."""
    (run_dir / "shards").mkdir(parents=True, exist_ok=True)
    for i in range(0, len(records), shard_size):
        with open(run_dir / "shards" / f"shard-{i // shard_size:05d}.jsonl", "w") as f:
            for rec in records[i:i + shard_size]:
                f.write(json.dumps(rec) + "\n")
    (run_dir / "manifest.json").write_text(json.dumps({"records": len(records), "synthetic": True}))
    return run_dir


def synthetic_records(n: int, seed: int = 0, steps: int = 3) -> list[dict]:
    """``n`` step records of whole trajectories (``steps`` per question, the last question
    possibly shorter): each state extends the previous one by its action and an observation,
    and the reward depends on the chosen tool (so there is something to learn)."""
    from spark_jax.protocol.actions import format_action

    rng = random.Random(seed)
    tools = ["calculator", "python", "chemistry", "cot", "answer"]
    reward_of = {"calculator": 0.2, "python": 0.9, "chemistry": 0.6, "cot": 0.1, "answer": 0.5}
    records = []
    i = 0
    while len(records) < n:
        qid = len(records) // steps
        msgs = [{"role": "system", "content": "You solve questions with tools."},
                {"role": "user", "content": f"Question {qid}: {rng.choice(_CORPUS)}"}]
        for step in range(min(steps, n - len(records))):
            name = tools[i % len(tools)]
            i += 1
            action = format_action(name, f"{rng.randint(1, 50)} * {rng.randint(1, 50)}")
            records.append({
                "question_id": qid, "category": "physics", "step": step, "messages": list(msgs),
                "action_text": action,
                "selected": name, "selection_rule": "rarity_first", "candidates": [],
                "tool_input": None, "observation": None, "thought": None,
                "reward": reward_of[name] + 0.05 * rng.random(),
                "reward_components": {"quality": 0.0, "diversity": 0.0, "outcome": 0.0},
                "final_answer": None, "correct": None,
            })
            msgs = msgs + [{"role": "assistant", "content": action},
                           {"role": "user", "content": f"Observation: {rng.randint(0, 99)}"}]
    return records


@pytest.fixture(scope="session")
def stage1_run(tmp_path_factory):
    return write_run_dir(tmp_path_factory.mktemp("stage1"), synthetic_records(40))
