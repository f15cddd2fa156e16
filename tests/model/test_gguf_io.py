"""GGUF read with numpy and gguf alone: a tiny Llama written as llama.cpp writes it (q/k rows
permuted, llama.cpp tensor names, byte-level BPE vocabulary in the metadata) loads back as the
same model and the same tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

import spark_jax
from spark_jax.model import checkpoint_hf, gguf_io
from spark_jax.model.safetensors_io import CheckpointError, SafetensorsFile

gguf = pytest.importorskip("gguf")  # a core dependency; the skip only guards a broken install

IDS = np.random.default_rng(0).integers(0, 100, (2, 21)).astype(np.int32)
HF_TO_GGUF = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def llama_cpp_permute(w_oi: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py ``LlamaModel.permute`` (rotary halves -> interleaved pairs)."""
    return w_oi.reshape(heads, 2, w_oi.shape[0] // heads // 2, *w_oi.shape[1:]).swapaxes(1, 2).reshape(w_oi.shape)


def gguf_name(hf: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    _, _, layer, rest = hf.split(".", 3)
    module = rest.rsplit(".", 1)[0]
    return f"blk.{layer}.{HF_TO_GGUF[module]}.weight"


def write_gguf(hf_dir, path, tokenizer):
    """``hf_dir`` (config.json, model.safetensors, tokenizer) as a float32 llama GGUF."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(cfg["vocab_size"])
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(backend["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in backend["added_tokens"] if t["special"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list([tok for tok, _ in vocab])
    w.add_token_types([3 if tok in special else 1 for tok, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_chat_template(tokenizer.chat_template)
    st = SafetensorsFile(hf_dir / "model.safetensors")
    for name in sorted(st.keys()):
        arr = np.asarray(st.get(name), np.float32)
        if ".q_proj." in name:
            arr = llama_cpp_permute(arr, cfg["num_attention_heads"])
        elif ".k_proj." in name:
            arr = llama_cpp_permute(arr, cfg["num_key_value_heads"])
        w.add_tensor(gguf_name(name), np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(chat_tokenizer, tmp_path_factory):
    """(hf_dir, gguf path) of the same random tiny Llama. Its config has no rope scaling: a
    GGUF stores Llama 3 scaling as a tensor, which the reader refuses."""
    from flax import nnx

    from spark_jax.model.checkpoint_hf import export_hf
    from spark_jax.model.config import RopeScaling, tiny
    from spark_jax.model.llama import Llama

    tok = chat_tokenizer
    base = tiny(rope_scaling=RopeScaling()).replace(vocab_size=len(tok), eos_token_ids=(tok.eos_token_id,),
                                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    hf_dir = tmp_path_factory.mktemp("tiny_plain_rope")
    export_hf(Llama(base, rngs=nnx.Rngs(1)), hf_dir, tokenizer=chat_tokenizer)
    return hf_dir, write_gguf(hf_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf", chat_tokenizer)


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    for heads in (1, 2, 3):
        np.testing.assert_array_equal(gguf_io.unpermute_rows(llama_cpp_permute(w, heads), heads), w)
    assert not np.array_equal(llama_cpp_permute(w, 2), w)  # the permutation is not the identity


def test_tensors_come_back_in_transformers_layout(tiny_gguf):
    hf_dir, path = tiny_gguf
    source = gguf_io.GGUFSource(gguf_io.open_gguf(path))
    st = SafetensorsFile(hf_dir / "model.safetensors")
    assert source.names() == set(st.keys())
    for name in st.keys():
        assert source.shape(name) == tuple(st.get(name).shape)
        np.testing.assert_array_equal(source.get(name), st.get(name), err_msg=name)


def test_gguf_loads_the_same_model_and_tokenizer(tiny_gguf, chat_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_JAX_CACHE", str(tmp_path / "cache"))
    hf_dir, path = tiny_gguf
    want = spark_jax.load_pretrained(hf_dir)
    got = spark_jax.load_pretrained(path)
    # GGUF stores the epsilon as float32 (9.9999997e-06 for 1e-5), as transformers also reads it.
    assert got.config.rms_norm_eps == pytest.approx(want.config.rms_norm_eps, rel=1e-7)
    assert got.config.replace(rms_norm_eps=want.config.rms_norm_eps) == want.config
    np.testing.assert_allclose(got.logits(IDS), want.logits(IDS), atol=1e-6, rtol=0)
    text = "Action: calculator\nInput: 17 * 23<|im_end|> héllo"
    assert got.tokenizer(text)["input_ids"] == chat_tokenizer(text)["input_ids"]
    msgs = [{"role": "user", "content": "What is 17 times 23?"}]
    assert (got.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            == chat_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    assert (got.tokenizer.eos_token, got.tokenizer.pad_token) == ("<|im_end|>", "<|pad|>")
    ids = got.tokenizer(text)["input_ids"]
    assert got.tokenizer.decode(ids, skip_special_tokens=True) == chat_tokenizer.decode(ids, skip_special_tokens=True)
    # The second load reads the cached safetensors copy, not the GGUF.
    assert (checkpoint_hf.gguf_cache_dir(path) / "model.safetensors").is_file()


def test_rope_scaling_and_other_architectures_are_refused(tmp_path):
    path = tmp_path / "scaled.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="rope scaling 'linear'"):
        gguf_io.hf_config(gguf_io.open_gguf(path))
    path = tmp_path / "qwen.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="'qwen2' is not a Llama"):
        gguf_io.hf_config(gguf_io.open_gguf(path))


def test_unknown_tensor_names_stay_unchanged_so_the_loader_reports_them():
    assert gguf_io.hf_tensor_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert gguf_io.hf_tensor_name("output.weight") == "lm_head.weight"
    assert gguf_io.hf_tensor_name("rope_freqs.weight") == "rope_freqs.weight"
