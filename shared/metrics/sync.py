"""Lip-sync metrics: SyncNet (joonson/syncnet_python architecture, Flax) and LSE-C / LSE-D.

SyncNet sees 5-frame windows of 224x224 face crops (BGR, 0..255 floats, 25 fps) and 20-step windows
of 13 MFCCs at 100 Hz (4 MFCC steps per video frame). LSE from the two embedding sequences:
distances at offsets -vshift..vshift, LSE-D = min over offsets of the frame-mean distance,
LSE-C = median over offsets - LSE-D (SPECS.md § Metrics). Weights (syncnet_v2.model, a PyTorch
state dict) load from a local file when a user has them; nothing is downloaded.
"""
from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import CheckpointError
from shared.weights import io

# (kind, features, kernel, stride, padding, pool after: (window, stride, padding) or None)
AUDIO_CNN = (
    (64, (3, 3), (1, 1), (1, 1), None),
    (192, (3, 3), (1, 1), (1, 1), ((3, 3), (1, 2), (0, 0))),
    (384, (3, 3), (1, 1), (1, 1), None),
    (256, (3, 3), (1, 1), (1, 1), None),
    (256, (3, 3), (1, 1), (1, 1), ((3, 3), (2, 2), (0, 0))),
    (512, (5, 4), (1, 1), (0, 0), None),
)
LIP_CNN = (
    (96, (5, 7, 7), (1, 2, 2), (0, 0, 0), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    (256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    (256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    (512, (1, 6, 6), (1, 1, 1), (0, 0, 0), None),
)
TORCH_CONV_INDEX = (0, 4, 8, 11, 14, 18)  # nn.Sequential positions of the convs (BN at +1)


def _bn(name: str, train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class _Tower(nn.Module):
  spec: tuple
  prefix: str
  embed_dim: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, (feat, k, s, p, pool) in enumerate(self.spec):
      names = ("conv_kernel",) * len(k) + ("conv_in", "conv_out")
      x = nn.Conv(feat, k, strides=s, padding=[(q, q) for q in p], dtype=self.dtype,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                  name=f"{self.prefix}_conv{i}")(x)
      x = nn.relu(_bn(f"{self.prefix}_bn{i}", train)(x.astype(jnp.float32)))
      if pool is not None:
        x = nn.max_pool(x, pool[0], strides=pool[1], padding=[(q, q) for q in pool[2]])
    x = x.reshape(x.shape[0], -1)
    dense = lambda f, n: nn.Dense(  # noqa: E731
        f, dtype=self.dtype, name=n,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))
    x = nn.relu(_bn(f"{self.prefix}_fc_bn", train)(dense(512, f"{self.prefix}_fc0")(x)
                                                  .astype(jnp.float32)))
    return dense(self.embed_dim, f"{self.prefix}_fc1")(x).astype(jnp.float32)


class SyncNet(nn.Module):
  """SyncNet (Chung & Zisserman 2016, syncnet_python's `S`).

  audio(mfcc [N,13,20] float32) -> [N,E]; lip(frames [N,5,224,224,3] BGR 0..255) -> [N,E].
  """
  embed_dim: int = 1024
  dtype: Any = jnp.float32

  def setup(self):
    self.aud = _Tower(AUDIO_CNN, "aud", self.embed_dim, self.dtype)
    self.lip_tower = _Tower(LIP_CNN, "lip", self.embed_dim, self.dtype)

  def audio(self, mfcc, train: bool = False):
    return self.aud(mfcc[..., None].astype(self.dtype), train)

  def lip(self, frames, train: bool = False):
    return self.lip_tower(frames.astype(self.dtype), train)

  def __call__(self, mfcc, frames, train: bool = False):
    return self.audio(mfcc, train), self.lip(frames, train)


def convert_torch_state_dict(state: dict[str, Any]) -> dict:
  """syncnet_python state dict (netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*) -> Flax variables
  {'params', 'batch_stats'}. Raises CheckpointError naming missing keys."""
  state = {k.split("__S__.")[-1].removeprefix("module."): np.asarray(v, np.float32)
           for k, v in state.items()}
  params: dict = {"aud": {}, "lip_tower": {}}
  stats: dict = {"aud": {}, "lip_tower": {}}

  def get(key):
    if key not in state:
      raise CheckpointError(f"SyncNet weights lack key {key!r} (have {len(state)} keys, e.g. "
                            f"{sorted(state)[:3]})")
    return state[key]

  def bn(tower, name, key):
    params[tower][name] = {"scale": get(f"{key}.weight"), "bias": get(f"{key}.bias")}
    stats[tower][name] = {"mean": get(f"{key}.running_mean"), "var": get(f"{key}.running_var")}

  for tower, prefix, torch_name, nd in (("aud", "aud", "aud", 2), ("lip_tower", "lip", "lip", 3)):
    perm = (2, 3, 1, 0) if nd == 2 else (2, 3, 4, 1, 0)
    for i, j in enumerate(TORCH_CONV_INDEX):
      key = f"netcnn{torch_name}.{j}"
      params[tower][f"{prefix}_conv{i}"] = {"kernel": get(f"{key}.weight").transpose(perm),
                                            "bias": get(f"{key}.bias")}
      bn(tower, f"{prefix}_bn{i}", f"netcnn{torch_name}.{j + 1}")
    for n, j in (("fc0", 0), ("fc1", 3)):
      key = f"netfc{torch_name}.{j}"
      params[tower][f"{prefix}_{n}"] = {"kernel": get(f"{key}.weight").T, "bias": get(f"{key}.bias")}
    bn(tower, f"{prefix}_fc_bn", f"netfc{torch_name}.1")
  return {"params": params, "batch_stats": stats}


def to_torch_state_dict(variables: dict) -> dict[str, np.ndarray]:
  """The inverse of convert_torch_state_dict: Flax variables -> syncnet_python's state dict names (numpy)."""
  p, st = variables["params"], variables["batch_stats"]
  out: dict[str, np.ndarray] = {}

  def bn(tower, name, key):
    out[f"{key}.weight"], out[f"{key}.bias"] = (np.asarray(p[tower][name][k], np.float32) for k in ("scale", "bias"))
    out[f"{key}.running_mean"], out[f"{key}.running_var"] = (np.asarray(st[tower][name][k], np.float32)
                                                             for k in ("mean", "var"))

  for tower, prefix, nd in (("aud", "aud", 2), ("lip_tower", "lip", 3)):
    inv = (3, 2, 0, 1) if nd == 2 else (4, 3, 0, 1, 2)
    for i, j in enumerate(TORCH_CONV_INDEX):
      key = f"netcnn{prefix}.{j}"
      out[f"{key}.weight"] = np.asarray(p[tower][f"{prefix}_conv{i}"]["kernel"], np.float32).transpose(inv)
      out[f"{key}.bias"] = np.asarray(p[tower][f"{prefix}_conv{i}"]["bias"], np.float32)
      bn(tower, f"{prefix}_bn{i}", f"netcnn{prefix}.{j + 1}")
    for n, j in (("fc0", 0), ("fc1", 3)):
      out[f"netfc{prefix}.{j}.weight"] = np.asarray(p[tower][f"{prefix}_{n}"]["kernel"], np.float32).T
      out[f"netfc{prefix}.{j}.bias"] = np.asarray(p[tower][f"{prefix}_{n}"]["bias"], np.float32)
    bn(tower, f"{prefix}_fc_bn", f"netfc{prefix}.1")
  return out


def load_syncnet(path: str | os.PathLike) -> tuple[SyncNet, dict]:
  """Load SyncNet weights from a local file: .safetensors / .npz with syncnet_python's key names, or
  the original syncnet_v2.model (a PyTorch state dict, read with torch.load(weights_only=True))."""
  path = str(path)
  if not os.path.isfile(path):
    raise CheckpointError(f"SyncNet weight file {path} does not exist")
  state = {k: np.asarray(v, np.float32) for k, v in io.read_state_dict(path).items()}
  variables = convert_torch_state_dict(state)
  dim = variables["params"]["aud"]["aud_fc1"]["kernel"].shape[1]
  return SyncNet(embed_dim=dim), jax.tree.map(jnp.asarray, variables)


def offset_distances(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = 15) -> np.ndarray:
  """Euclidean distances [T, 2*vshift+1] between video_emb[t] and audio_emb[t + k - vshift]
  (zero embeddings outside the sequence, +1e-6 inside the norm: torch pairwise_distance)."""
  v = np.asarray(video_emb, np.float64)
  a = np.asarray(audio_emb, np.float64)
  t = v.shape[0]
  a_pad = np.pad(a, ((vshift, vshift), (0, 0)))
  idx = np.arange(t)[:, None] + np.arange(2 * vshift + 1)[None, :]
  return np.linalg.norm(v[:, None, :] - a_pad[idx] + 1e-6, axis=-1)


def lse(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = 15) -> dict[str, float]:
  """LSE-D, LSE-C and the AV offset (frames) from SyncNet embeddings [T, E] (same T)."""
  if video_emb.shape[0] != audio_emb.shape[0] or video_emb.shape[0] == 0:
    raise ValueError(f"embedding sequences must be non-empty and equal length, got "
                     f"{video_emb.shape} and {audio_emb.shape}")
  mdist = offset_distances(video_emb, audio_emb, vshift).mean(axis=0)
  k = int(np.argmin(mdist))
  # torch.median of an odd count = the middle value; for even counts it takes the lower one.
  med = float(np.sort(mdist)[(len(mdist) - 1) // 2])
  return {"lse_d": float(mdist[k]), "lse_c": med - float(mdist[k]), "offset": vshift - k}


def mfcc(audio: np.ndarray, sample_rate: int = 16000, numcep: int = 13) -> np.ndarray:
  """python_speech_features.mfcc defaults (25 ms / 10 ms, 26 filters, nfft 512, preemph 0.97,
  lifter 22, c0 replaced by log frame energy), audio in int16 scale -> [n_frames, numcep]."""
  from scipy.fft import dct
  x = np.asarray(audio, np.float64) * 32768.0
  x = np.append(x[0], x[1:] - 0.97 * x[:-1])
  flen, fstep, nfft = int(round(0.025 * sample_rate)), int(round(0.01 * sample_rate)), 512
  n = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / fstep))
  x = np.pad(x, (0, max((n - 1) * fstep + flen - len(x), 0)))
  frames = x[np.arange(n)[:, None] * fstep + np.arange(flen)[None, :]]
  pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
  energy = np.where(pspec.sum(1) == 0, np.finfo(float).eps, pspec.sum(1))
  mel = lambda f: 2595 * np.log10(1 + f / 700.0)  # noqa: E731
  pts = 700 * (10 ** (np.linspace(mel(0), mel(sample_rate / 2), 28) / 2595.0) - 1)
  bins = np.floor((nfft + 1) * pts / sample_rate).astype(int)
  fb = np.zeros((26, nfft // 2 + 1))
  for j in range(26):
    lo, c, hi = bins[j], bins[j + 1], bins[j + 2]
    fb[j, lo:c] = (np.arange(lo, c) - lo) / max(c - lo, 1)
    fb[j, c:hi] = (hi - np.arange(c, hi)) / max(hi - c, 1)
  feat = pspec @ fb.T
  feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
  cep = dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
  cep *= 1 + (22 / 2.0) * np.sin(np.pi * np.arange(numcep) / 22)
  cep[:, 0] = np.log(energy)
  return cep.astype(np.float32)


def syncnet_windows(frames: np.ndarray, audio: np.ndarray, sample_rate: int = 16000
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Windows as syncnet_python builds them: frames [T,224,224,3] RGB uint8, audio [S] 16 kHz ->
  (lip windows [W,5,224,224,3] BGR float32, mfcc windows [W,13,20]), W = min(T, S//640) - 5."""
  cc = mfcc(audio, sample_rate).T  # [13, n]
  t = min(len(frames), len(audio) // 640)
  w = max(t - 5, 0)
  vid = np.asarray(frames[..., ::-1], np.float32)
  lips = np.stack([vid[i:i + 5] for i in range(w)]) if w else np.zeros((0, 5) + vid.shape[1:], np.float32)
  aud = np.stack([cc[:, 4 * i:4 * i + 20] for i in range(w)]) if w else np.zeros((0, 13, 20), np.float32)
  return lips, aud


SYNCNET_SIZE = 224


class SyncScorer:
  """LSE-C / LSE-D / offset of a talking clip with SyncNet weights from a local file (load_syncnet):
  `scorer(frames [T, H, W, 3] uint8 RGB face crops at 25 fps, audio [S] 16 kHz) -> {lse_c, lse_d, offset}`.
  Frames that are not 224 x 224 are resized (bilinear), as syncnet_python resizes its face crops; windows as
  syncnet_windows cuts them, embedded in fixed batches (one compile); a clip of 5 frames or fewer raises."""

  def __init__(self, path: str | os.PathLike, batch: int = 16, vshift: int = 15):
    self.model, self.variables = load_syncnet(path)
    self.batch, self.vshift = int(batch), int(vshift)
    model = self.model
    self._audio = jax.jit(lambda v, x: model.apply(v, x, method=SyncNet.audio))
    self._lip = jax.jit(lambda v, x: model.apply(v, x, method=SyncNet.lip))

  def _embed(self, fn, x: np.ndarray) -> np.ndarray:
    n, b = len(x), self.batch
    out = []
    for i in range(0, n, b):
      chunk = x[i:i + b]
      k = len(chunk)
      if k < b:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - k, 0)])
      out.append(np.asarray(fn(self.variables, jnp.asarray(chunk)))[:k])
    return np.concatenate(out)

  def __call__(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int = 16000) -> dict[str, float]:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"SyncScorer: frames have shape {frames.shape}; expected [T, H, W, 3] uint8 RGB")
    if frames.shape[1:3] != (SYNCNET_SIZE, SYNCNET_SIZE):
      from PIL import Image
      frames = np.stack([np.asarray(Image.fromarray(np.asarray(f, np.uint8)).resize(
          (SYNCNET_SIZE, SYNCNET_SIZE), Image.BILINEAR)) for f in frames])
    lips, aud = syncnet_windows(frames, audio, sample_rate)
    if len(lips) == 0:
      raise ValueError(f"SyncScorer: {len(frames)} frames / {len(audio) / sample_rate:.2f} s of audio: SyncNet "
                       "needs more than 5 frames of both")
    return lse(self._embed(self._lip, lips), self._embed(self._audio, aud), self.vshift)
