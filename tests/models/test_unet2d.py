"""Conditional 2-D UNet vs diffusers' UNet2DConditionModel (small random configs), both directions.

Configs: "audioldm" (AudioLDM's shape: DownBlock2D + CrossAttnDownBlock2D, cross_attention_dim = block_out_channels so
attn2 attends to the block itself, no encoder states; CLAP-like class labels through a simple_projection class
embedding concatenated to the time embedding; 2 layers per block, 1x1-conv projections); "audioldm_visual" (the same
with an int cross_attention_dim: UniCUE's visual sequence [B, L, d] with a padding mask, per-block heads, 2 transformer
layers per block, scalar timestep, remat); "editor" (a compact image editor: DownBlock2D/UpBlock2D only + the
UNetMidBlock2DCrossAttn mid block, whose attn2 attends to itself; no class embedding, linear projections, odd 15x9
latents, downsample_padding 0, sin/cos not flipped, freq_shift 1, time_embedding_dim, mid_block_scale_factor,
center_input_sample). fp32, 1e-5 relative.
One compiled forward per config serves import and export. The AudioLDM-s-full name table is checked against diffusers
on the meta device (185,036,552 parameters).
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from flax import traverse_util
import flax.linen as nn
from safetensors.torch import save_file

import shared.weights
from shared.errors import CheckpointError, ConfigError
from shared.models import unet2d as U
from shared.weights import unet2d_family as F

TOL = 1e-5
AUDIOLDM_TYPES = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
# name: (diffusers kwargs, latent (H, W), encoder sequence (L, d) | None, class labels dim | None, timesteps)
CONFIGS = {
    "audioldm": (dict(AUDIOLDM_TYPES, in_channels=8, out_channels=8, block_out_channels=(8, 16), layers_per_block=2,
                      norm_num_groups=4, attention_head_dim=2, cross_attention_dim=(8, 16),
                      class_embed_type="simple_projection", projection_class_embeddings_input_dim=24,
                      class_embeddings_concat=True),
                 (16, 8), None, 24, [10.0, 700.0]),
    "audioldm_visual": (dict(AUDIOLDM_TYPES, in_channels=8, out_channels=8, block_out_channels=(8, 16), layers_per_block=1,
                             norm_num_groups=4, attention_head_dim=(1, 4), cross_attention_dim=12,
                             transformer_layers_per_block=2, class_embed_type="simple_projection",
                             projection_class_embeddings_input_dim=24, class_embeddings_concat=True),
                        (16, 8), (5, 12), 24, 420.0),
    "editor": (dict(in_channels=12, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    mid_block_type="UNetMidBlock2DCrossAttn", use_linear_projection=True, norm_num_groups=4,
                    attention_head_dim=2, cross_attention_dim=16, downsample_padding=0, flip_sin_to_cos=False,
                    freq_shift=1, time_embedding_dim=20, mid_block_scale_factor=2.0, center_input_sample=True),
               (15, 9), None, None, [0.0, 999.0]),
}
# AudioLDM-s-full's unet/config.json (diffusers' convert_original_audioldm_to_diffusers.py: no cross-attention in the
# original, so cross_attention_dim = block_out_channels)
AUDIOLDM_S_FULL = dict(sample_size=128, in_channels=8, out_channels=8, block_out_channels=(128, 256, 384, 640),
                       down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                       up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",), layers_per_block=2,
                       attention_head_dim=8, cross_attention_dim=(128, 256, 384, 640),
                       class_embed_type="simple_projection", projection_class_embeddings_input_dim=512,
                       class_embeddings_concat=True)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _nhwc(x):
  return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def _nchw(y):
  return np.asarray(y).transpose(0, 3, 1, 2)


def _randomize(model, seed=0):
  """Weights ~ N(0, 1/fan_in) (activations stay O(1) through the net), biases N(0, 0.1), norms 1 + N(0, 0.1)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim >= 2:
        p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(np.prod(p.shape[1:])))
      elif name.endswith("bias"):
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
      else:
        p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
  return model.eval()


def _perturb(params, seed=1):
  """Our params with every leaf random (fresh init has unit norms and zero biases)."""
  rng = np.random.default_rng(seed)
  out = {}
  for k, v in traverse_util.flatten_dict(nn.meta.unbox(params)).items():
    if k[-1] == "kernel":
      fan_in = int(np.prod(v.shape[:-1]))
      out[k] = rng.normal(size=v.shape) / np.sqrt(fan_in)
    elif k[-1] == "scale":
      out[k] = 1.0 + 0.1 * rng.normal(size=v.shape)
    else:
      out[k] = 0.1 * rng.normal(size=v.shape)
  return traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in out.items()})


class Case:
  """A random diffusers model saved to disk, loaded through shared.weights.load_pretrained, one jitted forward."""

  def __init__(self, name, root):
    kw, (h, w), seq, labels, t = CONFIGS[name]
    torch.manual_seed(0)
    self.torch_model = _randomize(UNet2DConditionModel(**kw))
    self.dir = os.path.join(root, name)
    self.torch_model.save_pretrained(self.dir)
    overrides = dict(remat_policy="full") if name == "audioldm_visual" else {}
    self.model, self.params = shared.weights.load_pretrained(self.dir, **overrides)
    g = torch.Generator().manual_seed(1)
    self.x = torch.randn(2, kw["in_channels"], h, w, generator=g)
    self.t = torch.as_tensor(t, dtype=torch.float32)
    self.context = None if seq is None else torch.randn(2, seq[0], seq[1], generator=g)
    self.mask = None if seq is None else torch.tensor([[1] * seq[0], [1] * (seq[0] - 2) + [0, 0]], dtype=torch.bool)
    self.labels = None if labels is None else torch.nn.functional.normalize(torch.randn(2, labels, generator=g), dim=-1)
    # LLVM -O0: a third less compile time on the CPU test box, the same XLA graph and float semantics
    self.apply = jax.jit(self.model.apply, compiler_options={"xla_backend_optimization_level": 0})

  def torch_out(self, model=None):
    with torch.no_grad():
      return (model or self.torch_model)(self.x, self.t, encoder_hidden_states=self.context,
                                         class_labels=self.labels, encoder_attention_mask=self.mask).sample.numpy()

  def ours(self, params=None):
    arr = lambda v: None if v is None else jnp.asarray(v.numpy())  # noqa: E731
    out = self.apply({"params": self.params if params is None else params}, _nhwc(self.x), arr(self.t),
                     arr(self.context), arr(self.labels), arr(self.mask))
    assert out.dtype == jnp.float32 and out.shape == (2, self.x.shape[2], self.x.shape[3], self.model.config.out_channels)
    return _nchw(out)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("unet2d"))


@functools.lru_cache(maxsize=None)
def _case(name, root) -> Case:
  return Case(name, root)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_parity(name, root):
  """diffusers save_pretrained -> shared.weights.load_pretrained -> the same eps."""
  c = _case(name, root)
  assert isinstance(c.model, U.UNet2DCondition)
  assert c.model.config == F.config_from_diffusers(dict(c.torch_model.config)).replace(
      remat_policy=c.model.config.remat_policy)
  ref = c.torch_out()
  assert np.abs(ref).max() > 0.5
  assert _rel(c.ours(), ref) < TOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_in_diffusers(name, root, tmp_path):
  """Our random params -> save_pretrained -> UNet2DConditionModel.from_pretrained -> the same eps; config.json
  round-trips the modelled keys."""
  c = _case(name, root)
  params = _perturb(c.params)
  shared.weights.save_pretrained(c.model, params, str(tmp_path))
  theirs = UNet2DConditionModel.from_pretrained(str(tmp_path)).eval()
  ours = c.ours(params)
  assert np.abs(ours).max() > 0.5
  assert _rel(ours, c.torch_out(theirs)) < TOL
  written = json.loads((tmp_path / "config.json").read_text())
  for k, v in written.items():
    if not k.startswith("_"):
      want = theirs.config[k]
      assert (list(want) if isinstance(want, tuple) else want) == v, k
  if name != "audioldm":
    return
  # the in-memory export is a strict state_dict of the same model (no unexpected keys either)
  fresh = UNet2DConditionModel(**{k: v for k, v in written.items() if not k.startswith("_")})
  fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in F.export_unet2d(params, c.model.config).items()},
                        strict=True)


@pytest.mark.parametrize("cross", ["self", "visual"])
def test_full_size_audioldm_s_full_name_table(cross):
  """AudioLDM-s-full (SPECS.md): every diffusers key of the full model (meta device) has a row of matching shape;
  ~185M parameters; every ResNet's time_emb_proj reads [C, 1024]; with a visual sequence attn2's to_k is [C, d]."""
  kw = dict(AUDIOLDM_S_FULL, **({"cross_attention_dim": 768} if cross == "visual" else {}))
  with torch.device("meta"):
    theirs = {k: tuple(v.shape) for k, v in UNet2DConditionModel(**kw).state_dict().items()}
  cfg = F.config_from_diffusers(kw)
  shapes = F.param_shapes(cfg)
  rows = F.name_table(cfg)
  assert sorted(k for r in rows for k in r.their_keys()) == sorted(theirs)
  for r in rows:  # transforms applied to zero-stride views: shapes without memory
    got = r.transform.to_ours(np.broadcast_to(np.zeros((), np.float32), theirs[r.theirs])).shape
    assert tuple(got) == shapes[r.path], r.theirs
  n = sum(int(np.prod(s)) for s in shapes.values())
  assert n == sum(int(np.prod(s)) for s in theirs.values())
  assert n == (185_036_552 if cross == "self" else 188_804_872), n
  assert shapes[("down_blocks_2", "resnets_1", "time_emb_proj", "kernel")] == (1024, 384)
  d = 768 if cross == "visual" else 384
  assert shapes[("up_blocks_1", "attentions_0", "transformer_blocks_0", "attn2", "to_k", "kernel")] == (d, 384)
  assert cfg.self_attn2 == (cross == "self") and cfg.context_dim == (768 if cross == "visual" else None)


def test_bad_checkpoint_names_the_key(root, tmp_path):
  c = _case("audioldm", root)
  sd = {k: v.clone() for k, v in c.torch_model.state_dict().items()}
  missing = dict(sd)
  missing.pop("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.weight")
  with pytest.raises(CheckpointError, match=r"missing keys \['up_blocks.0.attentions.1.transformer_blocks.0.attn2"):
    F.import_unet2d(missing, c.model.config)
  shaped = dict(sd)
  shaped["down_blocks.1.resnets.0.time_emb_proj.weight"] = torch.zeros(16, 63)
  (tmp_path / "config.json").write_text(json.dumps(F.config_to_diffusers(c.model.config)))
  save_file(shaped, str(tmp_path / "diffusion_pytorch_model.safetensors"))
  with pytest.raises(CheckpointError, match=r"down_blocks.1.resnets.0.time_emb_proj.weight: \(16, 63\)"):
    shared.weights.load_pretrained(str(tmp_path))
  shaped["unet_extra.weight"] = torch.zeros(3)
  with pytest.raises(CheckpointError, match=r"unexpected keys \['unet_extra.weight'\]"):
    F.import_unet2d(shaped, c.model.config)


def test_config_and_input_errors(root):
  base = F.config_to_diffusers(_case("audioldm", root).model.config)
  for key, value, pattern in (
      ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"),
      ("class_embed_type", "timestep", "class_embed_type"),
      ("num_attention_heads", 2, "num_attention_heads"),
      ("only_cross_attention", True, "only_cross_attention"),
      ("down_block_types", ["DownBlock2D", "AttnDownBlock2D"], "down_block_types"),
      ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn", "mid_block_type"),
      ("attention_head_dim", 3, "attention_head_dim"),
      ("cross_attention_dim", [8, 16, 16], "cross_attention_dim"),
      ("addition_embed_type", "text", "addition_embed_type"),
      ("bogus", 1, "not a setting"),
  ):
    with pytest.raises(ConfigError, match=pattern):
      F.config_from_diffusers({**base, key: value})
  assert F.config_from_diffusers({**base, "dropout": 0.1}).hf_extra == (("dropout", "0.1"),)
  # call-time checks raise before any computation (no compile)
  c = _case("audioldm", root)
  x, t, labels = jnp.zeros((1, 16, 8, 8)), jnp.zeros((1,)), jnp.zeros((1, 24))
  run = functools.partial(c.model.apply, {"params": c.params})
  with pytest.raises(ConfigError, match="needs class_labels"):
    run(x, t)
  with pytest.raises(ConfigError, match="encoder_hidden_states has shape"):
    run(x, t, jnp.zeros((1, 3, 7)), labels)
  with pytest.raises(ConfigError, match="channels last"):
    run(jnp.zeros((1, 8, 16, 8))[..., :4], t, None, labels)
  v = _case("audioldm_visual", root)
  with pytest.raises(ConfigError, match=r"encoder_hidden_states \[B, L, 12\] are required"):
    v.model.apply({"params": v.params}, x, t, None, labels)


def test_bfloat16_compute_and_logical_axes(root):
  """Compute in bfloat16 (params float32): output float32 and close to the float32 forward; every parameter
  carries logical axes, one name per dimension."""
  c = _case("editor", root)
  model = U.UNet2DCondition(c.model.config.replace(dtype="bfloat16"))
  run = jax.jit(model.apply, compiler_options={"xla_backend_optimization_level": 0})
  out = run({"params": c.params}, _nhwc(c.x), jnp.asarray(c.t.numpy()))
  assert out.dtype == jnp.float32
  assert _rel(_nchw(out), c.ours()) < 5e-2
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *F.example_inputs(model)))["params"]
  for path, leaf in traverse_util.flatten_dict(boxed).items():
    assert isinstance(leaf, nn.LogicallyPartitioned), path
    assert len(leaf.names) == leaf.value.ndim, path
