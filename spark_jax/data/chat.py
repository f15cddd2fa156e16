"""Chat templates: the model's own template (Llama 3's, SmolLM2's ChatML) to token ids."""

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
