"""LLaMA / Qwen3 decoder vs transformers (fp32, 1e-5 relative): import, export, embeddings input, KV cache."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.conftest import export_round_trip
from shared.weights import load_pretrained, save_pretrained

NAMES = ["llama_gqa_llama3_tied", "qwen3_qknorm_untied", "llama_bias_mqa"]
RTOL = 1e-5


def fwd(module, params, *args, **kw):
  """Jitted module.apply (eager apply of a scanned stack is much slower than compiling it)."""
  return jax.jit(lambda p, a, k: module.apply({"params": p}, *a, **k))(params, args, kw)


def rel_err(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _inputs(vocab, seed=0):
  g = torch.Generator().manual_seed(seed)
  ids = torch.randint(0, vocab, (2, 13), generator=g)
  mask = torch.ones_like(ids)
  mask[1, 9:] = 0  # right padding on the second row
  return ids, mask


@pytest.fixture(scope="module")
def loaded(hf_dirs):
  return {name: load_pretrained(d) for name, (_, d) in hf_dirs.items()}


@pytest.mark.parametrize("name", NAMES)
def test_import_matches_transformers(name, hf_dirs, loaded):
  model, _ = hf_dirs[name]
  module, params = loaded[name]
  ids, mask = _inputs(model.config.vocab_size)
  with torch.no_grad():
    ref = model(input_ids=ids, attention_mask=mask).logits.numpy()
  out = fwd(module, params, jnp.asarray(ids.numpy()), attention_mask=jnp.asarray(mask.numpy()))
  valid = mask.numpy().astype(bool)
  assert out.dtype == jnp.float32
  assert rel_err(np.asarray(out)[valid], ref[valid]) < RTOL
  assert np.abs(ref).max() > 1.0  # logits are not trivially small


@pytest.mark.parametrize("name", NAMES)
def test_export_loads_in_transformers(name, hf_dirs, loaded, tmp_path):
  model, _ = hf_dirs[name]
  module, params = loaded[name]
  save_pretrained(module, params, str(tmp_path))
  back = type(model).from_pretrained(str(tmp_path)).eval()
  assert type(back.config) is type(model.config)
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy(), err_msg=key)
  ids, mask = _inputs(model.config.vocab_size, seed=1)
  with torch.no_grad():
    ref = back(input_ids=ids).logits.numpy()
  out = fwd(module, params, jnp.asarray(ids.numpy()))
  assert rel_err(out, ref) < RTOL


def test_config_roundtrip_fields(hf_dirs, loaded):
  module, _ = loaded["llama_gqa_llama3_tied"]
  c = module.config
  assert (c.num_heads, c.num_kv_heads, c.tie_embeddings, c.qk_norm) == (6, 2, True, False)
  assert dict(c.rope_scaling)["rope_type"] == "llama3" and c.rope_theta == 500000.0
  q = loaded["qwen3_qknorm_untied"][0].config
  assert (q.head_dim, q.hidden_size // q.num_heads, q.qk_norm, q.tie_embeddings) == (24, 10, True, False)


def test_inputs_embeds_equals_ids(loaded):
  module, params = loaded["qwen3_qknorm_untied"]
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 101, (2, 7)))
  emb = module.apply({"params": params}, ids, method=module.embed)
  a, b = jax.jit(lambda p: (module.apply({"params": p}, ids), module.apply({"params": p}, inputs_embeds=emb)))(params)
  np.testing.assert_allclose(a, b, rtol=0, atol=0)


def test_kv_cache_decoding_matches_full_forward(loaded):
  """Prefill 5 tokens, then 3 single-token steps: logits equal the full causal forward."""
  module, params = loaded["llama_gqa_llama3_tied"]
  ids = jnp.asarray(np.random.default_rng(1).integers(0, 97, (2, 8)))
  full = fwd(module, params, ids)
  cache = module.init_cache(2, 10)
  kv_mask = jnp.ones((2, 10), jnp.int32)
  step = jax.jit(lambda p, x, c, i: module.apply({"params": p}, x, attention_mask=kv_mask, cache=c, cache_index=i))
  out, cache = fwd(module, params, ids[:, :5], attention_mask=kv_mask, cache=cache, cache_index=0)
  outs = [out]
  for t in range(5, 8):
    out, cache = step(params, ids[:, t:t + 1], cache, t)
    outs.append(out)
  assert rel_err(jnp.concatenate(outs, axis=1), full) < RTOL


def test_bf16_compute_close_to_fp32(loaded):
  """bf16 compute (params stay fp32) stays close to fp32; logits come back in fp32.
  (remat is checked in test_lora_peft.py: the sharded step with remat equals the plain step.)"""
  module, params = loaded["qwen3_qknorm_untied"]
  ids = jnp.asarray(np.random.default_rng(2).integers(0, 101, (2, 6)))
  bf = module.clone(config=module.config.replace(dtype="bfloat16"))
  out = fwd(bf, params, ids)
  assert out.dtype == jnp.float32
  err = rel_err(out, fwd(module, params, ids))
  assert 1e-6 < err < 0.05


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_export_keeps_imported_config_fields(kind, tmp_path):
  """Keys LLMConfig does not model (initializer_range, use_cache, Qwen3's max_window_layers, ...) survive
  import -> export unchanged, and the imported class loads the export with the same logits."""
  import transformers
  rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8} if kind == "llama" else None
  config_cls, model_cls = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
                           "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}[kind]
  torch.manual_seed(1)
  model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(
      vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
      num_key_value_heads=1, tie_word_embeddings=(kind == "llama"), rope_scaling=rope, initializer_range=0.5,
      use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=[2, 3],
      **({"max_window_layers": 1, "head_dim": 12} if kind == "qwen3" else {}))).eval()
  # layer_types follows from the sliding-window keys
  export_round_trip(model, tmp_path, derived=("transformers_version", "layer_types"))
  back = type(model).from_pretrained(str(tmp_path / "out")).eval()
  assert (back.config.initializer_range, back.config.use_cache) == (0.5, False)
  ids, _ = _inputs(model.config.vocab_size, seed=2)
  with torch.no_grad():
    np.testing.assert_allclose(back(input_ids=ids).logits.numpy(), model(input_ids=ids).logits.numpy(),
                               rtol=1e-4, atol=1e-5)
