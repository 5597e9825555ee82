"""MBart vs transformers MBartForConditionalGeneration (fp32, 1e-5 relative): import, export, inputs_embeds,
KV-cache decoding, greedy and beam search against generate()."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.conftest import export_round_trip
from shared.decoding import search
from shared.models.mbart import MBartGenerator, shift_tokens_right
from shared.weights import load_pretrained, save_pretrained

RTOL = 1e-5
CONFIGS = {
    # MBart-large-50 structure in miniature: scale_embedding, 3 encoder heads vs 2 decoder heads, odd ffn
    "scaled_odd": dict(vocab_size=71, d_model=24, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
                       decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=36, max_position_embeddings=32,
                       scale_embedding=True, decoder_start_token_id=2),
    # no embedding scale, 1-layer encoder, 4 heads of 5 dims, relu
    "unscaled_relu": dict(vocab_size=53, d_model=20, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                          decoder_attention_heads=4, encoder_ffn_dim=28, decoder_ffn_dim=30,
                          max_position_embeddings=20, scale_embedding=False, activation_function="relu",
                          decoder_start_token_id=2),
}


def rel_err(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def build_hf(kw, seed=0):
  from transformers import MBartConfig, MBartForConditionalGeneration
  torch.manual_seed(seed)
  model = MBartForConditionalGeneration(MBartConfig(**kw, dropout=0.0, attention_dropout=0.0,
                                                    activation_dropout=0.0))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name or "layernorm" in name:
        p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
      elif "embed_positions" in name:  # strong positions: a random tied model otherwise repeats one token
        p.normal_(0.0, 1.0)
      else:
        p.normal_(0.0, 0.5 if p.ndim == 2 else 0.1)
    model.final_logits_bias.normal_(0.0, 0.5)
    model.final_logits_bias[0, 2] = 2.0  # eos fairly likely, so hypotheses end at different steps
  return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  out = {}
  for name, kw in CONFIGS.items():
    model = build_hf(kw)
    d = tmp_path_factory.mktemp("mbart_" + name)
    model.save_pretrained(d)
    module, params = load_pretrained(str(d))
    fwd = jax.jit(lambda p, ids, dec, m, module=module: module.apply({"params": p}, ids, dec, attention_mask=m))
    out[name] = (model, module, params, fwd)
  return out


def _inputs(vocab, seed=0):
  g = torch.Generator().manual_seed(seed)
  ids = torch.randint(3, vocab, (2, 9), generator=g)
  mask = torch.ones_like(ids)
  mask[1, 6:] = 0
  dec = torch.randint(3, vocab, (2, 7), generator=g)
  dec[:, 0] = 2
  return ids, mask, dec


def _j(t):
  return jnp.asarray(t.numpy())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_matches_transformers(name, models):
  model, module, params, fwd = models[name]
  ids, mask, dec = _inputs(model.config.vocab_size)
  with torch.no_grad():
    ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
  out = fwd(params, _j(ids), _j(dec), _j(mask))
  assert out.dtype == jnp.float32
  assert rel_err(out, ref.logits.numpy()) < RTOL
  enc = jax.jit(lambda p, x, m: module.apply({"params": p}, x, attention_mask=m, method=module.encode))(
      params, _j(ids), _j(mask))
  assert rel_err(enc, ref.encoder_last_hidden_state.numpy()) < RTOL


def test_inputs_embeds_like_transformers(models):
  """inputs_embeds are used as given (no embed scale), as in transformers; embed() applies the scale."""
  model, module, params, fwd = models["scaled_odd"]
  ids, mask, dec = _inputs(model.config.vocab_size, seed=3)
  emb = torch.randn(2, 9, 24)
  with torch.no_grad():
    ref = model(inputs_embeds=emb, attention_mask=mask, decoder_input_ids=dec).logits.numpy()
  f = jax.jit(lambda p, e: module.apply({"params": p}, None, _j(dec), inputs_embeds=e, attention_mask=_j(mask)))
  assert rel_err(f(params, _j(emb)), ref) < RTOL
  via = f(params, module.apply({"params": params}, _j(ids), method=module.embed))
  assert rel_err(via, fwd(params, _j(ids), _j(dec), _j(mask))) < RTOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_in_transformers(name, models, tmp_path):
  from transformers import MBartForConditionalGeneration
  model, module, params, fwd = models[name]
  save_pretrained(module, params, str(tmp_path))
  back = MBartForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy(), err_msg=key)
  ids, mask, dec = _inputs(model.config.vocab_size, seed=1)
  with torch.no_grad():
    ref = back(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.numpy()
  assert rel_err(fwd(params, _j(ids), _j(dec), _j(mask)), ref) < RTOL


def test_kv_cache_steps_equal_full_decode(models):
  model, module, params, fwd = models["scaled_odd"]
  ids, mask, dec = _inputs(model.config.vocab_size, seed=2)
  full = np.asarray(fwd(params, _j(ids), _j(dec), _j(mask)))
  gen = MBartGenerator(module)
  prefill = jax.jit(gen.prefill, static_argnames=("max_new_tokens",))
  logits, cache = prefill(params, input_ids=_j(ids), attention_mask=_j(mask), decoder_input_ids=_j(dec[:, :3]),
                          max_new_tokens=4)
  got = [np.asarray(logits)]
  step = jax.jit(gen.step)
  for t in range(3, 7):
    logits, cache = step(params, _j(dec[:, t]).astype(jnp.int32), cache)
    got.append(np.asarray(logits))
  np.testing.assert_allclose(np.stack(got, 1), full[:, 2:], rtol=0, atol=2e-5 * np.abs(full).max())


def test_greedy_and_beam_match_generate(models):
  model, module, params, _ = models["unscaled_relu"]  # varied tokens; beams that end at different steps
  ids, mask, _ = _inputs(model.config.vocab_size, seed=4)
  gen = MBartGenerator(module)
  logits, cache = jax.jit(gen.prefill, static_argnames=("max_new_tokens",))(
      params, input_ids=_j(ids), attention_mask=_j(mask), max_new_tokens=10)
  with torch.no_grad():
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, num_beams=1,
                         forced_eos_token_id=None, min_length=0).numpy()[:, 1:]   # drop decoder_start
  ours = np.asarray(search.greedy(gen, params, logits, cache, max_new_tokens=10, eos_ids=(2,), pad_id=1))
  np.testing.assert_array_equal(ours[:, :ref.shape[1]], ref)
  assert np.all(ours[:, ref.shape[1]:] == 1)
  with torch.no_grad():
    ref_b = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=3,
                           num_return_sequences=3, length_penalty=0.8, early_stopping=False,
                           forced_eos_token_id=None, min_length=0, output_scores=True,
                           return_dict_in_generate=True)
  toks, scores = search.beam_search(gen, params, logits, cache, num_beams=3, max_new_tokens=8, eos_ids=(2,),
                                    pad_id=1, length_penalty=0.8)
  ref_toks = ref_b.sequences.numpy()[:, 1:].reshape(2, 3, -1)
  np.testing.assert_array_equal(np.asarray(toks)[:, :, :ref_toks.shape[2]], ref_toks)
  np.testing.assert_allclose(np.asarray(scores), ref_b.sequences_scores.numpy().reshape(2, 3), rtol=1e-4)


def test_shift_tokens_right_matches_transformers():
  from transformers.models.mbart.modeling_mbart import shift_tokens_right as ref
  labels = torch.tensor([[5, 6, 7, 2, 9], [5, 6, 2, -100, -100]])
  np.testing.assert_array_equal(shift_tokens_right(_j(labels), 1), ref(labels.clone(), 1).numpy())


def test_remat_traces_with_both_stacks(models):
  """remat over both scanned stacks (values of remat vs none are compared in test_umt5, same scan helper):
  here the gradient traces with the decoder's static `deterministic` argument and keeps fp32 params."""
  model, module, params, _ = models["unscaled_relu"]
  ids, mask, dec = (_j(t) for t in _inputs(model.config.vocab_size))
  remat = module.clone(config=module.config.replace(remat_policy="dots"))
  g = jax.eval_shape(jax.grad(lambda p: remat.apply({"params": p}, ids, dec, attention_mask=mask).std()), params)
  assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(g))
  assert g["decoder_layers"]["encoder_attn"]["k_proj"]["kernel"].shape == (2, 20, 20)


def test_peft_lora_adapter_both_ways(models, tmp_path):
  """A peft LoRA adapter on MBart (attention q/v in all three attentions + fc1) imports with identical logits;
  ours exports to a directory peft loads with identical logits."""
  from peft import LoraConfig, PeftModel, get_peft_model
  from transformers import MBartForConditionalGeneration
  from shared.weights import save_adapter
  model, module, params, _ = models["unscaled_relu"]
  base_dir = tmp_path / "base"
  model.save_pretrained(base_dir)
  torch.manual_seed(5)
  pm = get_peft_model(MBartForConditionalGeneration.from_pretrained(base_dir).eval(), LoraConfig(
      r=2, lora_alpha=6, init_lora_weights=False, target_modules=["q_proj", "v_proj", "fc1"])).eval()
  pm.save_pretrained(tmp_path / "adapter")
  ids, mask, dec = _inputs(model.config.vocab_size, seed=6)
  with torch.no_grad():
    ref = pm(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.numpy()
  lmod, lparams = load_pretrained(str(tmp_path / "adapter"), base=str(base_dir))
  assert lparams["decoder_layers"]["encoder_attn"]["q_proj"]["lora_a"].shape == (2, 20, 2)
  f = jax.jit(lambda p: lmod.apply({"params": p}, _j(ids), _j(dec), attention_mask=_j(mask)))
  out = f(lparams)
  assert rel_err(out, ref) < RTOL
  assert rel_err(out, model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.detach().numpy()) > 1e-3
  save_adapter(lmod, lparams, str(tmp_path / "ours"))
  back = PeftModel.from_pretrained(MBartForConditionalGeneration.from_pretrained(base_dir).eval(),
                                   str(tmp_path / "ours")).eval()
  with torch.no_grad():
    assert rel_err(out, back(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.numpy()) < RTOL


def test_every_param_has_logical_axes(models):
  import flax.linen as nn
  _, module, _, _ = models["scaled_odd"]
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32),
                                             jnp.zeros((1, 2), jnp.int32)))["params"]
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
  scanned = boxed["decoder_layers"]["encoder_attn"]["k_proj"]["kernel"]
  assert scanned.names == ("layers", "embed", "kv_heads")


def test_sharded_forward_equals_single_device():
  """FSDP + tensor rules on a (2, 2, 2) mesh of the 8 simulated devices: same logits as one device."""
  import flax.linen as nn
  from shared.mesh import LOGICAL_RULES
  from shared.models.mbart import MBart, MBartConfig
  module = MBart(MBartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                             decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=24,
                             max_position_embeddings=16))
  ids = jnp.asarray(np.random.default_rng(0).integers(3, 64, (4, 6)))
  dec = jnp.asarray(np.random.default_rng(1).integers(3, 64, (4, 5)))
  boxed = jax.jit(module.init)(jax.random.key(0), ids, dec)["params"]
  params = nn.meta.unbox(boxed)
  f = lambda p, a, b: module.apply({"params": p}, a, b)
  ref = np.asarray(jax.jit(f)(params, ids, dec))
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = [(n, a) for n, a in LOGICAL_RULES
           if a is None or all(x in mesh.axis_names for x in ((a,) if isinstance(a, str) else a))]
  p_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  assert p_sh["decoder_layers"]["mlp"]["fc1"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  x_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    out = jax.jit(f, in_shardings=(p_sh, x_sh, x_sh))(jax.device_put(params, p_sh), ids, dec)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_export_keeps_imported_config_fields(tmp_path):
  """Keys MBartConfig does not model (dropout, init_std, use_cache, ...) survive import -> export unchanged, and
  MBartForConditionalGeneration loads the export with the same logits."""
  from transformers import MBartConfig, MBartForConditionalGeneration
  torch.manual_seed(2)
  model = MBartForConditionalGeneration(MBartConfig(**CONFIGS["unscaled_relu"], dropout=0.1, attention_dropout=0.05,
                                                    init_std=0.05, classifier_dropout=0.2, use_cache=False)).eval()
  export_round_trip(model, tmp_path)
  back = MBartForConditionalGeneration.from_pretrained(str(tmp_path / "out")).eval()
  assert (back.config.dropout, back.config.init_std, back.config.use_cache) == (0.1, 0.05, False)
  ids, mask, dec = _inputs(model.config.vocab_size, seed=3)
  with torch.no_grad():
    ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.numpy()
    got = back(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.numpy()
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
