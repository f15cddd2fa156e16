"""Chat templates: the model's own template (Llama 3's, SmolLM2's ChatML) to token ids, and the
tokens that end a turn."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def encode_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; give a model directory with one")
    text = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=False
    )
    # The template already holds BOS and the special tokens: do not add them twice.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# The end-of-turn markers of the chat templates we support (ChatML, Llama 3).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")


def end_of_turn_ids(model: Any) -> tuple[int, ...]:
    """The config's EOS ids plus the tokenizer's EOS and end-of-turn tokens that exist."""
    ids = set(int(i) for i in (model.config.eos_token_ids or ()))
    tok = model.tokenizer
    if getattr(tok, "eos_token_id", None) is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    ids.update(int(vocab[t]) for t in END_OF_TURN_TOKENS if t in vocab)
    return tuple(sorted(i for i in ids if 0 <= i < model.config.vocab_size))
