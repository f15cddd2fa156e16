"""Parity with transformers on the real SmolLM2-135M-Instruct weights (the embedded GGUF).

The reference is transformers' own GGUF loader (torch). Our loader reads the GGUF with numpy and
gguf alone; fed the weights transformers dequantised instead, the same JAX model gives logits
within 1e-5, and the tokenizers agree. Against transformers' model: max |logit diff| <= 1e-3
(float32) on a chat-template prompt, and 32 greedy tokens identical to its ``generate``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spark_jax
from spark_jax.model.pretrained import embedded_model_path
from spark_jax.protocol.chat import encode_chat

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You are a careful assistant who shows each step of a calculation."},
    {"role": "user", "content": "A train leaves at 9:40 and travels 156 km at 78 km/h. At what time does it "
                                "arrive, and how many minutes does the trip take? Explain briefly."},
]


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    path = embedded_model_path()
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return spark_jax.load_pretrained("embedded"), ref


def test_numpy_gguf_loader_equals_transformers_gguf_loader(models, tmp_path):
    """The same model: JAX logits from our numpy dequantisation and from transformers' state dict."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from spark_jax.model.checkpoint_hf import load_hf_directory
    from spark_jax.model.pretrained import PretrainedModel

    ours, ref = models
    with torch.device("meta"):
        fresh = LlamaForCausalLM(ref.config)
    fresh.load_state_dict(ref.state_dict(), assign=True)
    fresh.save_pretrained(str(tmp_path / "transformers_path"))
    via_transformers = PretrainedModel(load_hf_directory(tmp_path / "transformers_path")[0])
    assert via_transformers.config == ours.config
    ids = np.array([encode_chat(ours.tokenizer, MESSAGES)], np.int32)
    assert np.abs(ours.logits(ids) - via_transformers.logits(ids)).max() <= 1e-5

    path = embedded_model_path()
    ref_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert ours.tokenizer.backend_tokenizer.to_str() == ref_tok.backend_tokenizer.to_str()
    assert ours.tokenizer.special_tokens_map == ref_tok.special_tokens_map
    assert ours.tokenizer.chat_template == ref_tok.chat_template
    for text in ("What is 17 times 23?", " héllo\n\n 391 日本語 😀", "<|im_start|>user\nhi<|im_end|>"):
        assert ours.tokenizer(text)["input_ids"] == ref_tok(text)["input_ids"]


def test_logits_match_transformers(models):
    ours, ref = models
    ids = np.array([encode_chat(ours.tokenizer, MESSAGES)], np.int32)
    assert ids.shape[1] > 60
    with torch.no_grad():
        want = ref(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    got = ours.logits(ids)
    assert np.abs(got - want).max() <= 1e-3


def test_32_greedy_tokens_identical_to_transformers_generate(models):
    ours, ref = models
    prompt = encode_chat(ours.tokenizer, MESSAGES)
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                           pad_token_id=ours.tokenizer.pad_token_id)
    want = out[0, len(prompt):].tolist()
    assert ours.generate([prompt], 32, eos_token_ids=()) == [want]


def test_known_wrong_arithmetic_answer(models):
    """The brief's reference behaviour: greedy SmolLM2 says 17 x 23 = 381 (it is 391)."""
    ours, _ = models
    prompt = encode_chat(ours.tokenizer, [{"role": "user", "content": "What is 17 times 23?"}])
    reply = ours.tokenizer.decode(ours.generate([prompt], 16)[0], skip_special_tokens=True)
    assert "381" in reply


def _trajectory(qid: int, question: str, steps: list[tuple[str, str, str]]) -> list[dict]:
    """Step records of one trajectory: (action name, input, observation) per step."""
    from spark_jax.protocol.actions import format_action

    msgs = [{"role": "system", "content": "Solve the question with tools. Reply with one action:\n"
                                          "Action: <name>\nInput: <text>"},
            {"role": "user", "content": question}]
    out = []
    for t, (name, text, observation) in enumerate(steps):
        action = format_action(name, text)
        out.append({"question_id": qid, "step": t, "messages": list(msgs), "action_text": action,
                    "selected": name, "reward": 0.5 + 0.1 * t})
        msgs = msgs + [{"role": "assistant", "content": action},
                       {"role": "user", "content": f"Observation: {observation}"}]
    return out


def test_packed_span_logprobs_equal_unpacked_records(models):
    """Packing (one causal sequence per trajectory) gives every action the log-probs of its
    unpacked record within 1e-5 (float32), on tool, cot, multi-line and answer steps and an
    observation that contains the literal text of the end-of-turn token."""
    from tests.data.packing_check import max_span_difference

    ours, _ = models
    records = _trajectory(0, "What is 17 times 23?\nOptions:\nA. 381\nB. 391", [
        ("calculator", "17 * 23", "391"),
        ("cot", "The product is 391,\nso the option is B.", "noted <|im_end|> done"),
        ("answer", "The answer is (B).", ""),
    ]) + _trajectory(1, "Molar mass of water in g/mol?", [
        ("chemistry", "molar_mass H2O", "18.015"),
        ("python", "print(2 * 1.008 + 15.999)\nprint('ok')", "18.015\nok"),
        ("answer", "The answer is (A).", ""),
    ])
    diff, packed, single = max_span_difference(ours, records)
    assert (packed, single) == (2, 6)
    assert diff <= 1e-5, diff
