"""UniTalking MM-DiT: TV2A mask semantics, video stream == WanDiT, stage-1 audio-only path, per-token clean."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.errors import ConfigError
from shared.models.wan_dit import WanDiT, WanDiTConfig
from unitalking_jax.model import UniTalking, UniTalkingConfig, wan_params

B, T, H, W, C = 2, 3, 4, 4, 12
TA, CA = 6, 8
_JIT: dict = {}


def run(net, params, x, flags=None):
  """net.apply jitted once per (variant, flags given) - the module's tests share one model config."""
  key = (net.tv2a, net.audio_only, flags is None)
  if key not in _JIT:
    _JIT[key] = jax.jit(lambda p, a, f: net.apply({"params": p}, **a, tv2a_flags=f))
  return _JIT[key](params, x, flags)


@pytest.fixture(scope="module")
def setup():
  v = WanDiTConfig(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=C,
                   out_channels=C, text_dim=16, freq_dim=32, ffn_dim=48, num_layers=2, attention_impl="xla")
  c = UniTalkingConfig(v, audio_channels=CA, audio_patch=2, audio_ffn_dim=40, ref_dim=6, text_vocab=20)
  model = UniTalking(c)
  ks = jax.random.split(jax.random.key(1), 6)
  inputs = dict(
      video=jax.random.normal(ks[0], (B, T, H, W, C)), audio=jax.random.normal(ks[1], (B, TA, CA)),
      t_video=jax.random.uniform(ks[2], (B, T * 4)) * 1000, t_audio=jnp.array([300.0, 800.0]),
      text=jnp.array([[3, 5, 7, 0], [2, 9, 0, 0]]), ref=jax.random.normal(ks[3], (B, 5, 6)))
  inputs["text_mask"] = inputs["text"] != 0
  params = nn.meta.unbox(jax.jit(lambda r, a: model.init(r, **a))(jax.random.key(0), inputs)["params"])
  # non-zero scale_shift_tables / biases everywhere so no path is trivially zero
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(ks[4], p.shape), params)
  return model, params, inputs


def test_shapes_and_param_tree(setup):
  model, params, x = setup
  ov, oa = run(model, params, x)
  assert ov.shape == (B, T, H, W, C) and oa.shape == (B, TA, CA)
  assert np.isfinite(np.asarray(ov)).all() and np.isfinite(np.asarray(oa)).all()
  blocks = params["blocks"]
  assert set(blocks) == {"video", "audio"}
  # symmetric dual stream: each modality has its own QKV, output, FFN and modulation
  for s in ("video", "audio"):
    assert {"attn1", "attn2", "ffn", "scale_shift_table"} <= set(blocks[s])
  assert "add_k_proj" in blocks["audio"]["attn2"] and "add_k_proj" not in blocks["video"]["attn2"]


@pytest.mark.parametrize("static", [True, False])
def test_tv2a_audio_cannot_change_video(setup, static):
  """Under TV2A (static block mask or per-example flags), new audio latents leave video outputs bit-identical."""
  model, params, x = setup
  net = model.clone(tv2a=True) if static else model
  flags = None if static else jnp.array([True, True])
  x2 = dict(x, audio=x["audio"] * -3.0 + 1.0, t_audio=jnp.array([10.0, 990.0]))
  v1, a1 = run(net, params, x, flags)
  v2, a2 = run(net, params, x2, flags)
  np.testing.assert_array_equal(np.asarray(v1), np.asarray(v2))
  assert not np.allclose(np.asarray(a1), np.asarray(a2))
  # and without the mask audio does reach the video stream
  v3, _ = run(model, params, x2)
  v0, _ = run(model, params, x)
  assert np.abs(np.asarray(v3) - np.asarray(v0)).max() > 1e-4


def test_per_example_flags_match_static_mask(setup):
  model, params, x = setup
  vs, as_ = run(model.clone(tv2a=True), params, x)
  vf, af = run(model, params, x, jnp.array([True, False]))
  np.testing.assert_allclose(np.asarray(vf[0]), np.asarray(vs[0]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(af[0]), np.asarray(as_[0]), rtol=1e-5, atol=1e-5)
  vn, _ = run(model, params, x)
  np.testing.assert_allclose(np.asarray(vf[1]), np.asarray(vn[1]), rtol=1e-5, atol=1e-5)


def test_video_stream_equals_wandit_under_tv2a(setup):
  """Video queries that see only video keys make the video stream exactly a Wan DiT on the same weights."""
  model, params, x = setup
  v, _ = run(model.clone(tv2a=True), params, x)
  wc = model.config.video
  text_feats = jnp.take(params["text_embed"], x["text"], axis=0)
  ref = WanDiT(wc).apply({"params": wan_params(params)}, x["video"], x["t_video"], text_feats,
                         context_mask=x["text_mask"])
  np.testing.assert_allclose(np.asarray(v), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_audio_only_stage1_path(setup):
  """audio_only runs the audio twin alone on the same param tree; video inputs are not needed."""
  model, params, x = setup
  def energy(p):
    _, a = model.clone(audio_only=True).apply({"params": p}, None, x["audio"], None, x["t_audio"], x["text"],
                                              x["text_mask"], x["ref"])
    assert a.shape == (B, TA, CA)
    return jnp.sum(a ** 2)

  value, grads = jax.jit(jax.value_and_grad(energy))(params)
  assert np.isfinite(float(value))
  assert float(jnp.abs(grads["blocks"]["video"]["attn1"]["to_q"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(grads["blocks"]["audio"]["attn1"]["to_q"]["kernel"]).max()) > 0.0


def test_reference_audio_reaches_audio_stream(setup):
  model, params, x = setup
  _, a1 = run(model, params, x)
  # (a shifted or permuted reference would not do: LayerNorm removes shifts, attention ignores order)
  _, a2 = run(model, params, dict(x, ref=jax.random.normal(jax.random.key(9), x["ref"].shape)))
  assert np.abs(np.asarray(a1) - np.asarray(a2)).max() > 1e-5


def test_text_positions_give_syllable_order(setup):
  """Without a position table the cross-attention sees a bag of syllables: reordering the ids changes nothing;
  with `text_positions` the order reaches both streams. Longer text than the table is a clear error."""
  model, params, x = setup
  flip = dict(x, text=jnp.array([[7, 5, 3, 0], [9, 2, 0, 0]]))   # same syllables, reversed, same mask
  v1, a1 = run(model, params, x)
  v2, a2 = run(model, params, flip)
  np.testing.assert_allclose(np.asarray(a1), np.asarray(a2), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(v1), np.asarray(v2), rtol=1e-5, atol=1e-5)
  pos = model.clone(config=dataclasses.replace(model.config, text_positions=6))
  table = 0.5 * jax.random.normal(jax.random.key(3), (6, model.config.video.text_dim))
  p2 = dict(params, text_pos_embed=table)
  apply = jax.jit(lambda p, a: pos.apply({"params": p}, **a))   # not run(): its cache is per variant, not config
  v1, a1 = apply(p2, x)
  v2, a2 = apply(p2, flip)
  assert np.abs(np.asarray(a1) - np.asarray(a2)).max() > 1e-3
  assert np.abs(np.asarray(v1) - np.asarray(v2)).max() > 1e-3
  with pytest.raises(ConfigError, match="text_positions=2"):
    model.clone(config=dataclasses.replace(model.config, text_positions=2)).apply(
        {"params": dict(params, text_pos_embed=table[:2])}, **x)
  with pytest.raises(ConfigError, match="needs the learned text table"):
    dataclasses.replace(model.config, text_vocab=0, text_positions=4)
