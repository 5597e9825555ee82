"""UniTalking MM-DiT: one joint attention over video and audio latent tokens (papers/unitalking.txt).

  video latents [B, T, H, W, Cv] --video patch_embedding (Wan, patch (pt, ph, pw))--> hv [B, Lv, D]
  audio latents [B, Ta, Ca]      --audio patch_embedding (audio_patch latent frames per token)--> ha [B, La, D]
  per-token timesteps t_video [B, Lv], t_audio [B, La] (0 on clean conditioning tokens)
      --per-modality WanConditionEmbedder.time--> temb, temb_proj (adaLN modulation per stream)
  text: ids [B, S] (tiny: a learned embedding table) or features [B, S, text_dim] (UMT5)
      --per-modality text_embedder--> ctx_v, ctx_a [B, S, D]
  reference audio [B, R, ref_dim] --audio image_embedder (LN, Linear, GELU, Linear, LN)--> ref [B, R, D]
  N x JointBlock (nn.scan over "layers", optional remat):
      video = shared WanBlock (Wan2.2 TI2V layout), audio = a same-shaped twin WanBlock with its own
      QKV / output / FFN / modulation; q, k, v of both streams concatenated [video | audio] and ONE call
      of shared.kernels.attention (TV2A: video queries may not attend to audio keys, as a static
      BlockMask `tv2a` or per example via `tv2a_flags`); each stream takes its slice of the output,
      then its cross-attention: text, plus (audio stream) an extra K/V on the reference audio
      (WanAttention's add_k_proj / add_v_proj), the two attention outputs summed; then its FFN.
  heads: per stream Wan head (LN, modulation, proj_out) -> velocities [B, T, H, W, Cv], [B, Ta, Ca] f32.

RoPE: Wan's 3-axis RoPE (t, h, w) for video; audio tokens use time positions in video latent-frame units
(`audio_time_scale` video frames per audio token) and ONE fixed (h, w) position (`audio_hw_pos`), the
paper's anisotropic scheme. The video stream's parameter tree is exactly WanDiT's (prefix `video_`),
so shared.weights' Wan name table imports/exports it (unitalking_jax/export.py).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared import kernels
from shared.errors import ConfigError
from shared.kernels import block_mask as bm
from shared.models.wan_dit import (TORCH_LINEAR_INIT, PatchEmbed, WanBlock, WanConditionEmbedder, WanDiTConfig,
                                   grid_positions, layer_norm, rope_angles)
from shared.nn.linear import Dense
from shared.nn.remat import remat

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class UniTalkingConfig:
  """video: the Wan video stream. The audio twin copies heads / head_dim / eps / freq_dim / text_dim from it."""
  video: WanDiTConfig
  audio_channels: int = 64          # audio latent channels (tiny: mel bins; full: MMAudio VAE 20)
  audio_patch: int = 4              # audio latent frames per token
  audio_ffn_dim: int | None = None  # default: video ffn_dim
  ref_dim: int = 256                # reference-audio token features
  audio_time_scale: float = 1.0     # video latent frames per audio token (RoPE time axis)
  audio_hw_pos: tuple = (0.0, 0.0)  # the one fixed (h, w) RoPE position of audio tokens
  text_vocab: int = 0               # > 0: text given as ids into a learned table [text_vocab, text_dim]
  text_positions: int = 0           # > 0 (with text_vocab): + a learned position table [text_positions, text_dim]
  mask_text: bool = True            # False: the cross-attention ignores text_mask (Wan attends to the zero rows)

  def __post_init__(self):
    if self.audio_patch < 1 or self.audio_channels < 1:
      raise ConfigError(f"audio_patch ({self.audio_patch}) and audio_channels ({self.audio_channels}) must be >= 1")
    if self.text_positions and not self.text_vocab:
      raise ConfigError(f"text_positions={self.text_positions} needs the learned text table (text_vocab > 0); "
                        "text features (UMT5) carry their own positions")

  @property
  def audio(self) -> WanDiTConfig:
    """The audio twin: same attention geometry, its own in/out channels, FFN and reference-audio K/V."""
    c = self.video
    return c.replace(patch_size=(1, 1, 1), in_channels=self.audio_channels * self.audio_patch,
                     out_channels=self.audio_channels * self.audio_patch,
                     ffn_dim=self.audio_ffn_dim or c.ffn_dim, image_dim=self.ref_dim, added_kv_proj_dim=c.dim,
                     pos_embed_seq_len=None)


class JointBlock(nn.Module):
  """One MM-DiT block. carry (hv [B, Lv, D] | None, ha [B, La, D]) f32 -> same.

  has_video=False runs the audio stream alone (stage-1 TTS pretraining; the video params are untouched).
  tv2a=True: static TV2A block mask (kernels skip the blocked tiles); tv2a_flags [B] bool: per example."""
  config: UniTalkingConfig
  has_video: bool = True
  tv2a: bool = False

  @nn.compact
  def __call__(self, carry, ctx_v, ctx_a, temb_v, temb_a, ang_v, ang_a, ctx_mask, ref, tv2a_flags):
    c = self.config
    hv, ha = carry
    ba = WanBlock(c.audio, name="audio")
    ma = ba.modulation(temb_a)
    qa, ka, va = ba.qkv(ba.pre_attention(ha, ma), ang_a)
    if not self.has_video:
      o = kernels.attention(qa, ka, va, implementation=c.video.attention_impl)
      return (None, ba.post_attention(ha, o, ma, ctx_a, ctx_mask, ref)), None
    bv = WanBlock(c.video, name="video")
    mv = bv.modulation(temb_v)
    qv, kv, vv = bv.qkv(bv.pre_attention(hv, mv), ang_v)
    lv, la = qv.shape[1], qa.shape[1]
    q, k, v = (jnp.concatenate(p, axis=1) for p in ((qv, qa), (kv, ka), (vv, va)))
    mask = None
    if tv2a_flags is not None:  # [B] -> [B, 1, L, L]: blocked where the example is TV2A, query video, key audio
      is_v = jnp.arange(lv + la) < lv
      blocked = is_v[:, None] & ~is_v[None, :]
      mask = ~(jnp.asarray(tv2a_flags, bool)[:, None, None, None] & blocked[None, None])
    o = kernels.attention(q, k, v, mask=mask, block_mask=bm.tv2a(lv, la) if self.tv2a else None,
                          implementation=c.video.attention_impl)
    hv = bv.post_attention(hv, o[:, :lv], mv, ctx_v, ctx_mask)
    ha = ba.post_attention(ha, o[:, lv:], ma, ctx_a, ctx_mask, ref)
    return (hv, ha), None


class StreamHead(nn.Module):
  """Wan output head: h [B, L, D], temb [B, L|1, D] -> [B, L, out] float32."""
  config: WanDiTConfig

  @nn.compact
  def __call__(self, h, temb):
    c = self.config
    table = self.param("scale_shift_table", nn.with_logical_partitioning(
        lambda k, s, d: jax.random.normal(k, s, d) / math.sqrt(c.dim), (None, "embed")), (2, c.dim), jnp.float32)
    m = table + temb.astype(F32)[..., None, :]
    x = layer_norm(h, c.eps) * (1 + m[..., 1, :]) + m[..., 0, :]
    out = Dense(c.out_channels * math.prod(c.patch_size), True, ("embed", "mlp"), jnp.dtype(c.dtype),
                jnp.dtype(c.param_dtype), kernel_init=TORCH_LINEAR_INIT, name="proj_out")
    return out(x.astype(jnp.dtype(c.dtype))).astype(F32)


def _timesteps(t, b: int, length: int):
  t = jnp.asarray(t, F32)
  if t.ndim == 0:
    t = jnp.broadcast_to(t, (b,))
  if t.ndim == 1:
    t = t[:, None]
  if t.shape[0] != b or t.shape[1] not in (1, length):
    raise ConfigError(f"timesteps of shape {t.shape}: expected [B], [B, 1] or [B, {length}] (B={b})")
  return t


class UniTalking(nn.Module):
  """__call__(video [B, T, H, W, Cv] | None, audio [B, Ta, Ca], t_video [B] | [B, Lv], t_audio [B] | [B, La],
  text ids [B, S] int | features [B, S, text_dim], text_mask [B, S] bool | None, ref [B, R, ref_dim] | None,
  tv2a_flags [B] bool | None) -> (video velocity [B, T, H, W, Cv] f32 | None, audio velocity [B, Ta, Ca] f32).

  audio_only=True runs the audio stream alone (stage 1; video may be None; same param tree minus nothing). ref=None feeds zeros (the null reference).
  Attribute tv2a=True: every example is TV2A (static block mask)."""
  config: UniTalkingConfig
  tv2a: bool = False
  audio_only: bool = False

  def setup(self):
    c = self.config
    v, a = c.video, c.audio
    pdt = jnp.dtype(v.param_dtype)
    if c.text_vocab > 0:
      self.text_embed = self.param("text_embed", nn.with_logical_partitioning(
          nn.initializers.normal(1.0), ("vocab", "embed")), (c.text_vocab, v.text_dim), pdt)
    if c.text_positions > 0:
      self.text_pos_embed = self.param("text_pos_embed", nn.with_logical_partitioning(
          nn.initializers.normal(1.0), (None, "embed")), (c.text_positions, v.text_dim), pdt)
    self.video_patch_embedding = PatchEmbed(v)
    self.video_condition_embedder = WanConditionEmbedder(v)
    self.video_head = StreamHead(v)
    self.audio_patch_embedding = PatchEmbed(a)
    self.audio_condition_embedder = WanConditionEmbedder(a)
    self.audio_head = StreamHead(a)
    block = remat(JointBlock, v.remat_policy)
    self.blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=(nn.broadcast,) * 9, length=v.num_layers,
                          metadata_params={nn.PARTITION_NAME: "layers"})(c, not self.audio_only, self.tv2a)

  def text_features(self, text):
    """ids [B, S] -> [B, S, text_dim] via the learned table (+ the position table: without it the
    cross-attention sees a bag of syllables, not their order); features pass through."""
    c = self.config
    if c.text_vocab > 0:
      if not jnp.issubdtype(jnp.asarray(text).dtype, jnp.integer):
        raise ConfigError(f"config.text_vocab > 0: text must be int ids [B, S], got {jnp.asarray(text).dtype}")
      x = jnp.take(self.text_embed, text, axis=0)
      if c.text_positions > 0:
        if text.shape[1] > c.text_positions:
          raise ConfigError(f"text of length {text.shape[1]} > config.text_positions={c.text_positions}")
        x = x + self.text_pos_embed[:text.shape[1]][None]
      return x
    return text

  def audio_positions(self, b: int, la: int):
    """[B, La, 3] float: (time in video latent frames, fixed h, fixed w)."""
    c = self.config
    t = jnp.arange(la, dtype=F32) * c.audio_time_scale
    hw = jnp.broadcast_to(jnp.asarray(c.audio_hw_pos, F32), (la, 2))
    return jnp.broadcast_to(jnp.concatenate([t[:, None], hw], axis=-1)[None], (b, la, 3))

  def __call__(self, video, audio, t_video, t_audio, text, text_mask=None, ref=None, tv2a_flags=None):
    c = self.config
    text_mask = text_mask if c.mask_text else None
    b, ta, ca = audio.shape
    if ca != c.audio_channels or ta % c.audio_patch:
      raise ConfigError(f"audio latents {audio.shape}: expected [B, Ta, {c.audio_channels}] with Ta a multiple "
                        f"of audio_patch={c.audio_patch}")
    la = ta // c.audio_patch
    xa = audio.reshape(b, la, 1, 1, c.audio_patch * ca)
    ha = self.audio_patch_embedding(xa).reshape(b, la, -1).astype(F32)
    temb_a, proj_a = self.audio_condition_embedder.time(_timesteps(t_audio, b, la))
    text = self.text_features(text)
    ctx_a = self.audio_condition_embedder.text(text)
    if ref is None:
      ref = jnp.zeros((b, 1, c.ref_dim), F32)
    ref_ctx = self.audio_condition_embedder.image(ref)
    ang_a = rope_angles(self.audio_positions(b, la), c.audio)
    if self.audio_only:
      (_, ha), _ = self.blocks((None, ha), None, ctx_a, None, proj_a, None, ang_a, text_mask, ref_ctx, None)
      return None, self._audio_out(ha, temb_a, b, ta)
    if video is None:
      raise ConfigError("video latents are None: build the model with audio_only=True for audio-only runs")
    hv = self.video_patch_embedding(video)
    _, gt, gh, gw, _ = hv.shape
    lv = gt * gh * gw
    hv = hv.reshape(b, lv, -1).astype(F32)
    temb_v, proj_v = self.video_condition_embedder.time(_timesteps(t_video, b, lv))
    ctx_v = self.video_condition_embedder.text(text)
    pos_v = jnp.broadcast_to(jnp.asarray(grid_positions(gt, gh, gw))[None], (b, lv, 3))
    ang_v = rope_angles(pos_v, c.video)
    hv = nn.with_logical_constraint(hv, ("batch", "length", "act_embed"))
    ha = nn.with_logical_constraint(ha, ("batch", "length", "act_embed"))
    (hv, ha), _ = self.blocks((hv, ha), ctx_v, ctx_a, proj_v, proj_a, ang_v, ang_a, text_mask, ref_ctx,
                                    tv2a_flags)
    out_v = self.video_head(hv, temb_v)
    (pt, ph, pw), cv = c.video.patch_size, c.video.out_channels
    out_v = out_v.reshape(b, gt, gh, gw, pt, ph, pw, cv).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    out_v = out_v.reshape(b, gt * pt, gh * ph, gw * pw, cv)
    return out_v, self._audio_out(ha, temb_a, b, ta)

  def _audio_out(self, ha, temb_a, b, ta):
    return self.audio_head(ha, temb_a).reshape(b, ta, self.config.audio_channels)


def video_tokens_per_frame(config: UniTalkingConfig, height: int, width: int) -> int:
  """Tokens per latent frame (the video timestep tensor is [B, (T / pt) * this])."""
  _, ph, pw = config.video.patch_size
  return (height // ph) * (width // pw)


def frame_to_token(per_frame, config: UniTalkingConfig, height: int, width: int):
  """[B, T] per latent frame -> [B, Lv] per token (pt frames per token: their max)."""
  pt = config.video.patch_size[0]
  b, t = per_frame.shape
  x = jnp.max(per_frame.reshape(b, t // pt, pt), axis=-1)
  return jnp.repeat(x, video_tokens_per_frame(config, height, width), axis=1)


# Where a Wan DiT's tree (shared.models.wan_dit.WanDiT) sits in ours: (Wan subpath, our subpath) pairs, the
# `rename` of a config `init` entry (shared/weights/init.py) that reads a Wan checkpoint into the video stream.
WAN_VIDEO_RENAME = (("patch_embedding", "video_patch_embedding"),
                    ("condition_embedder", "video_condition_embedder"),
                    ("blocks", "blocks/video"),
                    ("proj_out", "video_head/proj_out"),
                    ("scale_shift_table", "video_head/scale_shift_table"))


def model_from_config(cfg) -> UniTalking:
  """The one place a config becomes the model: UniTalking(UniTalkingConfig(**cfg.model)), strictly (a field
  missing from the section, e.g. in a checkpoint's config saved before it existed, fails naming it)."""
  from shared.config import from_section
  return UniTalking(from_section(UniTalkingConfig, cfg.model))


def wan_params(params, stream: str = "video") -> dict:
  """One stream's params ("video" | "audio") in WanDiT's tree (shared.models.wan_dit.WanDiT / shared.weights'
  Wan table): the video stream is a Wan DiT, the audio twin has the same layout."""
  return {"patch_embedding": params[f"{stream}_patch_embedding"],
          "condition_embedder": params[f"{stream}_condition_embedder"],
          "blocks": params["blocks"][stream],
          "proj_out": params[f"{stream}_head"]["proj_out"],
          "scale_shift_table": params[f"{stream}_head"]["scale_shift_table"]}


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
