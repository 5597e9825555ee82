"""UniTalking in PyTorch, built from diffusers Wan pieces: the reference module of the export (optional [torch] extra).

  model = UniTalkingTorch.from_export(OUT)            # an export dir (unitalking_jax/export.py)
  model = UniTalkingTorch.from_flax(config, params)   # straight from our params pytree
  v, a = model(video [B, T, H, W, Cv], audio [B, Ta, Ca], t_video [B] | [B, Lv], t_audio [B] | [B, La],
               text ids [B, S] (text_vocab > 0) | features [B, S, text_dim], text_mask [B, S] bool | None,
               ref [B, R, ref_dim] | None, tv2a=False, tv2a_flags [B] bool | None)
  -> velocities [B, T, H, W, Cv], [B, Ta, Ca] float32 (channels-last, exactly unitalking_jax.model.UniTalking's
     layout and semantics; video=None runs the audio stream alone, like UniTalking(audio_only=True)).

Modules: `self.video` is a diffusers WanTransformer3DModel (its state_dict is OUT/video_stream's); `self.audio`
is a second WanTransformer3DModel for the audio twin (patch (1, 1, 1), in/out channels audio_channels *
audio_patch, image_dim = ref_dim and added_kv_proj_dim = dim: the reference-audio K/V); `self.text_embed`
[text_vocab, text_dim] (+ `self.text_pos_embed` [text_positions, text_dim]) when text ids are used. Only their pieces are called (patch_embedding,
condition_embedder, blocks[i] = WanTransformerBlock, norm_out / proj_out / scale_shift_table), never their
forward: per layer the two blocks' norm1 + modulation + attn1.to_q/to_k/to_v + norm_q/norm_k + RoPE feed
ONE F.scaled_dot_product_attention over [video | audio] tokens (TV2A: video queries may not attend to audio
keys), then each block's attn1.to_out and gate, its attn2 (video: diffusers' WanAttnProcessor with the
text mask; audio: `TextRefAttnProcessor`, the same computation with the reference K/V passed separately,
because diffusers' processor hard-codes a 512-token text length to split image from text tokens), its FFN.
RoPE: Wan's 3-axis RoPE (diffusers' get_1d_rotary_pos_embed per axis) at video grid positions and at audio
positions (i * audio_time_scale, audio_hw_pos).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import CheckpointError, ConfigError
from shared.torch_compat import import_torchvision
# JAX-free at import (the release's PyTorch pipeline runs this module without JAX): the config classes and the
# Flax name table (unitalking_jax.model, shared.models.wan_dit) are imported where they are used.

import_torchvision()   # before diffusers: a CUDA-built torchvision on a CPU torch would break its imports

REST_FILE = "unitalking_rest.safetensors"
CONFIG_FILE = "unitalking_config.json"
VIDEO_DIR = "video_stream"
CONFIG_KEY = "unitalking_model"   # the model section export should write (config_to_json)


# ---- config <-> json ----

def config_to_json(config: UniTalkingConfig) -> dict:
  """UniTalkingConfig -> a json-able dict (what export should store under unitalking_config.json[CONFIG_KEY])."""
  d = dataclasses.asdict(config)
  return json.loads(json.dumps(d))


def config_from_json(d: dict) -> UniTalkingConfig:
  from shared.models.wan_dit import WanDiTConfig
  from unitalking_jax.model import UniTalkingConfig
  d = dict(d)
  video = dict(d.pop("video"))
  video["patch_size"] = tuple(video["patch_size"])
  d["audio_hw_pos"] = tuple(d.get("audio_hw_pos", (0.0, 0.0)))
  return UniTalkingConfig(WanDiTConfig(**video), **d)


def config_from_export(path: str) -> UniTalkingConfig:
  """The model config of an export dir: unitalking_config.json[CONFIG_KEY] if present, else rebuilt from the
  training config's model section (the UniTalkingConfig fields, shared.config.from_section)."""
  f = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(f):
    raise ConfigError(f"{f} is missing: pass the UniTalkingConfig explicitly (UniTalkingTorch.from_export(dir, "
                      "config=...))")
  with open(f) as fh:
    d = json.load(fh)
  if CONFIG_KEY in d:
    return config_from_json(d[CONFIG_KEY])
  if "model" not in d:
    raise ConfigError(f"{f}: expected a '{CONFIG_KEY}' section or the training config's 'model' section; "
                      f"found keys {sorted(d)}")
  from shared.config import from_section
  from unitalking_jax.model import UniTalkingConfig
  return from_section(UniTalkingConfig, d["model"])


# ---- params ----

def _diffusers_kwargs(c: WanDiTConfig) -> dict:
  from shared.weights.wan_dit_family import config_to_diffusers
  return {k: v for k, v in config_to_diffusers(c).items() if not k.startswith("_")}


def _to_torch(sd: dict) -> dict:
  return {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  out: dict = {}
  for key, v in flat.items():
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


# ---- pieces ----

class TextRefAttnProcessor:
  """diffusers WanAttnProcessor's cross-attention with the extra (reference) K/V given separately:
  out = to_out(attn(q, k_text, v_text, text mask) + attn(q, norm_added_k(add_k(ref)), add_v(ref)))."""

  def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
               encoder_hidden_states_img=None):
    from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections
    heads = lambda x: x.unflatten(2, (attn.heads, -1)).transpose(1, 2)  # noqa: E731  [B, H, L, Dh]
    q, k, v = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
    q, k, v = heads(attn.norm_q(q)), heads(attn.norm_k(k)), heads(v)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
    if encoder_hidden_states_img is not None:
      ki, vi = _get_added_kv_projections(attn, encoder_hidden_states_img)
      o = o + F.scaled_dot_product_attention(q, heads(attn.norm_added_k(ki)), heads(vi))
    o = o.transpose(1, 2).flatten(2).type_as(q)
    return attn.to_out[1](attn.to_out[0](o))


def rope_freqs(positions: torch.Tensor, c: WanDiTConfig):
  """positions [L, 3] (t, h, w; float) -> (cos, sin) [1, L, 1, head_dim] float32, pairs repeat-interleaved
  (diffusers' WanRotaryPosEmbed, at arbitrary positions)."""
  from diffusers.models.embeddings import get_1d_rotary_pos_embed
  hw = 2 * (c.attention_head_dim // 6)
  dims = (c.attention_head_dim - 2 * hw, hw, hw)
  parts = [get_1d_rotary_pos_embed(d, positions[:, a].double(), c.rope_theta, use_real=True,
                                   repeat_interleave_real=True, freqs_dtype=torch.float64)
           for a, d in enumerate(dims)]
  cos = torch.cat([p[0] for p in parts], dim=-1).float()
  sin = torch.cat([p[1] for p in parts], dim=-1).float()
  return cos[None, :, None], sin[None, :, None]


def apply_rope(x: torch.Tensor, freqs) -> torch.Tensor:
  """x [B, L, H, Dh]: adjacent-pair rotation (diffusers WanAttnProcessor's apply_rotary_emb)."""
  cos, sin = freqs[0][..., 0::2], freqs[1][..., 1::2]
  x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
  return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


def _timesteps(t, b: int, length: int, device) -> torch.Tensor:
  t = torch.as_tensor(t, dtype=torch.float32, device=device)
  if t.ndim == 0:
    t = t.expand(b)
  if t.ndim == 1:
    t = t[:, None]
  if t.shape[0] != b or t.shape[1] not in (1, length):
    raise ConfigError(f"timesteps of shape {tuple(t.shape)}: expected [B], [B, 1] or [B, {length}] (B={b})")
  return t


def _modulation(block, proj):
  """block.scale_shift_table [1, 6, D] + proj [B, L|1, 6, D] -> 6 x [B, L|1, D] float32."""
  m = block.scale_shift_table.unsqueeze(0) + proj.float()
  return [x.squeeze(2) for x in m.chunk(6, dim=2)]


def _qkv(block, h, mod, freqs):
  """h [B, L, D] -> q, k, v [B, L, H, Dh] through block.norm1 (modulated), attn1's projections, norms, RoPE."""
  a = block.attn1
  x = (block.norm1(h.float()) * (1 + mod[1]) + mod[0]).type_as(h)
  q, k, v = (t.unflatten(2, (a.heads, -1)) for t in (a.norm_q(a.to_q(x)), a.norm_k(a.to_k(x)), a.to_v(x)))
  return apply_rope(q, freqs), apply_rope(k, freqs), v


def _post(block, h, o, mod, ctx, ctx_mask, ref=None):
  """Gated attn1 output, cross-attention (attn2), gated FFN: h [B, L, D], o [B, L, H, Dh] -> h."""
  h = h.float() + block.attn1.to_out[0](o.flatten(2)) * mod[2]
  x = block.norm2(h.float()).type_as(h)
  kw = {} if ref is None else {"encoder_hidden_states_img": ref}
  h = h + block.attn2(x, ctx, ctx_mask, None, **kw)
  x = (block.norm3(h.float()) * (1 + mod[4]) + mod[3]).type_as(h)
  return h.float() + block.ffn(x).float() * mod[5]


def _head(stream, h, temb):
  """stream's norm_out / scale_shift_table / proj_out: h [B, L, D], temb [B, L|1, D] -> [B, L, out]."""
  shift, scale = (stream.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
  x = stream.norm_out(h.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)
  return stream.proj_out(x)


def _load_text_tables(model, params: dict, where: str):
  """text_embed [vocab, text_dim] / text_pos_embed [positions, text_dim] from `params` into `model` (strict)."""
  c = model.unitalking_config
  for name, size in (("text_embed", c.text_vocab), ("text_pos_embed", c.text_positions)):
    if size > 0:
      if name not in params:
        raise CheckpointError(f"{where}: no {name}, but the config asks for one of {size} rows")
      arr = np.array(params[name], np.float32)
      want = tuple(getattr(model, name).shape)
      if arr.shape != want:
        raise CheckpointError(f"{where}: {name} has shape {arr.shape}, expected {want}")
      getattr(model, name).data.copy_(torch.from_numpy(arr))
    elif name in params:
      raise CheckpointError(f"{where}: has a {name} table, but the config has none (text_vocab / text_positions 0)")


class UniTalkingTorch(nn.Module):
  """See the module docstring."""

  def __init__(self, config: UniTalkingConfig, video=None, audio=None):
    """config: a UniTalkingConfig, or any object with its fields (the release pipeline's namespace: .video and
    .audio with the WanDiTConfig fields forward reads). video / audio: the two streams when already built
    (WanTransformer3DModel.from_pretrained), else built empty from the config."""
    super().__init__()
    self.unitalking_config = config
    if video is None or audio is None:
      from diffusers import WanTransformer3DModel
      video = WanTransformer3DModel(**_diffusers_kwargs(config.video))
      audio = WanTransformer3DModel(**_diffusers_kwargs(config.audio))
    self.video, self.audio = video, audio
    for block in self.audio.blocks:
      block.attn2.set_processor(TextRefAttnProcessor())
    if config.text_vocab > 0:
      self.text_embed = nn.Parameter(torch.zeros(config.text_vocab, config.video.text_dim))
    if config.text_positions > 0:
      self.text_pos_embed = nn.Parameter(torch.zeros(config.text_positions, config.video.text_dim))

  # -- loading --

  def load_params(self, params: dict) -> "UniTalkingTorch":
    """Our params pytree (nested dicts of arrays, as UniTalking.init gives) -> this module's weights (strict)."""
    from shared.weights.wan_dit_family import export_wan_dit
    from unitalking_jax.model import wan_params
    c = self.unitalking_config
    self.video.load_state_dict(_to_torch(export_wan_dit(wan_params(params), c.video)), strict=True)
    self.audio.load_state_dict(_to_torch(export_wan_dit(wan_params(params, "audio"), c.audio)), strict=True)
    _load_text_tables(self, params, "params")
    return self

  @classmethod
  def from_flax(cls, config: UniTalkingConfig, params: dict) -> "UniTalkingTorch":
    return cls(config).load_params(params).eval()

  @classmethod
  def from_export(cls, path: str, config: UniTalkingConfig | None = None) -> "UniTalkingTorch":
    """An export dir: video_stream/ (loaded with WanTransformer3DModel.from_pretrained), the rest safetensors
    (documented Flax names) and the config (unitalking_config.json, or `config` given explicitly)."""
    from diffusers import WanTransformer3DModel
    from safetensors.numpy import load_file
    config = config or config_from_export(path)
    rest_path = os.path.join(path, REST_FILE)
    if not os.path.exists(rest_path):
      raise CheckpointError(f"{rest_path} is missing (written by unitalking_jax.export)")
    model = cls(config)
    rest = _unflatten(load_file(rest_path))
    from shared.weights.wan_dit_family import export_wan_dit
    from unitalking_jax.model import wan_params
    try:
      audio_sd = export_wan_dit(wan_params(rest, "audio"), config.audio)
    except KeyError as e:
      raise CheckpointError(f"{rest_path}: missing parameter group {e}") from e
    model.audio.load_state_dict(_to_torch(audio_sd), strict=True)
    video = WanTransformer3DModel.from_pretrained(os.path.join(path, VIDEO_DIR))
    model.video.load_state_dict({k: v.float() for k, v in video.state_dict().items()}, strict=True)
    _load_text_tables(model, rest, rest_path)
    return model.eval()

  # -- forward --

  def audio_positions(self, la: int, device) -> torch.Tensor:
    c = self.unitalking_config
    t = torch.arange(la, dtype=torch.float64, device=device) * c.audio_time_scale
    hw = torch.tensor(c.audio_hw_pos, dtype=torch.float64, device=device).expand(la, 2)
    return torch.cat([t[:, None], hw], dim=-1)

  def forward(self, video, audio, t_video, t_audio, text, text_mask=None, ref=None, tv2a: bool = False,
              tv2a_flags=None):
    c = self.unitalking_config
    A, V = self.audio, self.video
    b, ta, ca = audio.shape
    p = c.audio_patch
    if ca != c.audio_channels or ta % p:
      raise ConfigError(f"audio latents {tuple(audio.shape)}: expected [B, Ta, {c.audio_channels}] with Ta a "
                        f"multiple of audio_patch={p}")
    la, dev = ta // p, audio.device
    if c.text_vocab > 0:
      if torch.is_floating_point(text):
        raise ConfigError(f"config.text_vocab > 0: text must be int ids [B, S], got {text.dtype}")
      text = self.text_embed[text]
      if c.text_positions > 0:
        if text.shape[1] > c.text_positions:
          raise ConfigError(f"text of length {text.shape[1]} > config.text_positions={c.text_positions}")
        text = text + self.text_pos_embed[:text.shape[1]][None]
    text = text.float()
    if ref is None:
      ref = torch.zeros(b, 1, c.ref_dim, device=dev)
    mask = None if text_mask is None or not c.mask_text else text_mask.bool()[:, None, None, :]
    ha = A.patch_embedding(audio.float().reshape(b, la, p * ca).transpose(1, 2)[..., None, None])
    ha = ha.flatten(2).transpose(1, 2)
    t_a = _timesteps(t_audio, b, la, dev)
    temb_a, proj_a, ctx_a, ref_ctx = A.condition_embedder(t_a.flatten(), text, ref.float(),
                                                          timestep_seq_len=t_a.shape[1])
    proj_a = proj_a.unflatten(2, (6, -1))
    freqs_a = rope_freqs(self.audio_positions(la, dev), c.audio)
    if video is None:
      for ba in A.blocks:
        ma = _modulation(ba, proj_a)
        q, k, v = _qkv(ba, ha, ma, freqs_a)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        ha = _post(ba, ha, o.transpose(1, 2), ma, ctx_a, mask, ref_ctx)
      return None, _head(A, ha, temb_a).reshape(b, ta, ca)
    (pt, ph, pw), cv = c.video.patch_size, c.video.out_channels
    hv = V.patch_embedding(video.float().permute(0, 4, 1, 2, 3))
    gt, gh, gw = hv.shape[2:]
    lv = gt * gh * gw
    hv = hv.flatten(2).transpose(1, 2)
    t_v = _timesteps(t_video, b, lv, dev)
    temb_v, proj_v, ctx_v, _ = V.condition_embedder(t_v.flatten(), text, timestep_seq_len=t_v.shape[1])
    proj_v = proj_v.unflatten(2, (6, -1))
    grid = torch.stack(torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij"), -1)
    freqs_v = rope_freqs(grid.reshape(-1, 3).to(dev, torch.float64), c.video)
    self_mask = None
    if tv2a or tv2a_flags is not None:   # [B|1, 1, L, L], True = may attend
      is_v = torch.arange(lv + la, device=dev) < lv
      blocked = is_v[:, None] & ~is_v[None, :]
      flags = torch.ones(1, dtype=torch.bool, device=dev) if tv2a else torch.as_tensor(tv2a_flags, device=dev).bool()
      self_mask = ~(flags[:, None, None, None] & blocked[None, None])
    for bv, ba in zip(V.blocks, A.blocks):
      mv, ma = _modulation(bv, proj_v), _modulation(ba, proj_a)
      qkv_v, qkv_a = _qkv(bv, hv, mv, freqs_v), _qkv(ba, ha, ma, freqs_a)
      q, k, v = (torch.cat([x, y], dim=1).transpose(1, 2) for x, y in zip(qkv_v, qkv_a))
      o = F.scaled_dot_product_attention(q, k, v, attn_mask=self_mask).transpose(1, 2)
      hv = _post(bv, hv, o[:, :lv], mv, ctx_v, mask)
      ha = _post(ba, ha, o[:, lv:], ma, ctx_a, mask, ref_ctx)
    out_v = _head(V, hv, temb_v).reshape(b, gt, gh, gw, pt, ph, pw, cv).permute(0, 1, 4, 2, 5, 3, 6, 7)
    out_v = out_v.reshape(b, gt * pt, gh * ph, gw * pw, cv)
    return out_v, _head(A, ha, temb_a).reshape(b, ta, ca)
