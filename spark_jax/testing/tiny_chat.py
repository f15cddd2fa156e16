"""A tiny random Llama with a word-level ChatML tokenizer, exported as an HF directory.

``load_pretrained(build_tiny_chat_model(tmp))`` gives a PretrainedModel with a real tokenizer
and chat template in well under a second, so judge/generator code paths that need
``encode_chat`` run in tests without the 135M model. Its outputs are noise, by design.
"""

from __future__ import annotations

import pathlib

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ("<pad>", "<s>", "<|im_end|>", "<|im_start|>", "<unk>")  # ids 0..4, matching tiny()
WORDS = (
    "system user assistant action input observation question options answer score step steps "
    "Score the a an of to is in on and or for with from by as at be it this that what which how why "
    "useful next now tool tools calculator python sympy units chemistry constants finance search cot "
    "scale integer single nothing else most proposed possible taken so far yet no reply json only "
    "solver solving problem strategies evaluator expert multiple choice reasoning plain words math "
    "physics energy mass force value number sum product times plus minus equals true false yes "
    "A B C D E F G H I J . , : ; ( ) ? ! - + * / = ' \" [ ] { } _ %"
).split()


def tiny_chat_tokenizer(*, vocab_size: int = 256, split_digits: bool = True):
    """A PreTrainedTokenizerFast: WordLevel over :data:`WORDS` with ChatML special tokens.

    ``split_digits=True`` writes "10" as "1" "0" (like SmolLM2); False makes "10" one token
    (like Llama 3). The vocabulary is padded with filler words to exactly ``vocab_size``.
    """
    # deferred: tokenizers and transformers are slow to import; only building the tokenizer needs them
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = list(SPECIALS) + [str(d) for d in range(10)] + ([] if split_digits else ["10"]) + WORDS
    tokens = list(dict.fromkeys(tokens))
    if len(tokens) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(tokens)} base tokens")
    tokens += [f"w{i}" for i in range(vocab_size - len(tokens))]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pre = [pre_tokenizers.Whitespace()]
    if split_digits:
        pre.append(pre_tokenizers.Digits(individual_digits=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tk.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"], chat_template=CHATML_TEMPLATE,
    )


def build_tiny_chat_model(out_dir: str | pathlib.Path, *, seed: int = 0, split_digits: bool = True) -> pathlib.Path:
    """Writes a random ``tiny()`` Llama + the tiny tokenizer to ``out_dir``; returns the path."""
    # Deferred: tests that only need the tokenizer must not pay for importing jax and flax.
    from flax import nnx

    from spark_jax.model.checkpoint_hf import export_hf
    from spark_jax.model.config import tiny
    from spark_jax.model.llama import Llama

    cfg = tiny()
    tok = tiny_chat_tokenizer(vocab_size=cfg.vocab_size, split_digits=split_digits)
    return export_hf(Llama(cfg, rngs=nnx.Rngs(seed)), out_dir, tokenizer=tok)
