"""qwix LoRA/QLoRA against peft: forward parity, PEFT export, merging, decoding with adapters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from spark_jax.model.checkpoint_hf import load_hf_directory
from spark_jax.model.pretrained import PretrainedModel
from spark_jax.model.sharding import path_str
from spark_jax.rl.adapters import LoraConfig, apply_lora, export_peft, lora_modules, merged_model, trainable_filter

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
LCFG = LoraConfig(rank=4, alpha=8.0, target_modules=r".*(q_proj|v_proj|o_proj|down_proj)$")
TOL = 1e-4  # float32, different matmul association (x@A@B*s vs torch's order)


def _ids(vocab, b=2, t=40, seed=0):
    return np.random.default_rng(seed).integers(3, vocab, size=(b, t)).astype(np.int32)


def _randomise_adapters(model, seed=0):
    rng = np.random.default_rng(seed)
    for mod in lora_modules(model).values():
        for name in ("kernel_lora_a", "kernel_lora_b"):
            p = getattr(mod, name)
            p[...] = jnp.asarray(rng.normal(scale=0.1, size=p.shape).astype(np.float32))


def _hf_model(model_dir):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def _our_logits(model, ids):
    logits, _ = model(jnp.asarray(ids))
    return np.asarray(logits)


def test_lora_forward_matches_peft(tiny_model_dir):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    base, cfg = load_hf_directory(tiny_model_dir)
    ours = apply_lora(base, LCFG)
    hf = get_peft_model(_hf_model(tiny_model_dir), PeftLoraConfig(
        r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, init_lora_weights=False))
    # copy peft's random A [r, in] and B [out, r] into ours (A.T [in, r], B.T [r, out])
    for path, mod in lora_modules(ours).items():
        i, kind, proj = path.split("/")[1], path.split("/")[2], path.split("/")[3]
        pm = getattr(getattr(hf.base_model.model.model.layers[int(i)], kind), proj)
        mod.kernel_lora_a[...] = jnp.asarray(pm.lora_A["default"].weight.detach().numpy().T)
        mod.kernel_lora_b[...] = jnp.asarray(pm.lora_B["default"].weight.detach().numpy().T)
        assert np.abs(pm.lora_B["default"].weight.detach().numpy()).max() > 0
    ids = _ids(cfg.vocab_size)
    with torch.no_grad():
        want = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    got = _our_logits(ours, ids)
    base_logits = _our_logits(base, ids)
    assert np.abs(want - base_logits).max() > 1e-2  # the adapters change the output
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


def test_peft_export_loads_with_same_logits(tiny_model_dir, tmp_path):
    from peft import PeftModel

    base, cfg = load_hf_directory(tiny_model_dir)
    ours = apply_lora(base, LCFG)
    _randomise_adapters(ours)
    out = export_peft(ours, LCFG, tmp_path / "adapter", base_model_name_or_path=str(tiny_model_dir))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    hf = PeftModel.from_pretrained(_hf_model(tiny_model_dir), str(out)).eval()
    ids = _ids(cfg.vocab_size, seed=1)
    with torch.no_grad():
        want = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(_our_logits(ours, ids), want, rtol=TOL, atol=TOL)


def test_merged_model_equals_lora_model_and_decodes(tiny_model_dir):
    base, cfg = load_hf_directory(tiny_model_dir)
    ours = apply_lora(base, LCFG)
    _randomise_adapters(ours, seed=2)
    merged = merged_model(ours, LCFG)
    ids = _ids(cfg.vocab_size, seed=2)
    np.testing.assert_allclose(_our_logits(merged, ids), _our_logits(ours, ids), rtol=1e-4, atol=1e-4)
    # Decoding with the KV cache uses the adapters on the prefill and on every decode step
    # (qwix intercepts hidden_states, which both go through): same tokens as the merged model,
    # and each greedy token is the argmax of the adapter model's full-sequence logits.
    prompts = [list(ids[0, :12]), list(ids[1, :7])]
    out_lora = PretrainedModel(ours).generate(prompts, max_new_tokens=4)
    assert out_lora == PretrainedModel(merged).generate(prompts, max_new_tokens=4)
    seq = prompts[0] + out_lora[0]
    step_logits = _our_logits(ours, np.asarray([seq], np.int32))[0]
    for k, tok in enumerate(out_lora[0]):
        assert tok == int(step_logits[len(prompts[0]) - 1 + k].argmax())


def test_only_adapters_are_trainable_and_qlora_quantises_the_base(tiny_model_dir):
    base, cfg = load_hf_directory(tiny_model_dir)
    q = LoraConfig(rank=4, alpha=8.0, target_modules=LCFG.target_modules, qlora=True, qlora_tile_size=32)
    model = apply_lora(base, q)
    _, trainable, frozen = nnx.split(model, trainable_filter(q), ...)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(trainable)]
    assert names and all("lora" in n for n in names)
    dtypes = {str(x.dtype) for x in jax.tree_util.tree_leaves(frozen)}
    assert "uint4" in dtypes  # NF4 codes of the matched kernels
    # the quantised model stays close to the base (NF4 rounding) and trains (nonzero grad on B)
    ids = jnp.asarray(_ids(cfg.vocab_size, seed=3))
    graphdef = nnx.graphdef(model)

    def loss(tr):
        logits, _ = nnx.merge(graphdef, tr, frozen)(ids)
        return jax.nn.logsumexp(logits, -1).mean()

    grads = jax.jit(jax.grad(loss))(trainable)
    b_norms = [float(jnp.abs(g).max()) for p, g in jax.tree_util.tree_leaves_with_path(grads)
               if "lora_b" in jax.tree_util.keystr(p)]
    assert max(b_norms) > 0


def test_targets_that_match_nothing_or_the_head_are_errors(tiny_model_dir):
    base, _ = load_hf_directory(tiny_model_dir)
    with pytest.raises(ValueError, match="matched no projection"):
        apply_lora(base, LoraConfig(rank=2, target_modules="nothing_here"))
    with pytest.raises(ValueError, match="lm_head"):
        apply_lora(base, LoraConfig(rank=2, target_modules=".*(q_proj|lm_head)"))


def test_merged_policy_has_the_base_structure():
    """Evaluation shares compiled functions between the base and merged policies by graphdef."""
    from flax import nnx

    from spark_jax.model.config import tiny
    from spark_jax.model.llama import Llama
    from spark_jax.rl.adapters import LoraConfig, apply_lora
    from spark_jax.rl.export import merged_model

    base_graphdef = nnx.split(Llama(tiny(), rngs=nnx.Rngs(0)))[0]
    lora = apply_lora(Llama(tiny(), rngs=nnx.Rngs(0)), LoraConfig(rank=4, alpha=8.0))
    assert nnx.split(merged_model(lora, LoraConfig(rank=4, alpha=8.0)))[0] == base_graphdef


def test_adapters_created_without_a_model_run_match_qwix():
    """Plain LoRA creates its adapters directly (qwix's creating run took 45-80 s on SmolLM2);
    they must be what qwix's own run creates: same modules, names, shapes, dtypes and kind."""
    import qwix

    from spark_jax.model.config import tiny
    from spark_jax.model.llama import Llama

    base = Llama(tiny(), rngs=nnx.Rngs(0))
    ours = apply_lora(base, LCFG)
    ids = jnp.zeros((1, 8), jnp.int32)
    stock = nnx.jit(lambda m: qwix.apply_lora_to_model(
        m, qwix.LoraProvider(module_path=LCFG.target_modules, rank=4, alpha=8.0), ids, ids,
        methods=("hidden_states",), rngs=nnx.Rngs(0)))(base)
    got, want = nnx.state(ours, nnx.LoRAParam), nnx.state(stock, nnx.LoRAParam)
    describe = lambda st: {path_str(p): (v.shape, v.dtype) for p, v in jax.tree_util.tree_leaves_with_path(st)}  # noqa: E731
    assert describe(got) == describe(want) and len(describe(got)) == 2 * len(TARGETS) * tiny().num_layers
    for path, mod in lora_modules(ours).items():
        assert isinstance(mod.kernel_lora_a, nnx.LoRAParam) and isinstance(mod.kernel_lora_b, nnx.LoRAParam)
        assert not np.any(np.asarray(mod.kernel_lora_b[...]))  # B = 0: the adapted model starts as the base
        a = np.asarray(mod.kernel_lora_a[...])
        bound = np.sqrt(6.0 / a.shape[0])  # he-uniform
        assert np.abs(a).max() <= bound and a.std() > 0.3 * bound, path
    ids = jnp.asarray(_ids(tiny().vocab_size))
    np.testing.assert_allclose(_our_logits(ours, ids), _our_logits(base, ids), rtol=1e-6, atol=1e-6)
