"""Conditional 2-D UNet (shared.models.unet2d) <-> diffusers `UNet2DConditionModel` (AudioLDM's unet/ folder).

One table of (our path, diffusers key, transform), built by walking the config:
  ours  down_blocks_1/resnets_0/conv1/kernel [3, 3, Cin, C]      diffusers down_blocks.1.resnets.0.conv1.weight [C, Cin, 3, 3]
  ours  down_blocks_1/attentions_0/transformer_blocks_0/attn2/to_k/kernel [d, C]
                                                   diffusers down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight
  ours  .../attentions_0/proj_in/kernel [C, C]     diffusers .../attentions.0.proj_in.weight: [C, C, 1, 1] (1x1 conv) or
                                                   [C, C] (use_linear_projection)
  ours  .../ff/proj, ff/out                        diffusers .../ff.net.0.proj, ff.net.2 (GEGLU)
  ours  */scale (GroupNorm, LayerNorm)             diffusers *.weight
Transforms: Conv2d weight [out, in, kh, kw] <-> kernel [kh, kw, in, out]; Linear [out, in] <-> [in, out];
1x1 conv [out, in, 1, 1] <-> [in, out]; the rest identity.

  model, params = shared.weights.load_pretrained("audioldm-s-full/unet")    # config.json _class_name UNet2DConditionModel
  shared.weights.save_pretrained(model, params, dir)                         # UNet2DConditionModel.from_pretrained(dir)
  params = import_unet2d(state_dict, config); sd = export_unet2d(params, config)   # in memory (numpy state_dict)

config.json: every key our config models is read; the other diffusers keys must hold their defaults (ConfigError
naming the key otherwise), except `dropout` / `addition_embed_type_num_heads`, carried through unmodelled.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
import flax.linen as nn

from shared.errors import ConfigError
from shared.models.unet2d import UNet2DCondition, UNet2DConfig
from shared.weights import io, table
from shared.weights.table import LINEAR, Row

CLASS_NAME = "UNet2DConditionModel"
WEIGHTS_STEM = "diffusion_pytorch_model"
CONV2D = table.transpose((2, 3, 1, 0), "conv2d")   # [out, in, kh, kw] -> [kh, kw, in, out]
CONV1X1 = table.Transform("conv1x1", lambda x: x[:, :, 0, 0].T, lambda x: x.T[:, :, None, None])
_RUNTIME = ("dtype", "param_dtype", "remat_policy", "attention_impl")
_MODELLED = tuple(f.name for f in dataclasses.fields(UNet2DConfig) if f.name not in _RUNTIME + ("hf_extra",))
# diffusers keys we do not model: each must hold this value (the diffusers default, or an equivalent)
_FIXED = {
    "encoder_hid_dim": (None,), "encoder_hid_dim_type": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "num_class_embeds": (None,), "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,), "resnet_out_scale_factor": (1.0,), "time_embedding_type": ("positional",),
    "time_embedding_act_fn": (None,), "timestep_post_act": (None,), "time_cond_proj_dim": (None,),
    "attention_type": ("default",), "mid_block_only_cross_attention": (None, False), "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
}
_CARRIED = {"dropout": 0.0, "addition_embed_type_num_heads": 64}   # key -> diffusers default


# ---- configs ----

def config_from_diffusers(d: dict[str, Any], **overrides) -> UNet2DConfig:
  """diffusers config.json dict -> UNet2DConfig. Unknown keys and unsupported values raise ConfigError."""
  if d.get("_class_name", CLASS_NAME) != CLASS_NAME:
    raise ConfigError(f"config.json _class_name is {d['_class_name']!r}; expected {CLASS_NAME!r}")
  kwargs, extra = {}, []
  for k, v in d.items():
    if k.startswith("_"):
      continue
    if k in _MODELLED:
      kwargs[k] = v
    elif k in _FIXED:
      if not any(v == a and isinstance(v, bool) == isinstance(a, bool) for a in _FIXED[k]):
        raise ConfigError(f"{CLASS_NAME} config key {k} = {v!r} is not supported (expected {_FIXED[k][0]!r})")
    elif k in _CARRIED:
      if v != _CARRIED[k]:
        extra.append((k, json.dumps(v)))
    else:
      raise ConfigError(f"config.json key {k!r} is not a setting of {CLASS_NAME}; expected one of "
                        f"{sorted(_MODELLED + tuple(_FIXED) + tuple(_CARRIED))}")
  if "compute_dtype" in overrides:
    overrides["dtype"] = overrides.pop("compute_dtype")
  bad = sorted(set(overrides) - set(_RUNTIME))
  if bad:
    raise ConfigError(f"unknown overrides {bad} for {CLASS_NAME}; expected some of {_RUNTIME} (or compute_dtype)")
  kwargs.update({k: (str(jnp.dtype(v)) if k in ("dtype", "param_dtype") else v) for k, v in overrides.items()})
  return UNet2DConfig(**kwargs, hf_extra=tuple(sorted(extra)))


def config_to_diffusers(c: UNet2DConfig) -> dict[str, Any]:
  out: dict[str, Any] = {"_class_name": CLASS_NAME}
  for k in _MODELLED:
    v = getattr(c, k)
    out[k] = list(v) if isinstance(v, tuple) else v
  out.update({k: json.loads(v) for k, v in c.hf_extra})
  return out


# ---- the name table ----

def name_table(c: UNet2DConfig) -> list[Row]:
  rows: list[Row] = []

  def conv(ours, theirs):
    rows.extend([Row(f"{ours}/kernel", f"{theirs}.weight", CONV2D), Row(f"{ours}/bias", f"{theirs}.bias")])

  def linear(ours, theirs, bias=True, transform=LINEAR):
    rows.append(Row(f"{ours}/kernel", f"{theirs}.weight", transform))
    if bias:
      rows.append(Row(f"{ours}/bias", f"{theirs}.bias"))

  def norm(ours, theirs):
    rows.extend([Row(f"{ours}/scale", f"{theirs}.weight"), Row(f"{ours}/bias", f"{theirs}.bias")])

  def resnet(ours, theirs, cin, cout):
    norm(f"{ours}/norm1", f"{theirs}.norm1")
    conv(f"{ours}/conv1", f"{theirs}.conv1")
    linear(f"{ours}/time_emb_proj", f"{theirs}.time_emb_proj")
    norm(f"{ours}/norm2", f"{theirs}.norm2")
    conv(f"{ours}/conv2", f"{theirs}.conv2")
    if cin != cout:
      conv(f"{ours}/conv_shortcut", f"{theirs}.conv_shortcut")

  def transformer(ours, theirs, layers):
    proj = LINEAR if c.use_linear_projection else CONV1X1
    norm(f"{ours}/norm", f"{theirs}.norm")
    linear(f"{ours}/proj_in", f"{theirs}.proj_in", transform=proj)
    for k in range(layers):
      o, t = f"{ours}/transformer_blocks_{k}", f"{theirs}.transformer_blocks.{k}"
      for a in ("attn1", "attn2"):
        for p in ("to_q", "to_k", "to_v"):
          linear(f"{o}/{a}/{p}", f"{t}.{a}.{p}", bias=False)
        linear(f"{o}/{a}/to_out", f"{t}.{a}.to_out.0")
      for nm in ("norm1", "norm2", "norm3"):
        norm(f"{o}/{nm}", f"{t}.{nm}")
      linear(f"{o}/ff/proj", f"{t}.ff.net.0.proj")
      linear(f"{o}/ff/out", f"{t}.ff.net.2")
    linear(f"{ours}/proj_out", f"{theirs}.proj_out", transform=proj)

  conv("conv_in", "conv_in")
  linear("time_embedding/linear_1", "time_embedding.linear_1")
  linear("time_embedding/linear_2", "time_embedding.linear_2")
  if c.class_embed_type == "simple_projection":
    linear("class_embedding", "class_embedding")
  for i, b in enumerate(c.down_plan()):
    for j in range(b["layers"]):
      resnet(f"down_blocks_{i}/resnets_{j}", f"down_blocks.{i}.resnets.{j}", b["cin"] if j == 0 else b["cout"],
             b["cout"])
      if b["attn"]:
        transformer(f"down_blocks_{i}/attentions_{j}", f"down_blocks.{i}.attentions.{j}", b["tlayers"])
    if b["sample"]:
      conv(f"down_blocks_{i}/downsamplers_0/conv", f"down_blocks.{i}.downsamplers.0.conv")
  if c.mid_block_type is not None:
    ch = c.block_out_channels[-1]
    resnet("mid_block/resnets_0", "mid_block.resnets.0", ch, ch)
    transformer("mid_block/attentions_0", "mid_block.attentions.0", c.per_block("transformer_layers_per_block")[-1])
    resnet("mid_block/resnets_1", "mid_block.resnets.1", ch, ch)
  for i, b in enumerate(c.up_plan()):
    for j in range(b["layers"]):
      resnet(f"up_blocks_{i}/resnets_{j}", f"up_blocks.{i}.resnets.{j}", b["res_in"][j], b["cout"])
      if b["attn"]:
        transformer(f"up_blocks_{i}/attentions_{j}", f"up_blocks.{i}.attentions.{j}", b["tlayers"])
    if b["sample"]:
      conv(f"up_blocks_{i}/upsamplers_0/conv", f"up_blocks.{i}.upsamplers.0.conv")
  norm("conv_norm_out", "conv_norm_out")
  conv("conv_out", "conv_out")
  return rows


def example_inputs(module: UNet2DCondition) -> tuple:
  """(sample, timesteps, encoder_hidden_states | None, class_labels | None) at the smallest spatial size."""
  c = module.config
  s = 2 ** (len(c.block_out_channels) - 1)
  context = None
  if c.attention_sites() and not c.self_attn2:
    context = jnp.zeros((1, 1, c.context_dim), jnp.float32)
  labels = None
  if c.class_embed_type is not None:
    labels = jnp.zeros((1, c.projection_class_embeddings_input_dim), jnp.float32)
  return jnp.zeros((1, s, s, c.in_channels), jnp.float32), jnp.zeros((1,), jnp.float32), context, labels


def param_shapes(c: UNet2DConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """{our param path: shape} (traced once per config, no memory)."""
  return dict(_param_shapes(c))


@functools.lru_cache(maxsize=16)
def _param_shapes(c: UNet2DConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  model = UNet2DCondition(c)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(nn.meta.unbox(shapes["params"])).items()}


# ---- in-memory import / export ----

def import_unet2d(state_dict: dict, c: UNet2DConfig, *, dtype=jnp.float32) -> dict:
  """A UNet2DConditionModel state_dict (torch tensors or arrays) -> our params (strict: CheckpointError naming
  missing / unexpected / mis-shaped keys)."""
  return table.import_params(name_table(c), io.StateDictReader(state_dict), param_shapes(c), dtype,
                             f"{CLASS_NAME} state_dict")


def export_unet2d(params: dict, c: UNet2DConfig, *, dtype=None) -> dict[str, np.ndarray]:
  """Our params -> a numpy state_dict that UNet2DConditionModel(**config).load_state_dict(strict=True) takes."""
  return table.export_state_dict(name_table(c), params, param_shapes(c), CLASS_NAME, dtype)


# ---- the shared.weights family interface ----

def from_config(cfg: dict, **overrides) -> UNet2DCondition:
  return UNet2DCondition(config_from_diffusers(cfg, **overrides))


def to_config(module: UNet2DCondition) -> dict:
  return config_to_diffusers(module.config)


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="unet2d_condition", model_types=(CLASS_NAME,), module_class=UNet2DCondition,
                from_config=from_config, to_config=to_config, rows=lambda m: name_table(m.config),
                example_inputs=example_inputs, weights_name=WEIGHTS_STEM)
