"""Wan2.x video DiT vs diffusers' WanTransformer3DModel (small random configs), both directions.

Configs: "ti2v" (Wan2.2 TI2V-style: 12 in/out channels, cross-attn norm, head_dim 32 -> RoPE t/h/w 12/10/10),
"t2v_pt2" (temporal patch 2, no cross-attn norm, in 4 / out 6, head_dim 16 -> 8/4/4), "i2v" (Wan2.1 I2V-style
image embedder + image K/V in cross-attention; diffusers hard-codes 512 text tokens there).
Scalar and per-token ([B, L]) timesteps; fp32 tolerance 1e-5 relative. The original-Wan key layout is checked
against diffusers' own single-file converter (convert_wan_transformer_to_diffusers).
"""
from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from flax import traverse_util

import shared.weights
from shared import kernels
from shared.errors import CheckpointError, ConfigError
from shared.mesh import LOGICAL_RULES
from shared.models import wan_dit as W
from shared.weights import wan_dit_family as F

BASE = dict(num_attention_heads=2, text_dim=32, num_layers=2, eps=1e-6)
CONFIGS = {
    "ti2v": (dict(BASE, patch_size=(1, 2, 2), attention_head_dim=32, in_channels=12, out_channels=12, freq_dim=16,
                  ffn_dim=48, cross_attn_norm=True), (3, 8, 8), 7),
    "t2v_pt2": (dict(BASE, patch_size=(2, 2, 2), attention_head_dim=16, in_channels=4, out_channels=6, freq_dim=32,
                     ffn_dim=40, cross_attn_norm=False), (4, 8, 6), 5),
    "i2v": (dict(BASE, patch_size=(1, 2, 2), attention_head_dim=16, in_channels=4, out_channels=4, freq_dim=16,
                 ffn_dim=40, cross_attn_norm=True, image_dim=24, added_kv_proj_dim=32, pos_embed_seq_len=6),
            (2, 4, 4), 512),
}
TOL = 1e-5


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _ours(x):  # torch [B, C, T, H, W] -> ours [B, T, H, W, C]
  return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 4, 1))


def _theirs(y):
  return np.asarray(y).transpose(0, 4, 1, 2, 3)


def _randomize(model, seed=0):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "scale_shift_table" in name:
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
      elif p.ndim >= 2:
        p.copy_(torch.randn(p.shape, generator=g) * 0.2)
      elif name.endswith("bias"):
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
      else:  # norm weights around 1
        p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
  return model.eval()


class Case:
  def __init__(self, name):
    kw, (T, H, Wd), text_len = CONFIGS[name]
    torch.manual_seed(0)
    self.torch_model = _randomize(WanTransformer3DModel(**kw))
    self.config = F.config_from_diffusers(dict(self.torch_model.config))
    self.model = W.WanDiT(self.config)
    self.params = F.import_wan_dit(self.torch_model.state_dict(), self.config)
    g = torch.Generator().manual_seed(1)
    self.x = torch.randn(2, kw["in_channels"], T, H, Wd, generator=g)
    self.text = torch.randn(2, text_len, kw["text_dim"], generator=g)
    # FLF2V-style image embedder (pos_embed_seq_len 6): first + last frame embeddings, 3 tokens each, per sample
    self.image = torch.randn(4, 3, kw["image_dim"], generator=g) if kw.get("image_dim") else None
    pt, ph, pw = kw["patch_size"]
    self.num_tokens = (T // pt) * (H // ph) * (Wd // pw)
    self.apply = jax.jit(self.model.apply)

  def torch_out(self, t, model=None):
    model = model or self.torch_model
    enc = dict(encoder_hidden_states=self.text)
    if self.image is not None:
      enc["encoder_hidden_states_image"] = self.image
    with torch.no_grad():
      return model(self.x, torch.as_tensor(t, dtype=torch.float32), **enc).sample.numpy()

  def ours(self, t, params=None):
    image = None if self.image is None else jnp.asarray(self.image.numpy())
    out = self.apply({"params": params or self.params}, _ours(self.x), jnp.asarray(np.asarray(t, np.float32)),
                     jnp.asarray(self.text.numpy()), image)
    return _theirs(out)


@functools.lru_cache(maxsize=None)
def case(name) -> Case:
  return Case(name)


def _flat(params):
  return traverse_util.flatten_dict(nn.meta.unbox(params))


@pytest.mark.parametrize("name", ["ti2v", "t2v_pt2", "i2v"])
def test_import_parity_scalar_timesteps(name):
  c = case(name)
  t = [937.0, 12.5]
  ref = c.torch_out(t)
  assert np.abs(ref).max() > 0.5
  assert _rel(c.ours(t), ref) < TOL


def test_import_parity_per_token_timesteps():
  """Wan2.2 TI2V: timestep [B, L]; first-frame tokens clean (t=0), the rest noisy; and fully random."""
  c = case("ti2v")
  per_frame = c.num_tokens // 3
  ti2v = np.full((2, c.num_tokens), 700.0, np.float32)
  ti2v[:, :per_frame] = 0.0
  ti2v[1, per_frame:] = 250.0
  rand = np.random.default_rng(0).uniform(0, 1000, (2, c.num_tokens)).astype(np.float32)
  for t in (ti2v, rand):
    assert _rel(c.ours(t), c.torch_out(t)) < TOL
  # a per-token timestep that is constant over tokens equals the scalar timestep
  const = np.repeat(np.array([[300.0], [40.0]], np.float32), c.num_tokens, axis=1)
  np.testing.assert_allclose(c.ours(const), c.ours([300.0, 40.0]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["ti2v", "i2v"])
def test_export_loads_in_diffusers(name, tmp_path):
  """Perturbed params -> save_pretrained -> WanTransformer3DModel.from_pretrained -> same output; load back."""
  c = case(name)
  rng = np.random.default_rng(3)
  params = jax.tree_util.tree_map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), c.params)
  shared.weights.save_pretrained(c.model, params, str(tmp_path))
  loaded = WanTransformer3DModel.from_pretrained(str(tmp_path)).eval()
  t = [500.0, 3.0]
  ours = c.ours(t, params)
  assert _rel(ours, c.torch_out(t, loaded)) < TOL
  assert _rel(ours, c.ours(t)) > 1e-3  # the perturbation mattered
  model, back = F.load_wan_dit(str(tmp_path))
  assert model.config == c.config
  for k, v in _flat(params).items():
    np.testing.assert_array_equal(np.asarray(_flat(back)[k]), np.asarray(v))
  # the in-memory export loads strictly into a fresh diffusers model
  fresh = WanTransformer3DModel(**CONFIGS[name][0])
  fresh.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in F.export_wan_dit(params, c.config).items()}, strict=True)
  assert _rel(c.torch_out(t, fresh.eval()), ours) < TOL


@pytest.mark.parametrize("name", ["ti2v", "i2v"])
def test_original_layout_round_trip(name, tmp_path):
  c = case(name)
  sd = {k: v.numpy() for k, v in c.torch_model.state_dict().items()}
  orig = F.diffusers_to_original(sd, c.config)
  for key in ("blocks.1.self_attn.q.weight", "blocks.0.cross_attn.o.bias", "blocks.0.ffn.2.weight",
              "blocks.1.modulation", "head.head.weight", "head.modulation", "time_embedding.2.bias",
              "time_projection.1.weight", "text_embedding.0.weight", "patch_embedding.weight",
              "blocks.0.cross_attn.norm_k.weight") + (
      ("blocks.1.cross_attn.k_img.weight", "blocks.0.cross_attn.norm_k_img.weight", "img_emb.proj.4.bias",
       "img_emb.emb_pos") if c.config.image_dim else ()):
    assert key in orig, key
  assert ("blocks.0.norm3.weight" in orig) == c.config.cross_attn_norm and not any(".norm2." in k for k in orig)
  # diffusers' own converter maps our original-layout keys back to exactly their state_dict
  back = convert_wan_transformer_to_diffusers({F.ORIGINAL_PREFIX + k: torch.from_numpy(v) for k, v in orig.items()})
  if "img_emb.emb_pos" in back:  # that converter lacks the FLF2V rename; diffusers' scripts/convert_wan_to_diffusers.py
    back["condition_embedder.image_embedder.pos_embed"] = back.pop("img_emb.emb_pos")  # maps it like this
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k].numpy(), sd[k])
  # original keys -> ours gives the same params; ours -> original keys gives the same tensors
  p_orig = F.import_wan_dit({F.ORIGINAL_PREFIX + k: v for k, v in orig.items()}, c.config, layout="original")
  for k, v in _flat(c.params).items():
    np.testing.assert_array_equal(np.asarray(_flat(p_orig)[k]), np.asarray(v))
  exported = F.export_wan_dit(c.params, c.config, layout="original")
  assert sorted(exported) == sorted(orig)
  for k in orig:
    np.testing.assert_array_equal(exported[k], orig[k])
  assert sorted(F.original_to_diffusers(orig, c.config)) == sorted(sd)
  if c.config.image_dim is None:  # an original-layout directory (config.json of WanModel) loads back
    F.save_wan_dit(c.model, c.params, str(tmp_path), layout="original")
    model, p_dir = F.load_wan_dit(str(tmp_path))
    assert model.config == c.config
    assert _rel(c.ours([10.0, 900.0], p_dir), c.ours([10.0, 900.0])) == 0.0
    model, p_dir = shared.weights.load_pretrained(str(tmp_path))  # via config.json model_type "ti2v"
    assert isinstance(model, W.WanDiT) and model.config == c.config
    for k, v in _flat(c.params).items():
      np.testing.assert_array_equal(np.asarray(_flat(p_dir)[k]), np.asarray(v))


def test_block_stages_joint_attention():
  """A parent running ONE attention over two token groups through the block's stages (UniTalking's MM-DiT
  pattern, both groups here using the same block) equals the block's own call on the concatenation; stage
  calls equal __call__."""
  c = case("ti2v")
  cfg = c.config
  p0 = jax.tree_util.tree_map(lambda x: x[0], c.params["blocks"])
  rng = np.random.default_rng(0)
  L, S, D = 20, 7, cfg.dim
  h = jnp.asarray(rng.normal(size=(2, L, D)), jnp.float32)
  ctx = jnp.asarray(rng.normal(size=(2, S, D)), jnp.float32)
  tp = jnp.asarray(rng.normal(size=(2, L, 6, D)) * 0.3, jnp.float32)
  pos = jnp.asarray(rng.integers(0, 5, size=(2, L, 3)))
  ang = W.rope_angles(pos, cfg)
  block = W.WanBlock(cfg)
  run = jax.jit(block.apply)
  full = run({"params": p0}, h, ctx, tp, ang)

  def staged(m, h, ctx, tp, ang, split):
    parts = [(h[:, :split], tp[:, :split], ang[:, :split]), (h[:, split:], tp[:, split:], ang[:, split:])]
    mods = [m.modulation(t) for _, t, _ in parts]
    qkvs = [m.qkv(m.pre_attention(x, mod), a) for (x, _, a), mod in zip(parts, mods)]
    q, k, v = (jnp.concatenate([qkv[i] for qkv in qkvs], axis=1) for i in range(3))
    o = kernels.attention(q, k, v)
    outs = [m.post_attention(x, oo, mod, ctx) for (x, _, _), oo, mod in zip(parts, (o[:, :split], o[:, split:]), mods)]
    return jnp.concatenate(outs, axis=1)

  joint = jax.jit(functools.partial(block.apply, method=staged), static_argnums=5)({"params": p0}, h, ctx, tp, ang, 8)
  np.testing.assert_allclose(np.asarray(joint), np.asarray(full), rtol=0, atol=1e-5 * float(jnp.abs(full).max()))
  # a context mask hides padded text tokens: changing them leaves the output unchanged
  mask = jnp.asarray([[True] * 5 + [False] * 2] * 2)
  ctx2 = ctx.at[:, 5:].set(7.0)
  a = run({"params": p0}, h, ctx, tp, ang, mask)
  b = run({"params": p0}, h, ctx2, tp, ang, mask)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
  assert float(jnp.abs(a - full).max()) > 1e-3
  # the extra (image / reference-audio) K/V of an I2V block: masked tokens do not matter, unmasked ones do
  ci = case("i2v").config
  pi = jax.tree_util.tree_map(lambda x: x[0], case("i2v").params["blocks"])
  hi, ctxi, tpi = h[..., :ci.dim], ctx[..., :ci.dim], tp[..., :ci.dim]
  img = jnp.asarray(rng.normal(size=(2, 4, ci.dim)), jnp.float32)
  run_i = jax.jit(W.WanBlock(ci).apply)
  angi = W.rope_angles(pos, ci)
  imask = jnp.asarray([[True, True, False, False]] * 2)
  a = run_i({"params": pi}, hi, ctxi, tpi, angi, None, img, imask)
  b = run_i({"params": pi}, hi, ctxi, tpi, angi, None, img.at[:, 2:].set(-3.0), imask)
  d = run_i({"params": pi}, hi, ctxi, tpi, angi, None, img.at[:, :2].set(-3.0), imask)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
  assert float(jnp.abs(a - d).max()) > 1e-3


def test_remat_gradients_match_torch_and_logical_axes():
  """Loss gradients of the remat'd, scanned model (per-token timesteps) equal torch autograd's, param by param."""
  c = case("ti2v")
  x, text = _ours(c.x), jnp.asarray(c.text.numpy())
  t = np.array([[0.0] * 16 + [600.0] * 32] * 2, np.float32)
  remat = W.WanDiT(c.config.replace(remat_policy="full"))
  loss = lambda p: jnp.mean(jnp.square(remat.apply({"params": p}, x, jnp.asarray(t), text)))  # noqa: E731
  value, grads = jax.jit(jax.value_and_grad(loss))(c.params)
  model = c.torch_model
  model.zero_grad()
  ref = torch.mean(torch.square(model(c.x, torch.from_numpy(t), encoder_hidden_states=c.text).sample))
  ref.backward()
  assert abs(float(value) - float(ref)) <= 1e-5 * float(ref)
  ours = F.export_wan_dit(grads, c.config)
  for k, p in model.named_parameters():
    g = p.grad.numpy()
    assert np.abs(g).max() > 0, k
    assert _rel(ours[k], g) < 1e-4, k
  model.zero_grad(set_to_none=True)
  # every parameter carries logical axes; stacked block params lead with "layers"
  boxed = jax.eval_shape(lambda: c.model.init(jax.random.key(0), *F.example_inputs(c.model)))["params"]
  for path, leaf in traverse_util.flatten_dict(boxed).items():
    assert isinstance(leaf, nn.LogicallyPartitioned), path
    assert len(leaf.names) == leaf.value.ndim, path
    assert (leaf.names[0] == "layers") == (path[0] == "blocks"), path


def test_sharded_forward_equals_single_device():
  """Params sharded by the logical rules over a (data 2, fsdp 2, tensor 2) mesh give the same output."""
  c = case("ti2v")
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = tuple((n, a if a is None or all(x in mesh.axis_names for x in ((a,) if isinstance(a, str) else a))
                 else None) for n, a in LOGICAL_RULES)
  boxed = jax.eval_shape(lambda: c.model.init(jax.random.key(0), *F.example_inputs(c.model)))["params"]
  p_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  assert p_sh["blocks"]["attn1"]["to_q"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  x = jnp.concatenate([_ours(c.x)] * 2)
  text = jnp.concatenate([jnp.asarray(c.text.numpy())] * 2)
  t = jnp.asarray([[0.0] * 16 + [600.0] * 32] * 4)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    out = jax.jit(c.model.apply)({"params": jax.device_put(c.params, p_sh)}, x, t, text)
  ref = c.apply({"params": c.params}, x, t, text)
  assert _rel(out, ref) < 1e-5


def test_bfloat16_compute_close():
  c = case("t2v_pt2")
  t = [250.0, 800.0]
  model = W.WanDiT(c.config.replace(dtype="bfloat16"))
  out = jax.jit(model.apply)({"params": c.params}, _ours(c.x), jnp.asarray(t), jnp.asarray(c.text.numpy()))
  assert out.dtype == jnp.float32
  assert _rel(_theirs(out), c.torch_out(t)) < 5e-2


def test_full_size_ti2v_5b_name_table_matches_diffusers():
  """Wan2.2-TI2V-5B (SPECS.md): every diffusers key of the full model (meta device) has a row with matching
  shape, and the model has ~5B parameters; RoPE split 44/42/42."""
  kw = dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
            text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True, eps=1e-6)
  with torch.device("meta"):
    theirs = {k: tuple(v.shape) for k, v in WanTransformer3DModel(**kw).state_dict().items()}
  cfg = F.config_from_diffusers(kw)
  assert cfg.rope_dims == (44, 42, 42)
  shapes = F.param_shapes(cfg)
  rows = F.name_table(cfg)
  assert sorted(k for r in rows for k in r.their_keys()) == sorted(theirs)
  for r in rows:
    want = shapes[r.path][1:] if r.stacked else shapes[r.path]
    got = jax.eval_shape(r.transform.to_ours, jax.ShapeDtypeStruct(theirs[r.their_keys()[0]], jnp.float32)).shape
    assert tuple(got) == tuple(want), r.theirs
  n = sum(int(np.prod(s)) for s in shapes.values())
  assert n == sum(int(np.prod(s)) for s in theirs.values()) and 4.9e9 < n < 5.1e9, n


def test_errors_name_what_is_wrong():
  c = case("t2v_pt2")
  with pytest.raises(ConfigError, match="timestep has shape"):
    c.model.apply({"params": c.params}, _ours(c.x), jnp.zeros((2, 5)), jnp.asarray(c.text.numpy()))
  with pytest.raises(ConfigError, match="multiples of patch"):
    c.model.apply({"params": c.params}, jnp.zeros((1, 3, 8, 6, 4)), jnp.zeros((1,)), jnp.zeros((1, 2, 32)))
  with pytest.raises(ConfigError, match="not a setting"):
    F.config_from_diffusers({**F.config_to_diffusers(c.config), "bogus": 1})
  sd = dict(c.torch_model.state_dict())
  sd.pop("blocks.1.ffn.net.2.weight")
  with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.ffn.net.2.weight'\]"):
    F.import_wan_dit(sd, c.config)


def test_original_layout_keeps_imported_config_fields(tmp_path):
  """An original-layout directory's keys we do not model (model_type t2v, text_len, window_size, qk_norm) come
  back unchanged from save_wan_dit(layout="original") (it wrote model_type ti2v, which Wan2.1's WanModel rejects);
  the diffusers export of the same import is unchanged."""
  c = case("ti2v")
  F.save_wan_dit(c.model, c.params, str(tmp_path / "in"), layout="original")
  cfg = json.loads((tmp_path / "in" / "config.json").read_text())
  cfg.update(model_type="t2v", text_len=256, window_size=[-1, -1], qk_norm=True)
  (tmp_path / "in" / "config.json").write_text(json.dumps(cfg))
  for i, load in enumerate((F.load_wan_dit, shared.weights.load_pretrained)):
    model, params = load(str(tmp_path / "in"))
    assert model.config == c.config  # hf_extra is metadata: not compared
    F.save_wan_dit(model, params, str(tmp_path / f"out{i}"), layout="original")
    assert json.loads((tmp_path / f"out{i}" / "config.json").read_text()) == cfg
  assert F.config_to_original(model.config, model_type="ti2v")["model_type"] == "ti2v"
  shared.weights.save_pretrained(model, params, str(tmp_path / "diffusers"))
  assert json.loads((tmp_path / "diffusers" / "config.json").read_text()) == F.config_to_diffusers(c.config)
