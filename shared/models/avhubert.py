"""AV-HuBERT (facebookresearch/av_hubert, avhubert/hubert.py) video path: lips -> 25 Hz features (tri-modal lip
encoder). Eval semantics of `AVHubertModel.extract_finetune` (what the fine-tuning wrappers call), without
dropout, layerdrop, input masking or modality dropout (training-time noise of the pretraining recipe):

  video [B, T, H, W(, 1)] normalised mouth frames (88 x 88; see `normalise`)
  f_v = feature_extractor_video: ResEncoder (shared.nn.resnet.Conv3dResNet, PReLU) [B, T, 512] -> proj [B, T, D]
  f_a = zeros [B, T, D]             (video only: extract_finetune's `new_zeros`, NOT audio_proj(0) = its bias)
        audio_proj(audio)           (optional audio features [B, T, audio_feat_dim], 26 log-fbank x 4 = 104)
  x = layer_norm(concat([f_a, f_v], -1))        modality_fuse "concat", audio first: video = channels D..2D-1
  x = post_extract_proj(x)                      [B, T, 2D] -> [B, T, D]
  encoder (fairseq wav2vec2 TransformerEncoder, layer_norm_first=True):
    x = where(padding, 0, x)                    (fairseq's index_put before the conv)
    x = x + GELU(SamePad(pos_conv(x)))          Conv1d(D, D, k=conv_pos, pad k//2, groups), weight norm over
                                                dim 2 (w = g * v / ||v||, norm over out and in per tap);
                                                SamePad drops the last frame when k is even
    pre-LN layers: x += out_proj(MHA(self_attn_layer_norm(x)), key padding mask);
                   x += fc2(GELU(fc1(final_layer_norm(x))))
    x = encoder.layer_norm(x)                   (layer_norm_first and all layers: the final LayerNorm)
  -> [B, T, D] (compute dtype), 25 Hz (one vector per video frame).

padding_mask [B, T] (True = padding, fairseq's convention): padded frames are zeroed at the ResNet input
(whatever they hold: the Conv3d stem mixes 5 frames), left out of BatchNorm statistics in training, zeroed
before pos_conv and masked as attention keys. So, with padding at the end, every real frame's output equals the
unpadded sequence's exactly (the pos_conv's reach into the padding sees zeros, as Conv1d's own zero padding
does in the shorter run); and it equals fairseq given zero padded frames (fairseq does not zero the input
frames: with non-zero padding content its last two real frames see it through the stem). Padded frames'
outputs are defined (not zero) as in fairseq.

Param tree (variables; BatchNorm statistics in "batch_stats", shared.nn.resnet):
  resnet/...                            Conv3dResNet (feature_extractor_video.resnet.*, resnet_family's table)
  video_proj/{kernel [512, D], bias}    audio_proj/{kernel [A, D], bias}   (kept so checkpoints import strictly)
  layer_norm/{scale, bias} [2D]         post_extract_proj/{kernel [2D, D], bias}
  encoder/pos_conv/{weight_g [1, 1, k], weight_v [D, D / groups, k], bias [D]}   (torch layout, weight norm kept)
  encoder/layers/{self_attn/{q,k,v,out}_proj, self_attn_layer_norm, final_layer_norm, mlp/{fc1,fc2}}  [N, ...]
  encoder/layer_norm/{scale, bias} [D]
Checkpoint names: shared/weights/avhubert_family.py.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError, DataError
from shared.nn.linear import Dense
from shared.nn.mha import MultiHeadAttention
from shared.nn.mlp import ACTIVATIONS, MLP
from shared.nn.norms import LayerNorm
from shared.nn.remat import RESIDUAL, check_remat_policy, checkpoint_name
from shared.nn.resnet import Conv3dResNet, ResNetConfig
from shared.nn.scan import scan_layers

PIXEL_MEAN, PIXEL_STD = 0.421, 0.165   # AV-HuBERT's image normalisation after /255


def normalise(frames: jax.Array) -> jax.Array:
  """uint8 / [0, 255] grey mouth crops [..., H, W] -> (x / 255 - 0.421) / 0.165, float32."""
  return (jnp.asarray(frames, jnp.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD


@dataclasses.dataclass(frozen=True)
class AVHubertConfig:
  layers: int = 24                  # encoder_layers
  dim: int = 1024                   # encoder_embed_dim
  ffn: int = 4096                   # encoder_ffn_embed_dim
  heads: int = 16                   # encoder_attention_heads
  conv_pos: int = 128               # pos_conv kernel
  conv_pos_groups: int = 16
  resnet: ResNetConfig = ResNetConfig(act="prelu", width=64)   # its dtype follows `dtype`
  audio_feat_dim: int = 104         # feature_extractor_audio.proj input (26 log-fbank x 4 stacked frames)
  activation: str = "gelu"          # activation_fn of the MLPs (fairseq's gelu is exact)
  layer_norm_eps: float = 1e-5
  checkpoint_prefix: str = ""       # key prefix of the safetensors load/save_pretrained read and write
  dtype: str = "float32"            # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"

  def __post_init__(self):
    check_remat_policy(self.remat_policy)
    for key in ("layers", "dim", "ffn", "heads", "conv_pos", "conv_pos_groups", "audio_feat_dim"):
      if int(getattr(self, key)) < 1:
        raise ConfigError(f"AVHubertConfig.{key}={getattr(self, key)!r}; expected a positive integer")
    if self.dim % self.heads:
      raise ConfigError(f"AVHubertConfig.dim {self.dim} is not a multiple of heads {self.heads}")
    if self.dim % self.conv_pos_groups:
      raise ConfigError(f"AVHubertConfig.dim {self.dim} is not a multiple of conv_pos_groups {self.conv_pos_groups}")
    if self.activation not in ACTIVATIONS:
      raise ConfigError(f"AVHubertConfig.activation={self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
    if not isinstance(self.resnet, ResNetConfig):
      raise ConfigError(f"AVHubertConfig.resnet must be a ResNetConfig; got {type(self.resnet).__name__}")
    if self.resnet.stem == "conv2d":
      raise ConfigError("AVHubertConfig.resnet.stem='conv2d': AV-HuBERT's front end is the 3-D stem")
    object.__setattr__(self, "resnet", self.resnet.replace(dtype=str(jnp.dtype(self.dtype))))

  def replace(self, **kw) -> "AVHubertConfig":
    return dataclasses.replace(self, **kw)


def avhubert_large(**kw) -> AVHubertConfig:
  """AV-HuBERT Large: 24 layers, 1024-d, ffn 4096, 16 heads, conv pos 128 / 16 groups, ResNet-18 PReLU width 64."""
  return AVHubertConfig(**kw)


def avhubert_base(**kw) -> AVHubertConfig:
  """AV-HuBERT Base: 12 layers, 768-d, ffn 3072, 12 heads (same front end and conv pos)."""
  return AVHubertConfig(**{"layers": 12, "dim": 768, "ffn": 3072, "heads": 12, **kw})


class AVHubertLayer(nn.Module):
  """fairseq TransformerSentenceEncoderLayer, layer_norm_first=True. h [B, T, D] -> [B, T, D]."""
  config: AVHubertConfig

  @nn.compact
  def __call__(self, h, mask, deterministic):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    r = LayerNorm(c.layer_norm_eps, **kw, name="self_attn_layer_norm")(h)
    a, _ = MultiHeadAttention(c.heads, c.dim // c.heads, implementation=c.attention_impl, **kw,
                              name="self_attn")(r, mask=mask, deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = LayerNorm(c.layer_norm_eps, **kw, name="final_layer_norm")(h)
    h = h + MLP(c.ffn, c.activation, True, **kw, name="mlp")(r, deterministic)
    return nn.with_logical_constraint(checkpoint_name(h, RESIDUAL), ("batch", None, "act_embed")), None


class PosConv(nn.Module):
  """x [B, T, D] -> GELU(SamePad(Conv1d_weightnorm(x))) [B, T, D] (fairseq's pos_conv Sequential)."""
  config: AVHubertConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    k, g, d = c.conv_pos, c.conv_pos_groups, c.dim
    pd = jnp.dtype(c.param_dtype)
    std = (4.0 / (k * d)) ** 0.5     # fairseq's init, before weight_norm splits it
    v = self.param("weight_v", nn.with_logical_partitioning(nn.initializers.normal(std), ("embed", None, None)),
                   (d, d // g, k), pd)
    norm = lambda w: jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=(0, 1), keepdims=True))
    gain = self.param("weight_g", nn.with_logical_partitioning(lambda *_: norm(v).astype(pd), (None, None, None)),
                      (1, 1, k), pd)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (d,), pd)
    dtype = jnp.dtype(c.dtype)
    w = (gain.astype(jnp.float32) * v.astype(jnp.float32) / norm(v)).astype(dtype)
    y = jax.lax.conv_general_dilated(x.astype(dtype), w, window_strides=(1,), padding=[(k // 2, k // 2)],
                                     dimension_numbers=("NWC", "OIW", "NWC"), feature_group_count=g)
    if k % 2 == 0:    # SamePad
      y = y[:, :-1]
    return jax.nn.gelu(y + bias.astype(dtype), approximate=False)


class AVHubertEncoder(nn.Module):
  """fairseq wav2vec2 TransformerEncoder (layer_norm_first): x [B, T, D], padding [B, T] bool or None."""
  config: AVHubertConfig

  @nn.compact
  def __call__(self, x, padding_mask=None, deterministic: bool = True):
    c = self.config
    mask = None
    if padding_mask is not None:
      x = jnp.where(padding_mask[..., None], jnp.zeros((), x.dtype), x)
      mask = jnp.logical_not(padding_mask)[:, None, None, :]   # [B, 1, 1, S]: True = attend
    x = x + PosConv(c, name="pos_conv")(x)
    x = nn.with_logical_constraint(x, ("batch", None, "act_embed"))
    x, _ = scan_layers(AVHubertLayer, c, c.layers, (nn.broadcast, nn.broadcast), 3)(c, name="layers")(
        x, mask, deterministic)
    return LayerNorm(c.layer_norm_eps, dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype),
                     name="layer_norm")(x)


class AVHubertVideo(nn.Module):
  """video [B, T, H, W] or [B, T, H, W, 1] normalised mouth frames -> [B, T, dim] (see module docstring).

  __call__(video, padding_mask=None, *, audio=None, train=False, deterministic=True):
    padding_mask [B, T] bool, True = padding (fairseq); audio [B, T, audio_feat_dim] optional;
    train=True: the ResNet's BatchNorm uses and updates batch statistics (apply with mutable=["batch_stats"]),
    train=False: running statistics (eval). No dropout is modelled (`deterministic` is passed to the layers)."""
  config: AVHubertConfig = AVHubertConfig()

  @nn.compact
  def __call__(self, video, padding_mask=None, *, audio=None, train: bool = False, deterministic: bool = True):
    c = self.config
    if video.ndim == 4:
      video = video[..., None]
    if video.ndim != 5 or video.shape[-1] != 1:
      raise DataError(f"video has shape {tuple(video.shape)}; expected [B, T, H, W] or [B, T, H, W, 1] grey "
                      "mouth frames", key="video")
    b, t = video.shape[:2]
    if padding_mask is not None:
      padding_mask = jnp.asarray(padding_mask, bool)
      if padding_mask.shape != (b, t):
        raise DataError(f"padding_mask has shape {tuple(padding_mask.shape)}; expected [B, T] = {(b, t)}",
                        key="padding_mask")
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    real = None if padding_mask is None else jnp.logical_not(padding_mask)
    f = Conv3dResNet(c.resnet, name="resnet")(video, train, real)                   # [B, T, 512] float32
    fv = Dense(c.dim, True, ("mlp", "embed"), name="video_proj", **kw)(f)           # [B, T, D]
    audio_proj = Dense(c.dim, True, ("mlp", "embed"), name="audio_proj", **kw)
    if audio is None:
      fa = jnp.zeros_like(fv)
      if self.is_initializing():    # the parameter exists (checkpoints hold it) though video-only never reads it
        audio_proj(jnp.zeros((1, 1, c.audio_feat_dim), fv.dtype))
    else:
      if audio.shape != (b, t, c.audio_feat_dim):
        raise DataError(f"audio has shape {tuple(audio.shape)}; expected [B, T, audio_feat_dim] = "
                        f"{(b, t, c.audio_feat_dim)}", key="audio")
      fa = audio_proj(audio)
    x = LayerNorm(c.layer_norm_eps, **kw, name="layer_norm")(jnp.concatenate([fa, fv], axis=-1))
    x = Dense(c.dim, True, ("mlp", "embed"), name="post_extract_proj", **kw)(x)
    return AVHubertEncoder(c, name="encoder")(x, padding_mask, deterministic)
