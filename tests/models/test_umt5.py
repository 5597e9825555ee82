"""UMT5 encoder vs transformers UMT5EncoderModel (fp32, 1e-5 relative): import, export, padding, buckets."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.conftest import export_round_trip
from shared.nn.t5_bias import relative_position_bucket
from shared.weights import load_pretrained, save_pretrained

RTOL = 1e-5
CONFIGS = {
    # odd sizes, 3 heads with d_kv independent of d_model / heads, few buckets (log buckets reached at L=13)
    "odd_3heads": dict(vocab_size=67, d_model=30, d_kv=7, num_heads=3, d_ff=44, num_layers=2,
                       relative_attention_num_buckets=8, relative_attention_max_distance=12),
    # default bucket settings, 4 heads, 3 layers
    "default_4heads": dict(vocab_size=53, d_model=32, d_kv=8, num_heads=4, d_ff=40, num_layers=3),
}


def rel_err(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def build_hf(kw, seed=0):
  from transformers import UMT5Config, UMT5EncoderModel
  torch.manual_seed(seed)
  model = UMT5EncoderModel(UMT5Config(**kw, dropout_rate=0.0))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
      elif "relative_attention_bias" in name:
        p.normal_(0.0, 1.0)
      else:
        p.normal_(0.0, 0.3 if p.shape[0] != kw["vocab_size"] else 1.0)
  return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  out = {}
  for name, kw in CONFIGS.items():
    model = build_hf(kw)
    d = tmp_path_factory.mktemp("umt5_" + name)
    model.save_pretrained(d)
    module, params = load_pretrained(str(d))
    out[name] = (model, str(d), module, params, jax.jit(lambda p, ids, m, module=module: module.apply(
        {"params": p}, ids, attention_mask=m)))
  return out


def _inputs(vocab, seed=0):
  g = torch.Generator().manual_seed(seed)
  ids = torch.randint(0, vocab, (2, 13), generator=g)
  mask = torch.ones_like(ids)
  mask[1, 8:] = 0
  return ids, mask


def test_buckets_match_transformers():
  from transformers import UMT5Config
  from transformers.models.umt5.modeling_umt5 import UMT5Attention
  rel = np.arange(-3000, 3000)
  for nb, md in ((32, 128), (8, 12), (12, 50)):
    attn = UMT5Attention(UMT5Config(relative_attention_num_buckets=nb, relative_attention_max_distance=md), True)
    ref = attn._relative_position_bucket(torch.tensor(rel)).numpy()
    np.testing.assert_array_equal(relative_position_bucket(rel, bidirectional=True, num_buckets=nb, max_distance=md),
                                  ref)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_matches_transformers(name, models):
  model, _, module, params, fwd = models[name]
  ids, mask = _inputs(model.config.vocab_size)
  with torch.no_grad():
    ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
  out = np.asarray(fwd(params, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
  assert out.dtype == np.float32 and out.shape == ref.shape
  assert rel_err(out, ref) < RTOL  # padded query rows too: HF only masks keys, and so do we
  # the padding mask matters: the padded row differs from the unmasked computation
  full = np.asarray(fwd(params, jnp.asarray(ids.numpy()), jnp.ones((2, 13), jnp.int32)))
  assert np.abs(full[1, :8] - out[1, :8]).max() > 1e-3
  np.testing.assert_allclose(full[0], out[0], rtol=0, atol=1e-6)


def test_per_layer_bias_is_used(models):
  """UMT5 keeps one bias table per layer: the layers' tables differ and each one changes the output."""
  model, _, module, params, fwd = models["default_4heads"]
  tables = np.asarray(params["layers"]["relative_attention_bias"]["embedding"])
  assert tables.shape == (3, 32, 4)
  ids, mask = _inputs(model.config.vocab_size)
  ids, mask = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
  base = np.asarray(fwd(params, ids, mask))
  p2 = jax.tree_util.tree_map(lambda x: x, params)
  p2["layers"]["relative_attention_bias"]["embedding"] = params["layers"]["relative_attention_bias"][
      "embedding"].at[2].set(0.0)
  assert np.abs(np.asarray(fwd(p2, ids, mask)) - base).max() > 1e-3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_in_transformers(name, models, tmp_path):
  from transformers import UMT5EncoderModel
  model, _, module, params, fwd = models[name]
  save_pretrained(module, params, str(tmp_path))
  back = UMT5EncoderModel.from_pretrained(str(tmp_path)).eval()
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy(), err_msg=key)
  ids, mask = _inputs(model.config.vocab_size, seed=1)
  with torch.no_grad():
    ref = back(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
  out = fwd(params, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()))
  assert rel_err(out, ref) < RTOL


def test_full_model_checkpoint_imports_encoder(tmp_path):
  """A UMT5ForConditionalGeneration directory (decoder + lm_head present) imports as the encoder."""
  from transformers import UMT5Config, UMT5ForConditionalGeneration
  kw = CONFIGS["odd_3heads"]
  torch.manual_seed(1)
  full = UMT5ForConditionalGeneration(UMT5Config(**kw, dropout_rate=0.0, tie_word_embeddings=False)).eval()
  full.save_pretrained(tmp_path)
  module, params = load_pretrained(str(tmp_path))
  ids, mask = _inputs(kw["vocab_size"], seed=2)
  with torch.no_grad():
    ref = full.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
  out = module.apply({"params": params}, jnp.asarray(ids.numpy()), attention_mask=jnp.asarray(mask.numpy()))
  assert rel_err(out, ref) < RTOL


def test_remat_and_bf16_compute(models):
  """remat does not change values; bf16 compute keeps fp32 params and stays close to fp32."""
  model, d, module, params, fwd = models["odd_3heads"]
  ids, mask = _inputs(model.config.vocab_size)
  ids, mask = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
  ref = np.asarray(fwd(params, ids, mask))
  remat = module.clone(config=module.config.replace(remat_policy="full"))
  g = jax.jit(jax.grad(lambda p: remat.apply({"params": p}, ids, attention_mask=mask).sum()))(params)
  g0 = jax.jit(jax.grad(lambda p: module.apply({"params": p}, ids, attention_mask=mask).sum()))(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g0)
  bf = module.clone(config=module.config.replace(dtype="bfloat16"))
  out = jax.jit(lambda p: bf.apply({"params": p}, ids, attention_mask=mask))(params)
  assert out.dtype == jnp.bfloat16
  diff = np.abs(np.asarray(out, np.float32) - ref).mean() / np.abs(ref).mean()
  assert diff < 0.05


def test_every_param_has_logical_axes(models):
  import flax.linen as nn
  _, _, module, _, _ = models["odd_3heads"]
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32)))["params"]
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
  assert boxed["layers"]["relative_attention_bias"]["embedding"].names == ("layers", None, "heads")


def test_export_keeps_imported_config_fields(tmp_path):
  """A UMT5ForConditionalGeneration directory -> ours -> export (a UMT5EncoderModel directory): the decoder's
  sizes, dropout, use_cache, ... are kept, so both classes load it with the encoder outputs unchanged."""
  from transformers import UMT5Config, UMT5EncoderModel, UMT5ForConditionalGeneration
  torch.manual_seed(3)
  full = UMT5ForConditionalGeneration(UMT5Config(**CONFIGS["odd_3heads"], num_decoder_layers=1, dropout_rate=0.1,
                                                 use_cache=False)).eval()
  module, params, written = export_round_trip(  # dense_act_fn / is_gated_act follow from feed_forward_proj
      full, tmp_path, derived=("transformers_version", "architectures", "dense_act_fn", "is_gated_act"))
  assert written["architectures"] == ["UMT5EncoderModel"]
  ids, mask = _inputs(full.config.vocab_size, seed=4)
  with torch.no_grad():
    ref = full.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    for cls in (UMT5EncoderModel, UMT5ForConditionalGeneration):
      back = cls.from_pretrained(str(tmp_path / "out")).eval()
      assert back.config.num_decoder_layers == 1 and back.config.dropout_rate == 0.1
      if cls is UMT5ForConditionalGeneration:
        assert len(back.decoder.block) == 1
      got = back.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
