"""Video Swin Transformer (torchvision SwinTransformer3d; the tri-modal paper's sign encoder is Video Swin-T).

Layout: channels last. Ours video [B, T, H, W, C] (C = in_channels = 3, already normalised, e.g. with
KINETICS_MEAN / KINETICS_STD); torchvision takes [B, C, T, H, W] (ours = theirs.permute(0, 2, 3, 4, 1)).

  x = LN(Conv3d(pad_to_patch(video)))        kernel = stride = patch (pt, ph, pw)   [B, T/pt, H/ph, W/pw, E]
  stage i (i = 0..S-1, dim E * 2^i): depths[i] blocks, block j:
      x += attn(LN1(x)); x += MLP(LN2(x))     MLP: Linear(dim, mlp_ratio*dim), exact GELU, Linear(.., dim)
      attn: (shifted) window attention, window (wt, wh, ww); block j odd shifts by window // 2
  between stages: PatchMerging (H, W only): pad H, W to even, concat x[0::2,0::2], x[1::2,0::2],
      x[0::2,1::2], x[1::2,1::2] -> LN(4 dim) -> Linear(4 dim, 2 dim, no bias)
  features = LN(x)                                                     [B, T', H', W', E * 2^(S-1)]
  pooled = mean of features over (T', H', W')                          [B, E * 2^(S-1)]
Swin-T (swin3d_t()): patch (2, 4, 4), E 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window (8, 7, 7):
(B, 16, 112, 112, 3) -> features (B, 8, 4, 4, 768) (T' = ceil(T/2), H' = ceil(H/32) after the paddings).

Window attention follows torchvision exactly (facts, see torchvision/models/video/swin_transformer.py):
  - per axis, a window not smaller than the block's input size shrinks to that size and its shift becomes 0;
  - the (LN1-normalised) input is zero-padded at the end to a multiple of the window; padded tokens take part
    in attention unmasked (as in torchvision); the output is cropped back;
  - shifted blocks roll by -shift, add -100 (not -inf) between tokens of different shift regions, roll back;
  - relative position bias table [(2wt-1)(2wh-1)(2ww-1), heads], read with the full window's index
    (relative_position_index, a constant) cut to [:vol, :vol] for a shrunk window (vol = its wt*wh*ww);
  - qkv: one Linear(dim, 3 dim), output channels ordered (q|k|v, head, head_dim); q scaled by head_dim^-0.5.
Stochastic depth ("row": one keep/drop per sample, kept residuals scaled by 1/(1-p); block k of K overall
has p = stochastic_depth_prob * k / (K-1)) applies with deterministic=False and a "dropout" rng; torchvision's
dropout / attention_dropout (0 in swin3d_t) are not modelled.

Per-frame features (the paper's sign encoder: "F_s in R^{T_s x D_s}, the same temporal resolution as the
input", 25 features per second at 25 fps): `clip_features` slides a clip of `window` frames (16, as the
ISLR-pretrained encoder saw) with `stride` frames over the video and keeps each clip's pooled vector (the
classifier's input: mean over the clip's space and time tokens). padding "same": clip k is centred on frame
k*stride (frames k*stride - window//2 .. k*stride + window - 1 - window//2, indices clamped to [0, T-1], i.e.
edge frames repeated), T' = ceil(T / stride) -> with stride 1, one feature per frame (25 Hz). padding "valid":
clip k covers frames k*stride .. k*stride + window - 1, T' = (T - window) // stride + 1 (T >= window).
Clips are gathered with an index array (no Python loop over clips); `clip_features(module, params, ...,
batch_size=n)` runs them n at a time (jax.lax.map) to bound memory.

Param tree (L = stage i, block j; M = merge after stage i):
  patch_embed/proj/{kernel [pt,ph,pw,C,E], bias}, patch_embed/norm/{scale,bias}
  stage{i}_block{j}/norm1, norm2/{scale,bias}; attn/qkv/{kernel [d,3d], bias}; attn/proj/{kernel,bias};
  stage{i}_block{j}/attn/relative_position_bias_table [(2wt-1)(2wh-1)(2ww-1), heads];
  stage{i}_block{j}/mlp/fc1, fc2/{kernel, bias}; merge{i}/norm/{scale,bias} [4d]; merge{i}/reduction/kernel
  [4d, 2d]; norm/{scale,bias}; head/{kernel, bias} only when num_classes > 0 (the classifier, `logits`).
Params in param_dtype, compute in dtype (LayerNorm and softmax in float32). Optional remat per block.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError, DataError
from shared.nn.conv import Conv
from shared.nn.linear import Dense
from shared.nn.norms import LayerNorm
from shared.nn.remat import RESIDUAL, check_remat_policy, checkpoint_name, remat

KINETICS_MEAN = (0.485, 0.456, 0.406)   # torchvision's swin3d_t transforms (on [0, 1] RGB)
KINETICS_STD = (0.229, 0.224, 0.225)
PADDINGS = ("same", "valid")


@dataclasses.dataclass(frozen=True)
class SwinConfig:
  patch_size: tuple = (2, 4, 4)        # (t, h, w)
  embed_dim: int = 96
  depths: tuple = (2, 2, 6, 2)
  num_heads: tuple = (3, 6, 12, 24)
  window_size: tuple = (8, 7, 7)       # (t, h, w)
  mlp_ratio: float = 4.0
  in_channels: int = 3
  norm_eps: float = 1e-5
  num_classes: int = 0                 # > 0: a classifier head (torchvision's head.*); 0: features only
  stochastic_depth_prob: float = 0.0   # torchvision's swin3d_t trains with 0.1 (swin3d_t() sets it)
  clip_window: int = 16                # clip_features defaults: frames per clip,
  clip_stride: int = 1                 # frames between clip centres (1: one feature per frame),
  clip_padding: str = "same"           # "same" (centred clips, edge frames repeated) or "valid"
  dtype: str = "float32"               # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"           # per block (shared.nn.remat.POLICIES)

  def __post_init__(self):
    for name in ("patch_size", "window_size", "depths", "num_heads"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    check_remat_policy(self.remat_policy)
    if len(self.patch_size) != 3 or len(self.window_size) != 3 or min(self.patch_size + self.window_size) < 1:
      raise ConfigError(f"patch_size {self.patch_size} / window_size {self.window_size}: expected 3 positive "
                        "sizes (t, h, w)")
    if not self.depths or len(self.depths) != len(self.num_heads):
      raise ConfigError(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and as long")
    for i, h in enumerate(self.num_heads):
      if h < 1 or self.stage_dim(i) % h:
        raise ConfigError(f"num_heads[{i}] = {h} does not divide stage {i}'s width {self.stage_dim(i)}")
    if self.clip_padding not in PADDINGS:
      raise ConfigError(f"clip_padding {self.clip_padding!r}: expected one of {PADDINGS}")
    if self.clip_window < 1 or self.clip_stride < 1:
      raise ConfigError(f"clip_window {self.clip_window} / clip_stride {self.clip_stride} must be >= 1")

  def stage_dim(self, i: int) -> int:
    return self.embed_dim * 2 ** i

  @property
  def num_features(self) -> int:
    return self.stage_dim(len(self.depths) - 1)

  def replace(self, **kw) -> "SwinConfig":
    return dataclasses.replace(self, **kw)


def swin3d_t(**overrides) -> SwinConfig:
  """Video Swin-T as torchvision's swin3d_t (stochastic depth 0.1 in training)."""
  return SwinConfig(**{"stochastic_depth_prob": 0.1, **overrides})


# ---- static helpers (numpy: shapes are static) ----

def window_coords(window) -> np.ndarray:
  """int32 [3, vol]: the (t, h, w) of each token of a window, in torchvision's (row-major) order."""
  return np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1).astype(np.int32)


def _relative_index(coords, window):
  """coords [3, n] (numpy or jax) -> [n, n] index into the window's bias table (torchvision's formula)."""
  wt, wh, ww = window
  rel = coords[:, :, None] - coords[:, None, :]
  return (rel[0] + wt - 1) * ((2 * wh - 1) * (2 * ww - 1)) + (rel[1] + wh - 1) * (2 * ww - 1) + (rel[2] + ww - 1)


def relative_position_index(window) -> np.ndarray:
  """torchvision's relative_position_index buffer for a window (t, h, w): int64 [vol, vol], vol = t*h*w."""
  return _relative_index(window_coords(window), window).astype(np.int64)


def adapt_window(size, window, shift) -> tuple[tuple, tuple]:
  """Per axis: an input not larger than the window shrinks the window to it and drops its shift."""
  w = tuple(s if s <= wi else wi for s, wi in zip(size, window))
  sh = tuple(0 if s <= wi else si for s, wi, si in zip(size, window, shift))
  return w, sh


def shift_labels(padded, window, shift) -> np.ndarray:
  """int32 [num_windows, vol]: each token's shift region (torchvision's mask slices), windows in partition order.
  Per shifted axis the regions are [0, P-w), [P-w, P-s), [P-s, P); an axis without shift is one region."""
  labels = []
  for p, w, s in zip(padded, window, shift):
    region = np.zeros(p, np.int32)
    if s > 0:
      region[p - w:p - s] = 1
      region[p - s:] = 2
    labels.append(region)
  lab = labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :]
  (nt, nh, nw), (wt, wh, ww) = [p // w for p, w in zip(padded, window)], window
  return lab.reshape(nt, wt, nh, wh, nw, ww).transpose(0, 2, 4, 1, 3, 5).reshape(nt * nh * nw, wt * wh * ww)


def shift_mask(padded, window, shift) -> np.ndarray:
  """[num_windows, vol, vol] float32: -100 between tokens of different shift regions (torchvision's mask).
  (The module builds it in the graph from shift_labels: a constant this size would bloat the program.)"""
  lab = shift_labels(padded, window, shift)
  return np.where(lab[:, None, :] != lab[:, :, None], -100.0, 0.0).astype(np.float32)


def clip_index(num_frames: int, window: int, stride: int, padding: str) -> np.ndarray:
  """int32 [T', window]: the frames of each clip (see the module docstring for T')."""
  if padding == "same":
    starts = np.arange(-(-num_frames // stride)) * stride - window // 2
    return np.clip(starts[:, None] + np.arange(window)[None], 0, num_frames - 1).astype(np.int32)
  if padding == "valid":
    if num_frames < window:
      raise DataError(f"video has {num_frames} frames, fewer than the clip window {window} (padding 'valid')",
                      key="video")
    starts = np.arange((num_frames - window) // stride + 1) * stride
    return (starts[:, None] + np.arange(window)[None]).astype(np.int32)
  raise ConfigError(f"clip padding {padding!r}: expected one of {PADDINGS}")


def _pad_end(x, multiples, axes):
  pads = [(0, 0)] * x.ndim
  for m, a in zip(multiples, axes):
    pads[a] = (0, (-x.shape[a]) % m)
  return jnp.pad(x, pads) if any(p[1] for p in pads) else x


# ---- layers ----

class WindowAttention3d(nn.Module):
  dim: int
  num_heads: int
  window_size: tuple   # the configured window (sizes the bias table)
  shift_size: tuple    # the configured shift (0 or window // 2 per axis)
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x [B, T, H, W, dim] (normalised) -> [B, T, H, W, dim]."""
    b, t, h, w, c = x.shape
    dt = jnp.dtype(self.dtype)
    window, shift = adapt_window((t, h, w), self.window_size, self.shift_size)
    vol, heads = math.prod(window), self.num_heads
    wt, wh, ww = self.window_size
    table = self.param("relative_position_bias_table", nn.with_logical_partitioning(
        nn.initializers.truncated_normal(0.02), (None, "heads")),
        ((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), heads), jnp.dtype(self.param_dtype))
    # torchvision's index cut to [:vol, :vol] (the full window's first vol tokens), built in the graph
    index = _relative_index(jnp.asarray(window_coords(self.window_size)[:, :vol]), self.window_size)
    bias = jnp.take(table, index.reshape(-1), axis=0).reshape(vol, vol, heads)
    bias = bias.transpose(2, 0, 1).astype(jnp.float32)                          # [heads, vol, vol]

    x = _pad_end(x, window, (1, 2, 3))
    padded = x.shape[1:4]
    if any(shift):
      x = jnp.roll(x, tuple(-s for s in shift), axis=(1, 2, 3))
    n = [p // wi for p, wi in zip(padded, window)]
    x = x.reshape(b, n[0], window[0], n[1], window[1], n[2], window[2], c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, n[0] * n[1] * n[2], vol, c)   # [B, nW, vol, C]

    kw = dict(dtype=dt, param_dtype=jnp.dtype(self.param_dtype))
    qkv = Dense(3 * c, use_bias=True, kernel_axes=("embed", "heads"), name="qkv", **kw)(x)
    qkv = qkv.reshape(*qkv.shape[:3], 3, heads, c // heads)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]           # [B, nW, vol, heads, hd]
    q = q * jnp.asarray((c // heads) ** -0.5, dt)
    scores = jnp.einsum("bnqhd,bnkhd->bnhqk", q, k).astype(jnp.float32) + bias
    if any(shift):
      lab = jnp.asarray(shift_labels(padded, window, shift))                     # [nW, vol]
      scores = scores + jnp.where(lab[:, None, :] != lab[:, :, None], -100.0, 0.0)[None, :, None]
    probs = jax.nn.softmax(scores, axis=-1).astype(dt)
    out = jnp.einsum("bnhqk,bnkhd->bnqhd", probs, v).reshape(*x.shape[:3], c)
    out = Dense(c, use_bias=True, kernel_axes=("heads", "embed"), name="proj", **kw)(out)

    out = out.reshape(b, n[0], n[1], n[2], window[0], window[1], window[2], c)
    out = out.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, *padded, c)
    if any(shift):
      out = jnp.roll(out, shift, axis=(1, 2, 3))
    return out[:, :t, :h, :w]


class _Mlp(nn.Module):
  config: SwinConfig
  dim: int

  @nn.compact
  def __call__(self, x):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    h = Dense(int(self.dim * c.mlp_ratio), use_bias=True, kernel_axes=("embed", "mlp"), name="fc1", **kw)(x)
    h = jax.nn.gelu(h, approximate=False)
    return Dense(self.dim, use_bias=True, kernel_axes=("mlp", "embed"), name="fc2", **kw)(h)


class SwinBlock(nn.Module):
  """Pre-LN Swin block: x += drop_path(attn(norm1(x))); x += drop_path(mlp(norm2(x)))."""
  config: SwinConfig
  dim: int
  num_heads: int
  shifted: bool
  drop_prob: float = 0.0

  def _drop_path(self, y, deterministic):
    if deterministic or self.drop_prob <= 0.0:
      return y
    keep = 1.0 - self.drop_prob
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
    return jnp.where(mask, y / keep, 0).astype(y.dtype)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    """x [B, T, H, W, dim] -> same."""
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    shift = tuple(w // 2 for w in c.window_size) if self.shifted else (0, 0, 0)
    y = WindowAttention3d(self.dim, self.num_heads, c.window_size, shift, c.dtype, c.param_dtype, name="attn")(
        LayerNorm(c.norm_eps, **kw, name="norm1")(x))
    x = checkpoint_name(x + self._drop_path(y, deterministic), RESIDUAL)
    y = _Mlp(c, self.dim, name="mlp")(LayerNorm(c.norm_eps, **kw, name="norm2")(x))
    return checkpoint_name(x + self._drop_path(y, deterministic), RESIDUAL)


class PatchEmbed3d(nn.Module):
  """[B, T, H, W, C] -> zero-pad T, H, W (at the end) to multiples of the patch -> Conv3d (kernel = stride =
  patch) -> LN: [B, ceil(T/pt), ceil(H/ph), ceil(W/pw), E]."""
  config: SwinConfig

  @nn.compact
  def __call__(self, video):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    x = _pad_end(video.astype(jnp.dtype(c.dtype)), c.patch_size, (1, 2, 3))
    x = Conv(c.embed_dim, c.patch_size, strides=c.patch_size, name="proj", **kw)(x)
    return LayerNorm(c.norm_eps, **kw, name="norm")(x)


class PatchMerging(nn.Module):
  """[B, T, H, W, d] -> [B, T, ceil(H/2), ceil(W/2), 2d] (torchvision's order x00, x10, x01, x11)."""
  config: SwinConfig
  dim: int

  @nn.compact
  def __call__(self, x):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    x = _pad_end(x, (2, 2), (-3 + x.ndim, -2 + x.ndim))
    x = jnp.concatenate([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                         x[..., 1::2, 1::2, :]], axis=-1)
    x = LayerNorm(c.norm_eps, **kw, name="norm")(x)
    return Dense(2 * self.dim, use_bias=False, kernel_axes=("mlp", "embed"), name="reduction", **kw)(x)


class SwinTransformer3d(nn.Module):
  """Video Swin backbone: __call__ -> features [B, T', H', W', F]; pooled -> [B, F]; logits (num_classes > 0);
  clip_features -> [B, T', F] (see the module docstring)."""
  config: SwinConfig

  def setup(self):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    self.patch_embed = PatchEmbed3d(c)
    block = remat(SwinBlock, c.remat_policy, static_argnums=(2,))
    total, k, blocks, merges = sum(c.depths), 0, [], []
    for i, depth in enumerate(c.depths):
      stage = []
      for j in range(depth):
        p = c.stochastic_depth_prob * k / (total - 1) if total > 1 else 0.0
        stage.append(block(c, c.stage_dim(i), c.num_heads[i], j % 2 == 1, p, name=f"stage{i}_block{j}"))
        k += 1
      blocks.append(stage)
      if i < len(c.depths) - 1:
        merges.append(PatchMerging(c, c.stage_dim(i), name=f"merge{i}"))
    self.blocks, self.merges = blocks, merges
    self.norm = LayerNorm(c.norm_eps, **kw, name="norm")
    if c.num_classes > 0:
      self.head = Dense(c.num_classes, use_bias=True, kernel_axes=("embed", "vocab"), name="head", **kw)

  def _check(self, video, name="video"):
    c = self.config
    if video.ndim != 5 or video.shape[-1] != c.in_channels:
      raise DataError(f"{name} has shape {tuple(video.shape)}; expected [B, T, H, W, {c.in_channels}] channels-last "
                      "(torchvision's [B, C, T, H, W].permute(0, 2, 3, 4, 1))", key=name)

  def __call__(self, video, deterministic: bool = True):
    """video [B, T, H, W, C] -> features [B, ceil(T/pt), H', W', F] after the final norm (before pooling)."""
    c = self.config
    self._check(video)
    x = self.patch_embed(video)
    for i, stage in enumerate(self.blocks):
      for blk in stage:
        x = blk(x, deterministic)
      if i < len(self.merges):
        x = self.merges[i](x)
    x = self.norm(x)
    if c.num_classes > 0 and self.is_initializing():   # init creates the head's params too
      self.head(jnp.mean(x, axis=(1, 2, 3)))
    return x

  def pooled(self, video, deterministic: bool = True):
    """video [B, T, H, W, C] -> [B, F]: the features averaged over time and space (torchvision's avgpool)."""
    return jnp.mean(self(video, deterministic).astype(jnp.float32), axis=(1, 2, 3)).astype(jnp.dtype(self.config.dtype))

  def logits(self, video, deterministic: bool = True):
    """video -> [B, num_classes] (torchvision's forward); needs num_classes > 0."""
    if self.config.num_classes <= 0:
      raise ConfigError("logits needs a classifier: config num_classes = 0")
    return self.head(self.pooled(video, deterministic))

  def clip_features(self, video, window: int | None = None, stride: int | None = None, padding: str | None = None,
                    deterministic: bool = True):
    """video [B, T, H, W, C] -> [B, T', F]: one pooled vector per clip (all clips in one batch; see
    the free function clip_features for batch_size)."""
    c = self.config
    self._check(video)
    idx = clip_index(video.shape[1], window or c.clip_window, stride or c.clip_stride, padding or c.clip_padding)
    b, (n, win) = video.shape[0], idx.shape
    clips = jnp.take(video, jnp.asarray(idx.reshape(-1)), axis=1).reshape(b * n, win, *video.shape[2:])
    return self.pooled(clips, deterministic).reshape(b, n, -1)


def clip_features(module: SwinTransformer3d, params, video, window: int | None = None, stride: int | None = None,
                  padding: str | None = None, batch_size: int | None = None):
  """params ({"params": ...} or the params tree), video [B, T, H, W, C] -> [B, T', F] (module docstring).
  batch_size: clips per step (jax.lax.map; only those clips' frames are gathered at a time); None: all at once."""
  variables = params if "params" in params else {"params": params}
  if batch_size is None:
    return module.apply(variables, video, window, stride, padding, method=SwinTransformer3d.clip_features)
  c = module.config
  if video.ndim != 5 or video.shape[-1] != c.in_channels:
    raise DataError(f"video has shape {tuple(video.shape)}; expected [B, T, H, W, {c.in_channels}]", key="video")
  idx = jnp.asarray(clip_index(video.shape[1], window or c.clip_window, stride or c.clip_stride,
                               padding or c.clip_padding))
  b, n = video.shape[0], idx.shape[0]
  pairs = (jnp.repeat(jnp.arange(b), n), jnp.tile(jnp.arange(n), b))

  def one(bn):
    clip = video[bn[0]][idx[bn[1]]]                                      # [window, H, W, C]
    return module.apply(variables, clip[None], method=SwinTransformer3d.pooled)[0]

  return jax.lax.map(one, pairs, batch_size=batch_size).reshape(b, n, -1)
