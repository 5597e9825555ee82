"""FlashLips (arXiv 2512.20033; SPECS § FlashLips): a one-step latent editor driven by 12-D lips-pose vectors, and an
audio-to-lips-pose Transformer trained with flow matching.

  face crop x [B, S, S, 3] in [-1, 1], mouth box mask m [B, S, S, 1] (1 = mouth region; data.py)
  image VAE    E / D: shared.models.autoencoder_kl (diffusers AutoencoderKL, SD / SDXL layout; frozen after the
               'vae' stage or read from SDXL's VAE); latents z = to_latent(E(x).mean) [B, S/s, S/s, 4]
  lips pose    l = LipsPoseEncoder(mouth crop [B, m, m, 3]) = [8-D expression code | 4-D mouth-crop code] (tanh)
               (a GroupNorm CNN over the mouth crop, two heads; see "What is learned vs given" below)
Stage 1, the one-step editor (`FlashLips.edit`):
  z_in  = E(x ⊙ (1 - m)) (the masked target; mask-free: E(x), the whole target frame)
  f_ref = ReferenceBackbone(E(x_ref))          [B, h, w, C_ref]   (conv_in + ResnetBlock2D x n at latent size)
  Δ     = UNet2DCondition([z_in, f_ref, l broadcast over h x w], t = 0)   (shared.models.unet2d: DownBlock2D /
          UpBlock2D, optionally the self-attending mid block; one step, the timestep is a constant 0)
  ẑ     = z_in + Δ                              (the residual to the target latent)
  x̂     = D(ẑ)                                  (pixel loss through the frozen decoder: task.py)
Mask-free stage (`pseudo_targets`): a frozen copy of the masked editor (teacher_reference / teacher_unet) renders the
  target with another lips vector l' (the next example's in the batch); composited into the target outside the mask
  (x' = m ⊙ D(ẑ') + (1 - m) ⊙ x) it is a mouth-altered pseudo ground truth that differs from x only at the mouth.
  The student (reference / unet, initialised from the same editor) sees whole frames, no mask: x -> x' with l' and
  x' -> x with l, so its edits stay on the lips.
Stage 2, audio -> lips pose (`PoseTransformer`): per frame, v = Transformer(Dense(l_σ) + Dense(audio features) +
  Dense(reference pose) + style embedding + position + time embedding(σ)) [B, T, 12], trained with conditional flow
  matching (shared.diffusion: x_σ = (1 - σ) l + σ ε, target ε - l) on the frozen lips encoder's vectors of the
  clip's frames; few-step Euler sampling (shared.diffusion.euler_sample) at inference.

What is learned vs given on SynthCue: the lips vector is learned end to end by the editor's reconstruction losses
(the 12-D bottleneck between the target's mouth crop and the render: nothing else carries the target's mouth);
with objective.lips_gt_weight > 0, its first 3 mouth-code dims are also regressed onto SynthCue's ground-truth
viseme parameters (opening, width, rounding; `lip_params`), else those are only compared (a linear probe in
evaluate). The mouth box comes from SynthCue's pose keypoints 4-7 (a real pipeline needs a landmark detector). The
paper's 8-D expression code comes from a frozen expression encoder + MLP over the face; SynthCue faces have no
expression beyond the lips, so here it is a second head of the mouth-crop CNN. The paper's inference encoder is a
distilled ResNet-34: not built (the mouth-crop CNN is used at every size).

Param tree (editor / maskfree / pose stages): vae/ (AutoencoderKL), lips/ (LipsPoseEncoder), reference/, unet/
(the editor), teacher_reference/ + teacher_unet/ (maskfree: frozen masked editor), pose/ (pose stage). The 'vae'
stage builds the bare AutoencoderKL.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.models import autoencoder_kl as akl
from shared.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from shared.models.unet2d import UNet2DCondition, UNet2DConfig
from shared.nn.linear import Dense, Embed
from shared.nn.mha import MultiHeadAttention
from shared.nn.mlp import MLP
from shared.nn.norms import GroupNorm, LayerNorm
from shared.nn.positions import sinusoid_init, timestep_embedding
from shared.nn.resnet2d import ResnetBlock2D, conv2d

STAGES = ("vae", "editor", "maskfree", "pose")
LIPS_DIM = 12
EXPRESSION_DIM = 8            # + 4-D mouth-crop code = 12


@dataclasses.dataclass(frozen=True)
class LipsEncoderConfig:
  widths: tuple[int, ...] = (32, 64, 128)   # one stride-2 3x3 conv + a ResnetBlock2D per width
  groups: int = 8
  expression_dim: int = EXPRESSION_DIM
  mouth_dim: int = LIPS_DIM - EXPRESSION_DIM
  dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
  channels: int = 64           # C_ref
  blocks: int = 2              # ResnetBlock2D at latent resolution
  groups: int = 8
  dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class PoseConfig:
  dim: int = 256
  layers: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  audio_dim: int = 256          # frame-aligned speech features per video frame (4 log-mel frames x 64 bins)
  max_frames: int = 256         # learned positions (from sinusoids)
  num_styles: int = 1           # emotion / style embedding (SynthCue: one neutral style, id 0)
  dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class FlashLipsConfig:
  stage: str = "editor"         # STAGES
  vae: AutoencoderKLConfig = AutoencoderKLConfig()
  lips: LipsEncoderConfig = LipsEncoderConfig()
  reference: ReferenceConfig = ReferenceConfig()
  unet: UNet2DConfig = UNet2DConfig()
  pose: PoseConfig = PoseConfig()
  masked: bool = True           # the editor's input is the masked target (False: the mask-free editor)

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ConfigError(f"model.stage={self.stage!r}: expected one of {STAGES}")
    l = self.lips
    if l.expression_dim + l.mouth_dim != LIPS_DIM:
      raise ConfigError(f"model.lips expression_dim + mouth_dim = {l.expression_dim + l.mouth_dim}: the lips-pose "
                        f"vector is {LIPS_DIM}-D (8-D expression + 4-D mouth-crop code)")
    if self.stage != "vae":
      z = self.vae.latent_channels
      want = z + self.reference.channels + LIPS_DIM
      u = self.unet
      if u.in_channels != want or u.out_channels != z:
        raise ConfigError(f"model.unet in/out_channels ({u.in_channels}/{u.out_channels}) must be latent_channels + "
                          f"reference.channels + {LIPS_DIM} = {want} / latent_channels = {z}")
      if u.attention_sites() and not u.self_attn2:
        raise ConfigError("model.unet: the one-step editor has no cross-attention context; attention blocks must "
                          "have cross_attention_dim equal to their channels (attn2 attends to the block itself)")
      if self.reference.channels % self.reference.groups:
        raise ConfigError(f"model.reference.groups={self.reference.groups} must divide channels="
                          f"{self.reference.channels}")
    if self.stage == "pose" and self.pose.dim % self.pose.heads:
      raise ConfigError(f"model.pose.heads={self.pose.heads} must divide model.pose.dim={self.pose.dim}")


# ----------------------------------------------------------------------------------------------- pieces

def to_unit(images):
  """uint8 [..., 3] -> float32 in [-1, 1] (the SD VAE's input range)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(x):
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def box_mask(box, size: int):
  """box [B, 4] int (y0, y1, x0, x1; pixels, end exclusive) -> mask [B, size, size, 1] float32 (1 inside)."""
  r = jnp.arange(size)
  box = jnp.asarray(box)
  ys = (r[None, :] >= box[:, 0:1]) & (r[None, :] < box[:, 1:2])
  xs = (r[None, :] >= box[:, 2:3]) & (r[None, :] < box[:, 3:4])
  return (ys[:, :, None] & xs[:, None, :]).astype(jnp.float32)[..., None]


class LipsPoseEncoder(nn.Module):
  """mouth crop [B, m, m, 3] uint8 -> lips-pose vector [B, 12] float32 in (-1, 1): [expression (8) | mouth (4)]."""
  config: LipsEncoderConfig

  @nn.compact
  def __call__(self, mouth):
    c = self.config
    dt = jnp.dtype(c.dtype)
    h = to_unit(mouth).astype(dt)
    for i, w in enumerate(c.widths):
      h = conv2d(w, 3, dt, stride=2, padding=((1, 1), (1, 1)), name=f"down_{i}")(h)
      h = ResnetBlock2D(w, c.groups, 1e-6, "silu", dtype=dt, name=f"block_{i}")(h)
    h = jax.nn.silu(GroupNorm(c.groups, 1e-6, dt, name="norm_out")(h))
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    e = Dense(c.expression_dim, True, (None, None), name="expression")(h)
    m = Dense(c.mouth_dim, True, (None, None), name="mouth")(h)
    return jnp.tanh(jnp.concatenate([e, m], -1)).astype(jnp.float32)


class ReferenceBackbone(nn.Module):
  """Reference latent [B, h, w, z] -> features [B, h, w, C_ref]."""
  config: ReferenceConfig

  @nn.compact
  def __call__(self, z):
    c = self.config
    dt = jnp.dtype(c.dtype)
    h = conv2d(c.channels, 3, dt, name="conv_in")(z.astype(dt))
    for i in range(c.blocks):
      h = ResnetBlock2D(c.channels, c.groups, 1e-6, "silu", dtype=dt, name=f"block_{i}")(h)
    return h.astype(jnp.float32)


class PoseBlock(nn.Module):
  """Pre-LN Transformer block: h += MHA(LN h); h += MLP(LN h)."""
  config: PoseConfig

  @nn.compact
  def __call__(self, h, mask):
    c = self.config
    dt = jnp.dtype(c.dtype)
    a, _ = MultiHeadAttention(c.heads, c.dim // c.heads, dtype=dt, name="attn")(
        LayerNorm(1e-5, dt, name="norm1")(h), mask=mask[:, None, None, :])
    h = h + a.astype(jnp.float32)
    m = MLP(c.dim * c.mlp_ratio, "gelu", True, dtype=dt, name="mlp")(LayerNorm(1e-5, dt, name="norm2")(h))
    return h + m.astype(jnp.float32)


class PoseTransformer(nn.Module):
  """Velocity v(l_σ, σ | audio, reference pose, style): l_σ [B, T, 12], t [B] (σ x 1000), audio [B, T, A],
  ref [B, 12], style [B] int, mask [B, T] -> [B, T, 12] float32."""
  config: PoseConfig

  @nn.compact
  def __call__(self, x, t, audio, ref, style, mask):
    c = self.config
    n = x.shape[1]
    if n > c.max_frames:
      raise ConfigError(f"{n} frames exceed model.pose.max_frames={c.max_frames}")
    dense = lambda f, name: Dense(f, True, ("embed", "mlp"), name=name)  # noqa: E731
    h = dense(c.dim, "in_pose")(x.astype(jnp.float32)) + dense(c.dim, "in_audio")(audio.astype(jnp.float32))
    h = h + dense(c.dim, "in_ref")(ref.astype(jnp.float32))[:, None]
    h = h + Embed(c.num_styles, c.dim, embedding_axes=(None, "embed"), name="style")(style)[:, None]
    h = h + Embed(c.max_frames, c.dim, embedding_axes=(None, "embed"), embedding_init=sinusoid_init,
                  name="positions")(jnp.arange(n))[None]
    temb = MLP(c.dim, "silu", True, out_features=c.dim, name="time")(timestep_embedding(t, c.dim))
    h = h + temb[:, None]
    for i in range(c.layers):
      h = PoseBlock(c, name=f"block_{i}")(h, mask)
    h = LayerNorm(1e-5, name="norm_out")(h)
    return dense(LIPS_DIM, "out")(h).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------- the system

class FlashLips(nn.Module):
  """The editor (+ teacher in the maskfree stage, + pose Transformer in the pose stage) on a frozen image VAE."""
  config: FlashLipsConfig

  def setup(self):
    c = self.config
    self.vae = AutoencoderKL(c.vae)
    self.lips = LipsPoseEncoder(c.lips)
    self.reference = ReferenceBackbone(c.reference)
    self.unet = UNet2DCondition(c.unet)
    if c.stage == "maskfree":
      self.teacher_reference = ReferenceBackbone(c.reference)
      self.teacher_unet = UNet2DCondition(c.unet)
    if c.stage == "pose":
      self.pose = PoseTransformer(c.pose)

  # ---- latent space
  def encode(self, x):
    """images in [-1, 1] [B, S, S, 3] -> scaled latents [B, h, w, z] (posterior mean)."""
    mean, _ = self.vae.encode(x)
    return akl.to_latent(mean, self.config.vae)

  def decode(self, z):
    return self.vae.decode(akl.from_latent(z, self.config.vae))

  def lips_pose(self, mouth):
    return self.lips(mouth)

  # ---- stage 1
  def _edit(self, reference, unet, z_in, z_ref, lips):
    b, h, w, _ = z_in.shape
    f = reference(z_ref)
    l = jnp.broadcast_to(lips[:, None, None, :].astype(jnp.float32), (b, h, w, lips.shape[-1]))
    x = jnp.concatenate([z_in.astype(jnp.float32), f, l], -1)
    return z_in + unet(x, jnp.zeros((b,), jnp.float32))

  def edit(self, z_in, z_ref, lips):
    """The one-step editor: z_in (masked or whole target latent), z_ref, lips [B, 12] -> ẑ [B, h, w, z]."""
    return self._edit(self.reference, self.unet, z_in, z_ref, lips)

  def teacher_edit(self, z_in, z_ref, lips):
    return self._edit(self.teacher_reference, self.teacher_unet, z_in, z_ref, lips)

  def editor_input(self, x, mask):
    """The editor's z_in: the masked target's latent (masked editor) or the whole frame's (mask-free)."""
    return self.encode(x * (1.0 - mask) if self.config.masked else x)

  def __call__(self, target, reference, mouth, mask):
    """Editor forward from images: target / reference [B, S, S, 3] in [-1, 1], mouth [B, m, m, 3] uint8, mask
    [B, S, S, 1] -> (ẑ, x̂ = D(ẑ), lips)."""
    lips = self.lips(mouth)
    z = self.edit(self.editor_input(target, mask), self.encode(reference), lips)
    return z, self.decode(z), lips

  # ---- mask-free stage
  def pseudo_targets(self, target, reference, mask, lips_other):
    """Mouth-altered pseudo ground truth: the frozen masked teacher renders `target` with `lips_other`; composited
    into the target outside the mask. -> x' [B, S, S, 3] in [-1, 1]."""
    z = self.teacher_edit(self.encode(target * (1.0 - mask)), self.encode(reference), lips_other)
    rendered = jnp.clip(self.decode(z), -1.0, 1.0)
    return mask * rendered + (1.0 - mask) * target

  # ---- stage 2
  def velocity(self, x, t, audio, ref, style, mask):
    return self.pose(x, t, audio, ref, style, mask)

  def init_all(self, target, reference, mouth, mask, audio=None, frame_mask=None):
    """Creates every parameter of the stage."""
    out = self(target, reference, mouth, mask)
    if self.config.stage == "maskfree":
      out = out + (self.pseudo_targets(target, reference, mask, out[2]),)
    if self.config.stage == "pose":
      b, t = audio.shape[:2]
      x = jnp.zeros((b, t, LIPS_DIM), jnp.float32)
      out = out + (self.velocity(x, jnp.zeros((b,)), audio, x[:, 0], jnp.zeros((b,), jnp.int32), frame_mask),)
    return out


def model_config(cfg) -> FlashLipsConfig:
  from shared.config import from_section
  return from_section(FlashLipsConfig, cfg.model)


def model_from_config(cfg) -> nn.Module:
  """The stage's module (the 'vae' stage: the bare AutoencoderKL) from a run config or a FlashLipsConfig."""
  c = cfg if isinstance(cfg, FlashLipsConfig) else model_config(cfg)
  if c.stage == "vae":
    return AutoencoderKL(c.vae)
  return FlashLips(c)
