"""Whisper encoder vs transformers WhisperEncoder (fp32, 1e-5 relative): import from the three layouts,
export, time-major input, shorter inputs, sinusoid init."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.conftest import export_round_trip
from shared.errors import DataError
from shared.models.whisper import WhisperEncoder, WhisperEncoderConfig
from shared.nn.positions import whisper_sinusoids
from shared.weights import load_pretrained, save_pretrained

RTOL = 1e-5
CONFIGS = {
    # 80 mels as the real model, 3 heads of 6, odd ffn, 8 encoder positions (16 input frames)
    "mels80_3heads": dict(num_mel_bins=80, d_model=18, encoder_layers=2, encoder_attention_heads=3,
                          encoder_ffn_dim=30, max_source_positions=8),
    # fewer mels, 4 heads, 3 layers, gelu_new MLP, odd number of positions (11 -> 22 frames)
    "mels12_4heads": dict(num_mel_bins=12, d_model=16, encoder_layers=3, encoder_attention_heads=4,
                          encoder_ffn_dim=20, max_source_positions=11, activation_function="gelu_new"),
}
SMALL_DECODER = dict(decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=8, vocab_size=40,
                     max_target_positions=8, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                     decoder_start_token_id=3)


def rel_err(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _randomize(model):
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "embed_positions" in name:
        continue  # keep the sinusoids
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
      else:
        p.normal_(0.0, 0.3 if p.ndim >= 2 else 0.1)
  return model.eval()


def build_encoder(kw, seed=0):
  from transformers import WhisperConfig
  from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder
  torch.manual_seed(seed)
  return _randomize(HFEncoder(WhisperConfig(**kw, **SMALL_DECODER, dropout=0.0)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  out = {}
  for name, kw in CONFIGS.items():
    model = build_encoder(kw)
    d = tmp_path_factory.mktemp("whisper_" + name)
    model.save_pretrained(d)
    module, params = load_pretrained(str(d))
    fwd = jax.jit(lambda p, x, module=module: module.apply({"params": p}, x))
    out[name] = (model, module, params, fwd)
  return out


def _mels(n_mels, frames, seed=0):
  return torch.randn(2, n_mels, frames, generator=torch.Generator().manual_seed(seed))


def _time_major(x):
  return jnp.asarray(x.numpy().transpose(0, 2, 1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_matches_transformers(name, models):
  model, module, params, fwd = models[name]
  x = _mels(model.config.num_mel_bins, 2 * model.config.max_source_positions)
  with torch.no_grad():
    ref = model(x).last_hidden_state.numpy()
  out = fwd(params, _time_major(x))
  assert out.dtype == jnp.float32 and out.shape == ref.shape
  assert rel_err(out, ref) < RTOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_in_transformers(name, models, tmp_path):
  from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder
  model, module, params, fwd = models[name]
  save_pretrained(module, params, str(tmp_path))
  back = HFEncoder.from_pretrained(str(tmp_path)).eval()
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy(), err_msg=key)
  x = _mels(model.config.num_mel_bins, 2 * model.config.max_source_positions, seed=1)
  with torch.no_grad():
    ref = back(x).last_hidden_state.numpy()
  assert rel_err(fwd(params, _time_major(x)), ref) < RTOL


def test_full_model_layouts_import(tmp_path):
  """WhisperForConditionalGeneration ("model.encoder.*") and WhisperModel ("encoder.*") directories import;
  re-exported as a WhisperEncoder directory they load in transformers."""
  from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel
  from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder
  kw = CONFIGS["mels12_4heads"]
  x = _mels(12, 22, seed=2)
  for i, cls in enumerate((WhisperForConditionalGeneration, WhisperModel)):
    torch.manual_seed(i)
    full = _randomize(cls(WhisperConfig(**kw, **SMALL_DECODER, dropout=0.0)))
    d = tmp_path / cls.__name__
    full.save_pretrained(d)
    module, params = load_pretrained(str(d))
    assert module.config.architecture == cls.__name__
    with torch.no_grad():
      ref = full.get_encoder()(x).last_hidden_state.numpy()
    out = module.apply({"params": params}, _time_major(x))
    assert rel_err(out, ref) < RTOL
  enc = module.clone(config=module.config.replace(architecture="WhisperEncoder"))
  save_pretrained(enc, params, str(tmp_path / "enc"))
  back = HFEncoder.from_pretrained(str(tmp_path / "enc")).eval()
  with torch.no_grad():
    assert rel_err(out, back(x).last_hidden_state.numpy()) < RTOL


def test_shorter_input_uses_leading_positions(models):
  """T < 2 * max_source_positions: equals transformers with the position table cut to T' rows."""
  from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder
  model, module, params, fwd = models["mels80_3heads"]
  cut = HFEncoder(model.config.__class__(**{**model.config.to_dict(), "max_source_positions": 5})).eval()
  sd = {k: (v[:5] if k == "embed_positions.weight" else v) for k, v in model.state_dict().items()}
  cut.load_state_dict(sd)
  x = _mels(80, 9, seed=3)  # odd length: ceil(9 / 2) = 5 encoder frames (transformers' forward wants 10)
  with torch.no_grad():  # transformers' forward, step by step, without its length check
    h = torch.nn.functional.gelu(cut.conv2(torch.nn.functional.gelu(cut.conv1(x)))).permute(0, 2, 1)
    h = h + cut.embed_positions.weight
    for layer in cut.layers:
      h = layer(h, None)
    ref = cut.layer_norm(h).numpy()
  out = fwd(params, _time_major(x))
  assert out.shape == (2, 5, 18)
  assert rel_err(out, ref) < RTOL
  with pytest.raises(DataError, match="max_source_positions"):
    module.apply({"params": params}, jnp.zeros((1, 17, 80)))
  with pytest.raises(DataError, match="time-major"):
    module.apply({"params": params}, jnp.zeros((1, 80, 16)))


def test_init_has_sinusoids_and_fp32_params():
  module = WhisperEncoder(WhisperEncoderConfig(num_mel_bins=12, d_model=16, encoder_layers=2,
                                               encoder_attention_heads=2, encoder_ffn_dim=20,
                                               max_source_positions=6, dtype="bfloat16"))
  from transformers.models.whisper.modeling_whisper import sinusoids
  np.testing.assert_allclose(whisper_sinusoids(6, 16), sinusoids(6, 16).numpy(), rtol=1e-6, atol=1e-6)
  variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 12, 12)))
  params = nn_unbox(variables["params"])
  np.testing.assert_allclose(params["embed_positions"]["embedding"], whisper_sinusoids(6, 16), atol=1e-6)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  assert params["layers"]["self_attn"]["q_proj"]["kernel"].shape == (2, 16, 16)
  assert "bias" not in params["layers"]["self_attn"]["k_proj"]
  out = jax.jit(module.apply)({"params": params}, jnp.ones((1, 12, 12)))
  assert out.dtype == jnp.bfloat16 and out.shape == (1, 6, 16)


def nn_unbox(tree):
  import flax.linen as nn
  return nn.meta.unbox(tree)


def test_every_param_has_logical_axes(models):
  import flax.linen as nn
  _, module, _, _ = models["mels12_4heads"]
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 4, 12))))["params"]
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
  assert boxed["conv2"]["kernel"].names == ("conv_kernel", "conv_in", "conv_out")


def test_attention_mask_hides_padded_frames(models):
  """With frames >= m masked, inputs that only reach masked encoder frames (input frames >= 2m + 1) do not
  change the first m outputs; without the mask they do."""
  model, module, params, fwd = models["mels80_3heads"]
  x = _time_major(_mels(80, 16, seed=4))
  y = x.at[:, 11:].set(5.0)  # m = 5: encoder frames < 5 read input frames <= 10
  mask = (jnp.arange(8) < 5).astype(jnp.int32)[None].repeat(2, 0)
  f = jax.jit(lambda p, x, m: module.apply({"params": p}, x, attention_mask=m))
  a, b = np.asarray(f(params, x, mask)), np.asarray(f(params, y, mask))
  np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=0, atol=1e-5)
  assert np.abs(np.asarray(fwd(params, x))[:, :5] - np.asarray(fwd(params, y))[:, :5]).max() > 1e-3
  np.testing.assert_allclose(f(params, x, jnp.ones((2, 8), jnp.int32)), fwd(params, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls_name", ["WhisperModel", "WhisperForConditionalGeneration"])
def test_export_keeps_imported_config_and_loads_in_its_class(cls_name, tmp_path):
  """A full-model directory -> ours -> export: config.json keeps the decoder's sizes, vocab and token ids, and
  WhisperModel / the imported class load it (decoder newly initialised) with the encoder outputs unchanged."""
  import transformers
  cls = getattr(transformers, cls_name)
  kw = CONFIGS["mels12_4heads"]  # d_model 16: transformers' default 6 decoder heads do not divide it
  torch.manual_seed(5)
  full = _randomize(cls(transformers.WhisperConfig(**kw, **SMALL_DECODER, dropout=0.0,
                                                    begin_suppress_tokens=[5, 7])))
  module, params, _ = export_round_trip(full, tmp_path)
  x = _mels(12, 22, seed=6)
  with torch.no_grad():
    ref = full.get_encoder()(x).last_hidden_state.numpy()
  np.testing.assert_allclose(module.apply({"params": params}, _time_major(x)), ref, rtol=1e-4, atol=1e-5)
  for load_cls in dict.fromkeys((transformers.WhisperModel, cls)):
    back = load_cls.from_pretrained(str(tmp_path / "out")).eval()
    assert back.config.decoder_attention_heads == 1 and back.config.vocab_size == 40
    with torch.no_grad():
      np.testing.assert_allclose(back.get_encoder()(x).last_hidden_state.numpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("architecture", ["WhisperEncoder", "WhisperModel"])
def test_export_from_scratch_loads_in_whisper_model(architecture, tmp_path):
  """No imported config: the export names a decoder as wide as the encoder (5 heads of 4; transformers' default
  of 6 would not divide 20), so WhisperModel / ...ForConditionalGeneration load it; the encoder-prefixed layout
  gives WhisperModel our encoder outputs."""
  from transformers import WhisperForConditionalGeneration, WhisperModel
  from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder
  module = WhisperEncoder(WhisperEncoderConfig(num_mel_bins=12, d_model=20, encoder_layers=2, encoder_attention_heads=5,
                                               encoder_ffn_dim=24, max_source_positions=6, architecture=architecture))
  params = nn_unbox(jax.jit(module.init)(jax.random.key(1), jnp.zeros((1, 12, 12)))["params"])
  save_pretrained(module, params, str(tmp_path))
  written = json.loads((tmp_path / "config.json").read_text())
  assert (written["decoder_attention_heads"], written["decoder_ffn_dim"], written["decoder_layers"]) == (5, 24, 2)
  x = _mels(12, 12, seed=7)
  ours = np.asarray(module.apply({"params": params}, _time_major(x)))
  full = {cls: cls.from_pretrained(str(tmp_path)).eval() for cls in (WhisperModel, WhisperForConditionalGeneration)}
  encoder = HFEncoder.from_pretrained(str(tmp_path)) if architecture == "WhisperEncoder" else full[WhisperModel].encoder
  with torch.no_grad():
    np.testing.assert_allclose(encoder.eval()(x).last_hidden_state.numpy(), ours, rtol=1e-4, atol=1e-5)
