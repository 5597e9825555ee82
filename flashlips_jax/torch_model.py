"""PyTorch twins of a FlashLips release (the [torch] extra: torch + diffusers), rebuilt from the files
flashlips_jax.export writes, reproducing our editor and pose model without JAX.

  editor = FlashLipsEditorTorch.from_export(REL)     diffusers AutoencoderKL (REL/vae) + UNet2DConditionModel
                                                     (REL/unet) + LipsEncoderTorch / ReferenceTorch (REL/editor.
                                                     safetensors: lips/..., reference/...)
  editor.lips(mouth [B, m, m, 3] uint8 NHWC) -> [B, 12]
  editor.edit(frame, reference, mouth, mask) -> (ẑ, x̂)     images [B, 3, S, S] in [-1, 1] (NCHW), mask [B, 1, S, S]
  pose = PoseTransformerTorch.from_export(REL)       REL/pose.safetensors (pose/...)
  pose(x [B, T, 12], t [B], audio [B, T, A], ref [B, 12], style [B], mask [B, T]) -> velocity [B, T, 12]

Layout: our conv kernels [kh, kw, in, out] -> torch weight permute(3, 2, 0, 1); Dense kernels [in, out] -> torch
Linear weight kernel.T; GroupNorm / LayerNorm scale -> weight. The ResNet blocks of the lips encoder and reference
backbone are diffusers' ResnetBlock2D (no time embedding; eps 1e-6; silu).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shared.torch_compat import import_torchvision

import_torchvision()   # before diffusers: a CUDA-built torchvision on a CPU torch would break its imports


def _tensors(path: str) -> tuple[dict, dict]:
  from safetensors import safe_open
  out = {}
  with safe_open(path, "np") as f:
    meta = f.metadata() or {}
    for k in f.keys():
      out[k] = torch.from_numpy(np.ascontiguousarray(f.get_tensor(k)).astype(np.float32))
  return out, {k: (json.loads(v) if v[:1] in "{[" or v in ("true", "false") else v) for k, v in meta.items()}


def _conv(w: dict, prefix: str, stride: int = 1, padding: int = 1) -> nn.Conv2d:
  k = w[f"{prefix}/kernel"]
  conv = nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], stride=stride, padding=padding)
  conv.weight.data = k.permute(3, 2, 0, 1).contiguous()
  conv.bias.data = w[f"{prefix}/bias"]
  return conv


def _linear(w: dict, prefix: str) -> nn.Linear:
  k = w[f"{prefix}/kernel"]
  lin = nn.Linear(k.shape[0], k.shape[1], bias=f"{prefix}/bias" in w)
  lin.weight.data = k.T.contiguous()
  if lin.bias is not None:
    lin.bias.data = w[f"{prefix}/bias"]
  return lin


def _norm(w: dict, prefix: str, module):
  module.weight.data = w[f"{prefix}/scale"]
  module.bias.data = w[f"{prefix}/bias"]
  return module


def _resnet(w: dict, prefix: str, groups: int):
  from diffusers.models.resnet import ResnetBlock2D
  cin = w[f"{prefix}/conv1/kernel"].shape[2]
  cout = w[f"{prefix}/conv1/kernel"].shape[3]
  block = ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=None, groups=groups, eps=1e-6,
                        non_linearity="silu")
  sd = {}
  for name in ("norm1", "norm2"):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = w[f"{prefix}/{name}/scale"], w[f"{prefix}/{name}/bias"]
  for name in ("conv1", "conv2", "conv_shortcut"):
    if f"{prefix}/{name}/kernel" in w:
      sd[f"{name}.weight"] = w[f"{prefix}/{name}/kernel"].permute(3, 2, 0, 1).contiguous()
      sd[f"{name}.bias"] = w[f"{prefix}/{name}/bias"]
  block.load_state_dict(sd)
  return block


class LipsEncoderTorch(nn.Module):
  def __init__(self, w: dict, cfg: dict):
    super().__init__()
    n, g = len(cfg["widths"]), cfg["groups"]
    self.down = nn.ModuleList([_conv(w, f"lips/down_{i}", stride=2) for i in range(n)])
    self.blocks = nn.ModuleList([_resnet(w, f"lips/block_{i}", g) for i in range(n)])
    self.norm = _norm(w, "lips/norm_out", nn.GroupNorm(g, cfg["widths"][-1], eps=1e-6))
    self.expression, self.mouth = _linear(w, "lips/expression"), _linear(w, "lips/mouth")

  def forward(self, mouth):
    """mouth [B, m, m, 3] uint8 (NHWC, as the data pipeline gives it) -> [B, 12]."""
    h = mouth.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    for d, b in zip(self.down, self.blocks):
      h = b(d(h), None)
    h = F.silu(self.norm(h)).mean((2, 3))
    return torch.tanh(torch.cat([self.expression(h), self.mouth(h)], -1))


class ReferenceTorch(nn.Module):
  def __init__(self, w: dict, cfg: dict):
    super().__init__()
    self.conv_in = _conv(w, "reference/conv_in")
    self.blocks = nn.ModuleList([_resnet(w, f"reference/block_{i}", cfg["groups"]) for i in range(cfg["blocks"])])

  def forward(self, z):
    h = self.conv_in(z)
    for b in self.blocks:
      h = b(h, None)
    return h


class FlashLipsEditorTorch(nn.Module):
  def __init__(self, vae, unet, lips, reference, masked: bool):
    super().__init__()
    self.vae, self.unet, self.lips, self.reference, self.masked = vae, unet, lips, reference, masked

  @classmethod
  def from_export(cls, rel: str) -> "FlashLipsEditorTorch":
    from diffusers import AutoencoderKL, UNet2DConditionModel
    w, meta = _tensors(os.path.join(rel, "editor.safetensors"))
    cfg = meta["config"]
    return cls(AutoencoderKL.from_pretrained(os.path.join(rel, "vae")).eval(),
               UNet2DConditionModel.from_pretrained(os.path.join(rel, "unet")).eval(),
               LipsEncoderTorch(w, cfg["lips"]).eval(), ReferenceTorch(w, cfg["reference"]).eval(),
               bool(meta["masked"])).eval()

  def encode(self, x):
    c = self.vae.config
    return (self.vae.encode(x).latent_dist.mean - (c.shift_factor or 0.0)) * c.scaling_factor

  def decode(self, z):
    c = self.vae.config
    return self.vae.decode(z / c.scaling_factor + (c.shift_factor or 0.0)).sample

  def edit(self, frame, reference, mouth, mask):
    """frame / reference [B, 3, S, S] in [-1, 1], mouth [B, m, m, 3] uint8, mask [B, 1, S, S] -> (ẑ, x̂)."""
    lips = self.lips(mouth)
    z_in = self.encode(frame * (1 - mask) if self.masked else frame)
    f = self.reference(self.encode(reference))
    b, _, h, w = z_in.shape
    x = torch.cat([z_in, f, lips[:, :, None, None].expand(b, lips.shape[1], h, w)], 1)
    z = z_in + self.unet(x, torch.zeros(b), encoder_hidden_states=None).sample
    return z, self.decode(z)


def _timestep_embedding(t, dim: int):
  half = dim // 2
  freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
  ang = t.float()[:, None] * freqs[None]
  return torch.cat([torch.cos(ang), torch.sin(ang)], -1)       # flip_sin_to_cos, shift 0


class PoseTransformerTorch(nn.Module):
  def __init__(self, w: dict, cfg: dict):
    super().__init__()
    self.cfg = cfg
    p = "pose"
    self.in_pose, self.in_audio, self.in_ref = (_linear(w, f"{p}/{n}") for n in ("in_pose", "in_audio", "in_ref"))
    self.style = nn.Parameter(w[f"{p}/style/embedding"])
    self.positions = nn.Parameter(w[f"{p}/positions/embedding"])
    self.time = nn.ModuleList([_linear(w, f"{p}/time/fc1"), _linear(w, f"{p}/time/fc2")])
    self.blocks = []
    for i in range(cfg["layers"]):
      b = f"{p}/block_{i}"
      mods = nn.ModuleDict({
          "norm1": _norm(w, f"{b}/norm1", nn.LayerNorm(cfg["dim"], eps=1e-5)),
          "q": _linear(w, f"{b}/attn/q_proj"), "k": _linear(w, f"{b}/attn/k_proj"),
          "v": _linear(w, f"{b}/attn/v_proj"), "o": _linear(w, f"{b}/attn/out_proj"),
          "norm2": _norm(w, f"{b}/norm2", nn.LayerNorm(cfg["dim"], eps=1e-5)),
          "fc1": _linear(w, f"{b}/mlp/fc1"), "fc2": _linear(w, f"{b}/mlp/fc2")})
      self.blocks.append(mods)
    self.blocks = nn.ModuleList(self.blocks)
    self.norm_out = _norm(w, f"{p}/norm_out", nn.LayerNorm(cfg["dim"], eps=1e-5))
    self.out = _linear(w, f"{p}/out")

  @classmethod
  def from_export(cls, rel: str) -> "PoseTransformerTorch":
    w, meta = _tensors(os.path.join(rel, "pose.safetensors"))
    return cls(w, meta["config"]).eval()

  def forward(self, x, t, audio, ref, style, mask):
    c = self.cfg
    b, n, _ = x.shape
    heads, hd = c["heads"], c["dim"] // c["heads"]
    h = self.in_pose(x) + self.in_audio(audio) + self.in_ref(ref)[:, None] + self.style[style][:, None]
    h = h + self.positions[:n][None]
    h = h + self.time[1](F.silu(self.time[0](_timestep_embedding(t, c["dim"]))))[:, None]
    attn_mask = mask[:, None, None, :].bool()
    for blk in self.blocks:
      y = blk["norm1"](h)
      q, k, v = (blk[n_](y).view(b, n, heads, hd).transpose(1, 2) for n_ in ("q", "k", "v"))
      a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
      h = h + blk["o"](a.transpose(1, 2).reshape(b, n, heads * hd))
      h = h + blk["fc2"](F.gelu(blk["fc1"](blk["norm2"](h))))
    return self.out(self.norm_out(h))
