"""Video Swin (shared.models.swin3d) vs torchvision's SwinTransformer3d (fp32, 1e-5 relative): import of a random
torchvision model (padding to the patch / window, shifted-window mask, shrunk windows), export loaded by
torchvision with strict=True, the full swin3d_t name table on shapes, and per-frame clip features."""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
import flax.linen as nn

from shared.errors import CheckpointError, ConfigError, DataError
from shared.models import swin3d
from shared.models.swin3d import SwinConfig, SwinTransformer3d, clip_features, clip_index
from shared.weights import abstract_params, io, load_pretrained, save_pretrained, table
from shared.weights import swin3d_family as fam

RTOL = 1e-5
# 2 stages (one patch merging), 2 heads / 4 heads, window (2, 3, 3): shift (1, 1, 1) on the odd blocks
TINY = dict(patch_size=[2, 2, 2], embed_dim=12, depths=[2, 2], num_heads=[2, 4], window_size=[2, 3, 3])
NUM_CLASSES = 5
# [B, T, H, W]: (a) sizes not multiples of the patch; stage 0 tokens (5, 8, 9) -> >= 2 windows per axis and
# padding to the window, odd W into the patch merging; stage 1 (5, 4, 5): still shifted with >= 2 windows.
# (b) tokens (2, 3, 4), then (2, 2, 2): windows shrink to the input (no shift on those axes); stage 1's window
# (2, 2, 2) reads torchvision's bias index cut to [:8, :8].
SHAPES = [(2, 9, 15, 17), (1, 3, 5, 7)]
FEATURE_SHAPES = [(2, 5, 4, 5, 24), (1, 2, 2, 2, 24)]   # T/2, H/4, W/4 rounded up (patch 2, one merging)


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def build_tv(num_classes=NUM_CLASSES, seed=0, **over):
  from torchvision.models.video.swin_transformer import SwinTransformer3d as TV
  torch.manual_seed(seed)
  model = TV(**{**TINY, **over}, num_classes=num_classes, stochastic_depth_prob=0.0)
  with torch.no_grad():
    for name, p in model.named_parameters():   # larger than torchvision's init, so every term matters
      if "norm" in name:
        p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
      else:
        p.normal_(0.0, 0.3 if p.ndim >= 2 else 0.1)
  return model.eval()


def tv_outputs(model, x):
  """torchvision on our channels-last x -> (features after the final norm [B, T', H', W', F], logits)."""
  got = {}
  hook = model.norm.register_forward_hook(lambda m, i, o: got.__setitem__("f", o))
  try:
    with torch.no_grad():
      logits = model(torch.from_numpy(np.asarray(x)).permute(0, 4, 1, 2, 3))
  finally:
    hook.remove()
  return got["f"].numpy(), logits.numpy()


def _all(m, x):
  f = m(x)
  pooled = jnp.mean(f, axis=(1, 2, 3))
  return f, pooled, (m.head(pooled) if m.config.num_classes else pooled)


@functools.lru_cache(maxsize=None)
def _jitted(config: SwinConfig, method):
  module = SwinTransformer3d(config)
  return jax.jit(lambda p, x: module.apply({"params": p}, x, method=method))


def run(module, params, x, method=_all):
  """Jitted module.apply (one compile per config, method and shape): _all -> (features, pooled, logits)."""
  return _jitted(module.config, method)(params, x)


def video(shape, seed=0):
  return np.random.RandomState(seed).randn(*shape, 3).astype(np.float32)


@pytest.fixture(scope="module")
def tv_model():
  return build_tv()


@pytest.fixture(scope="module")
def imported(tv_model):
  module = SwinTransformer3d(SwinConfig(**TINY, num_classes=NUM_CLASSES))
  return module, fam.from_torch_state_dict(tv_model.state_dict(), module)


def test_import_parity(tv_model, imported):
  module, params = imported
  for shape, want in zip(SHAPES, FEATURE_SHAPES):
    x = video(shape)
    ref_f, ref_logits = tv_outputs(tv_model, x)
    f, _, logits = run(module, params, x)
    assert f.shape == ref_f.shape == want
    assert rel_err(f, ref_f) <= RTOL, (shape, rel_err(f, ref_f))
    assert rel_err(logits, ref_logits) <= RTOL, (shape, rel_err(logits, ref_logits))
  x = video(SHAPES[1])   # the module's own pooled / logits methods
  np.testing.assert_allclose(module.apply({"params": params}, x, method=SwinTransformer3d.logits),
                             tv_outputs(tv_model, x)[1], rtol=1e-5, atol=1e-5)


def test_shift_mask_and_bias_matter(tv_model, imported, monkeypatch):
  """The parity above fails without the shifted-window mask, and without the relative position bias."""
  module, params = imported
  x = video(SHAPES[0])
  ref_f, _ = tv_outputs(tv_model, x)
  _jitted.cache_clear()
  real = swin3d.shift_labels
  monkeypatch.setattr(swin3d, "shift_labels", lambda *a: np.zeros_like(real(*a)))   # one region: no mask
  assert rel_err(run(module, params, x)[0], ref_f) > 1e-3     # a new trace (the cache is keyed by method)
  monkeypatch.undo()
  flat = traverse_util.flatten_dict(params)
  flat = {k: (jnp.zeros_like(v) if k[-1] == "relative_position_bias_table" else v) for k, v in flat.items()}
  _jitted.cache_clear()   # retrace with the real shift_labels
  assert rel_err(run(module, traverse_util.unflatten_dict(flat), x)[0], ref_f) > 1e-3


def test_shift_mask_regions():
  """torchvision's regions per axis: [0, P-w), [P-w, P-s), [P-s, P); -100 across regions."""
  m = swin3d.shift_mask((2, 6, 3), (2, 3, 3), (0, 1, 0))      # only H shifted: 2 windows along H
  assert m.shape == (2, 18, 18)
  assert not m[0].any()                                        # the first H window lies in region 0
  row = m[1].reshape(2, 3, 3, 2, 3, 3)                         # H rows 3, 4 (region 1) vs 5 (region 2)
  assert (row[:, :2, :, :, :2, :] == 0).all() and (row[:, :2, :, :, 2, :] == -100).all()


def test_export_strict_load(tmp_path):
  """Our random params -> to_torch_state_dict / save_pretrained -> torchvision load_state_dict(strict=True)."""
  from safetensors.torch import load_file
  module = SwinTransformer3d(SwinConfig(**TINY, num_classes=NUM_CLASSES))
  x = video(SHAPES[0], seed=1)
  params = nn.meta.unbox(jax.jit(module.init)(jax.random.key(3), x)["params"])
  rng = np.random.RandomState(3)
  params = jax.tree.map(lambda p: p + 0.2 * rng.randn(*p.shape).astype(np.float32), params)
  ours_f, _, ours_logits = run(module, params, x)
  sd = fam.to_torch_state_dict(params, module)
  tv = build_tv(seed=9)
  tv.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  assert sd["features.0.1.attn.relative_position_index"].dtype == np.int64
  ref_f, ref_logits = tv_outputs(tv, x)
  assert rel_err(ours_f, ref_f) <= RTOL and rel_err(ours_logits, ref_logits) <= RTOL
  save_pretrained(module, params, str(tmp_path / "out"))       # the directory holds the same tensors
  tv2 = build_tv(seed=10)
  tv2.load_state_dict(load_file(str(tmp_path / "out" / "model.safetensors")), strict=True)
  assert rel_err(tv_outputs(tv2, x)[1], ref_logits) <= RTOL
  module2, params2 = load_pretrained(str(tmp_path / "out"))
  assert module2.config == module.config
  assert rel_err(run(module2, params2, x)[0], ours_f) == 0.0


def test_headless_and_torchvision_dir(tv_model, tmp_path):
  """Features-only model: torchvision's whole state dict (head, index buffers) in a directory with our config.json
  loads; its export misses only head.* in torchvision; mis-shaped keys are named."""
  from safetensors.torch import save_file
  module = SwinTransformer3d(SwinConfig(**TINY))
  save_file({k: v.contiguous() for k, v in tv_model.state_dict().items()}, str(tmp_path / "model.safetensors"))
  cfg = fam._to_config(module)
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  assert cfg["num_classes"] == 0 and cfg["window_size"] == [2, 3, 3]
  module2, params = load_pretrained(str(tmp_path))
  x = video(SHAPES[1], seed=2)
  assert rel_err(run(module2, params, x)[0], tv_outputs(tv_model, x)[0]) <= RTOL
  sd = fam.to_torch_state_dict(params, module2)
  missing, unexpected = build_tv(seed=4).load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
  assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected
  bad = dict(tv_model.state_dict())
  bad["features.2.1.attn.qkv.weight"] = bad["features.2.1.attn.qkv.weight"][:, :5]
  with pytest.raises(CheckpointError, match=r"features\.2\.1\.attn\.qkv\.weight"):
    fam.from_torch_state_dict(bad, module)
  with pytest.raises(CheckpointError, match="no key starts with prefix"):
    fam.from_torch_state_dict(tv_model.state_dict(), module, prefix="encoder.")


def test_swin3d_t_table():
  """The real Swin-T on shapes only: param count = torchvision's swin3d_t() minus the head; the table covers every
  key of its state dict (index buffers as constants, head ignored), shapes agree both ways."""
  from torchvision.models.video import swin3d_t
  tv = swin3d_t()
  module = SwinTransformer3d(swin3d.swin3d_t())
  shapes = abstract_params(module)
  n_ours = sum(int(np.prod(s)) for s in shapes.values())
  n_tv = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("head."))
  assert n_ours == n_tv == 28_158_070 - (768 * 400 + 400)
  all_rows = fam.rows(module)
  rows = table.leaf_rows(all_rows)
  table.check_coverage(rows, shapes)
  sd = tv.state_dict()
  found = table.match_tensors(rows, io.StateDictReader(sd), shapes,
                              fam.ignore(module) + tuple(table.constant_ignore(all_rows)))
  assert not found, found
  consts = {k for r in all_rows if r.constant is not None for k in r.their_keys()}
  assert consts == {k for k in sd if k.endswith("relative_position_index")} and len(consts) == 12
  for key, shape, dtype, produce in table.constant_specs(all_rows):
    assert np.array_equal(produce(), sd[key].numpy()) and dtype == np.int64
  assert {k for r in rows for k in r.their_keys()} | consts == {k for k in sd if not k.startswith("head.")}
  assert shapes[("stage0_block0", "attn", "relative_position_bias_table")] == (2535, 3)
  out = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((1, 16, 112, 112, 3))),
                       jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 3)))))
  assert out.shape == (1, 8, 4, 4, 768)


def test_clip_features(imported):
  module, params = imported
  v = video((2, 7, 8, 8), seed=5)
  idx = clip_index(7, 4, 1, "same")
  assert idx.shape == (7, 4) and idx[0].tolist() == [0, 0, 0, 1] and idx[3].tolist() == [1, 2, 3, 4]
  assert clip_index(7, 4, 2, "same").shape == (4, 4) and clip_index(7, 4, 2, "valid").tolist() == [
      [0, 1, 2, 3], [2, 3, 4, 5]]
  feats = jax.jit(lambda p, x: clip_features(module, p, x, window=4, stride=1))(params, v)
  assert feats.shape == (2, 7, 24)
  for k in (0, 3, 6):   # clip k alone through the backbone
    alone = run(module, params, v[:, idx[k]])[1]
    np.testing.assert_allclose(feats[:, k], alone, rtol=1e-5, atol=1e-5)
  mapped = jax.jit(lambda p, x: clip_features(module, p, x, window=4, stride=2, padding="valid", batch_size=3))(
      params, v)
  assert mapped.shape == (2, 2, 24)
  np.testing.assert_allclose(mapped, np.stack(
      [run(module, params, v[:, s:s + 4])[1] for s in (0, 2)], 1),
      rtol=1e-5, atol=1e-5)
  with pytest.raises(DataError, match="fewer than the clip window"):
    clip_index(3, 4, 1, "valid")
  with pytest.raises(DataError, match="channels-last"):
    module.apply({"params": params}, np.zeros((1, 3, 4, 8, 8), np.float32))


def test_config_and_remat():
  with pytest.raises(ConfigError, match="num_heads"):
    SwinConfig(embed_dim=12, depths=(2,), num_heads=(5,))
  with pytest.raises(ConfigError, match="clip_padding"):
    SwinConfig(clip_padding="causal")
  one_stage = {**TINY, "depths": [2], "num_heads": [2]}
  module = SwinTransformer3d(SwinConfig(**one_stage))
  x = video((1, 4, 6, 6), seed=6)
  params = nn.meta.unbox(jax.jit(module.init)(jax.random.key(0), x)["params"])
  loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x) ** 2)))(params)
  g = loss(module)
  g_remat = loss(SwinTransformer3d(SwinConfig(**one_stage, remat_policy="full")))
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  drop = SwinTransformer3d(SwinConfig(**one_stage, stochastic_depth_prob=0.9))
  train = jax.jit(lambda p, x, key: drop.apply({"params": p}, x, False, rngs={"dropout": key}))
  y = run(module, params, x)[0]
  assert not np.allclose(train(params, x, jax.random.key(1)), y)
  assert np.array_equal(run(drop, params, x)[0], y)    # deterministic: no stochastic depth
