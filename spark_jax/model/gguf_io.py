"""GGUF files read with numpy and the ``gguf`` package alone: the HF config, the tensors
(dequantised, in transformers' layout) and the tokenizer. No torch.

llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` (rotary pairs interleaved);
``GGUFSource`` undoes it, as transformers' GGUF loader does, so the tensors equal the HF ones.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import numpy as np

from spark_jax.model.safetensors_io import CheckpointError

# llama.cpp tensor name -> transformers name ("{}" is the layer number).
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# tokenizer.ggml.pre values whose vocabulary was learned with Llama 3's split regex; every other
# byte-level vocabulary of a Llama GGUF (gpt2, smollm, ...) uses GPT-2's, as transformers does.
_LLAMA3_PRE = {"llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"}
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTROL = 3  # llama.cpp token type of special tokens such as <|im_start|>


def open_gguf(path: str | pathlib.Path):
    """A ``gguf.GGUFReader`` (memory-mapped) for ``path``."""
    try:
        # deferred: loading a checkpoint is the only user of gguf
        import gguf
    except ImportError:
        raise CheckpointError(f"reading {path} needs the gguf package: pip install gguf") from None
    return gguf.GGUFReader(str(path))


def field(reader, key: str, default: Any = KeyError) -> Any:
    """A metadata value: str, int, float or bool, or a list of them for an array field."""
    f = reader.fields.get(key)
    if f is None:
        if default is KeyError:
            raise CheckpointError(f"{reader.data.filename}: GGUF metadata lacks {key!r}")
        return default
    # deferred: see open_gguf
    from gguf import GGUFValueType

    is_str = f.types[-1] == GGUFValueType.STRING
    values = [bytes(f.parts[i]).decode("utf-8") if is_str else f.parts[i].tolist()[0] for i in f.data]
    return values if f.types[0] == GGUFValueType.ARRAY else values[0]


def hf_config(reader) -> dict[str, Any]:
    """The transformers ``config.json`` dict of a Llama GGUF, from its metadata."""
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{reader.data.filename}: architecture {arch!r} is not a Llama")
    scaling = field(reader, "llama.rope.scaling.type", "none")
    if scaling != "none":
        raise CheckpointError(f"{reader.data.filename}: rope scaling {scaling!r} in a GGUF is not supported")
    names = {t.name for t in reader.tensors}
    heads = field(reader, "llama.attention.head_count")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": field(reader, "llama.vocab_size", None) or len(field(reader, "tokenizer.ggml.tokens")),
        "hidden_size": field(reader, "llama.embedding_length"),
        "intermediate_size": field(reader, "llama.feed_forward_length"),
        "num_hidden_layers": field(reader, "llama.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": field(reader, "llama.attention.head_count_kv", heads),
        "head_dim": field(reader, "llama.attention.key_length", None),  # None: hidden_size / heads
        "rms_norm_eps": field(reader, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": field(reader, "llama.rope.freq_base", 10000.0),
        "max_position_embeddings": field(reader, "llama.context_length"),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id", None),
        "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id", None),
    }


def hf_tensor_name(name: str) -> str:
    """llama.cpp tensor name -> transformers name (unknown names come back unchanged, so the
    loader reports them as unused)."""
    stem, _, kind = name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{kind}"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    if m and m[2] in _LAYER_NAMES:
        return f"model.layers.{m[1]}.{_LAYER_NAMES[m[2]]}.{kind}"
    return name


def unpermute_rows(w_oi: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k permute: per head, rows (pair, 2) -> (2, pair). [out, in]."""
    out = w_oi.shape[0]
    return w_oi.reshape(heads, out // heads // 2, 2, *w_oi.shape[1:]).swapaxes(1, 2).reshape(w_oi.shape)


class GGUFSource:
    """Tensors of a GGUF file under transformers' names, dequantised to float32 on ``get``."""

    def __init__(self, reader):
        self.reader = reader
        self.path = str(reader.data.filename)
        cfg = hf_config(reader)
        self._heads = {"self_attn.q_proj": cfg["num_attention_heads"], "self_attn.k_proj": cfg["num_key_value_heads"]}
        self._tensors = {hf_tensor_name(t.name): t for t in reader.tensors}

    def names(self) -> set[str]:
        return set(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        """The dequantised tensor's shape (GGUF lists dimensions innermost first)."""
        return tuple(int(d) for d in reversed(self._tensors[name].shape))

    def where(self, name: str) -> str:
        return f"{self.path} ({self._tensors[name].name})"

    def get(self, name: str) -> np.ndarray:
        # deferred: see open_gguf
        from gguf.quants import dequantize

        t = self._tensors[name]
        arr = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
        for proj, heads in self._heads.items():
            if f".{proj}." in name:
                arr = unpermute_rows(arr, heads)
        return arr


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet of byte-level BPE vocabularies)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tokenizer(reader):
    """A transformers fast tokenizer built from the file's byte-level BPE vocabulary and merges,
    the same tokenizer transformers builds from a GGUF (special tokens, chat template included)."""
    # deferred: tokenizers and transformers are imported only when a tokenizer is built
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    where = reader.data.filename
    kind = field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(f"{where}: tokenizer type {kind!r} is not supported (only byte-level BPE, 'gpt2'); "
                              "convert the model to a Hugging Face directory")
    tokens = field(reader, "tokenizer.ggml.tokens")
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {tok if set(tok) <= alphabet else "".join(spelling[b] for b in tok.encode("utf-8")): i
             for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False))
    backend.decoder = decoders.ByteLevel()
    if field(reader, "tokenizer.ggml.pre", "default") in _LLAMA3_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    types = field(reader, "tokenizer.ggml.token_type", [])
    control = [tok for tok, kind in zip(tokens, types) if kind == _CONTROL and set(tok) <= alphabet]
    backend.add_special_tokens([AddedToken(tok, normalized=False, special=True) for tok in control])

    def token(key: str) -> str | None:
        token_id = field(reader, f"tokenizer.ggml.{key}", None)
        return None if token_id is None else tokens[token_id]

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=token("bos_token_id"), eos_token=token("eos_token_id"),
        unk_token=token("unknown_token_id"), pad_token=token("padding_token_id"),
        chat_template=field(reader, "tokenizer.chat_template", None),
    )
    return tok
