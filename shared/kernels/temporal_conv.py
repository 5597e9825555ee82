"""Pallas fused depthwise temporal convolution + residual (SANM's FSMN memory block), forward + backward.

  out[b, t, c] = x[b, t, c] * residual + sum_j w[j, c] * x[b, t + j - left, c]    (zeros outside [0, T))

x [B, T, C], w [K, C] (PyTorch's depthwise Conv1d weight [C, 1, K] is `w.T[:, None, :]`), left + right
= K - 1 padding. Padding conventions:
  causal            left = K - 1, right = 0
  centred           left = (K - 1) // 2, right = K - 1 - left
  FSMN (FunASR)     left = (K - 1) // 2 + shift, right = K - 1 - left   (`fsmn_padding`)

One program per (batch, time tile, channel tile): it reads the tile plus a K - 1 halo and sums the K
shifted, per-channel-scaled copies in float32, then adds the residual. Backward: dx is the same kernel
on the output gradient with the taps flipped and the padding swapped (left' = right); dw is a second
kernel giving per-tile partial sums, reduced in XLA. Lowerings: interpret (CPU tests), Triton (GPU);
the GPU lowering has been traced (lowered to Triton IR) but not run on hardware.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def fsmn_padding(kernel_size: int, shift: int = 0) -> tuple[int, int]:
  """FunASR SANM FSMN padding: ((K-1)//2 + shift, K-1-left)."""
  left = (kernel_size - 1) // 2 + shift
  return left, kernel_size - 1 - left


def reference(x, w, *, left: int, residual: bool = True):
  """The same op through jax.lax.conv_general_dilated (float32 accumulation)."""
  k, c = w.shape
  right = k - 1 - left
  y = jax.lax.conv_general_dilated(
      x, w[:, None, :].astype(x.dtype), window_strides=(1,), padding=[(left, right)],
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=c,
      preferred_element_type=jnp.float32)
  if residual:
    y = y + x.astype(jnp.float32)
  return y.astype(x.dtype)


def shifted_sum(x, w, *, left: int, residual: bool = True):
  """The same op as K shifted, per-channel-scaled copies of x summed in float32 (XLA elementwise ops; no
  convolution). XLA:CPU runs a grouped convolution inside a scanned layer stack ~10x slower than this."""
  k, _ = w.shape
  t = x.shape[1]
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (left, k - 1 - left), (0, 0)))
  wf = w.astype(jnp.float32)
  y = x.astype(jnp.float32) if residual else jnp.zeros(x.shape, jnp.float32)
  for j in range(k):   # K is a static kernel size (11 / 21): unrolled taps, not a loop over time
    y = y + xp[:, j:j + t] * wf[j]
  return y.astype(x.dtype)


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _mode(interpret):
  """interpret=None: interpret on CPU only. interpret=False on a CPU host gives the Triton lowering
  (what tests use to trace the GPU path with `.lower(lowering_platforms=("cuda",))`)."""
  if interpret or (interpret is None and jax.default_backend() == "cpu"):
    return dict(interpret=True)
  if jax.default_backend() == "tpu":
    raise NotImplementedError("temporal_conv has no TPU lowering; use implementation='xla' on TPU")
  from jax.experimental.pallas import triton as plgpu
  return dict(compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2))


def _conv_kernel(x_ref, w_ref, o_ref, *, taps: int, left: int, bt: int, residual: bool):
  t0 = pl.multiple_of(pl.program_id(1) * bt, bt)
  acc = jnp.zeros(o_ref.shape, jnp.float32)
  if residual:
    acc += x_ref[pl.ds(t0 + left, bt), :].astype(jnp.float32)
  for j in range(taps):  # static unroll over the K taps (K ~ 3..31)
    acc += w_ref[j, :].astype(jnp.float32)[None, :] * x_ref[pl.ds(t0 + j, bt), :].astype(jnp.float32)
  o_ref[...] = acc.astype(o_ref.dtype)


def _dw_kernel(x_ref, g_ref, dw_ref, *, taps: int, bt: int):
  t0 = pl.multiple_of(pl.program_id(1) * bt, bt)
  g = g_ref[...].astype(jnp.float32)
  for j in range(taps):
    dw_ref[j, :] = jnp.sum(g * x_ref[pl.ds(t0 + j, bt), :].astype(jnp.float32), axis=0)


def _layout(x, t_pad, c_pad, left, right):
  """[B, T, C] -> [B, t_pad + K - 1, c_pad]: zero halo of `left` before, the rest after."""
  t, c = x.shape[1], x.shape[2]
  return jnp.pad(x, ((0, 0), (left, t_pad - t + right), (0, c_pad - c)))


def _sizes(t, c, blocks):
  bt, bc = blocks if blocks else (256, 128)
  bt, bc = min(bt, max(16, _next_pow2(t))), min(bc, max(16, _next_pow2(c)))
  return bt, bc, -(-t // bt) * bt, -(-c // bc) * bc


def _conv(x, w, left, residual, blocks, interpret):
  b, t, c = x.shape
  k = w.shape[0]
  bt, bc, t_pad, c_pad = _sizes(t, c, blocks)
  xp = _layout(x, t_pad, c_pad, left, k - 1 - left)
  wp = jnp.pad(w, ((0, 0), (0, c_pad - c)))
  kernel = functools.partial(_conv_kernel, taps=k, left=left, bt=bt, residual=residual)
  out = pl.pallas_call(
      kernel, grid=(b, t_pad // bt, c_pad // bc),
      in_specs=[pl.BlockSpec((None, xp.shape[1], bc), lambda bi, ti, ci: (bi, 0, ci)),
                pl.BlockSpec((k, bc), lambda bi, ti, ci: (0, ci))],
      out_specs=pl.BlockSpec((None, bt, bc), lambda bi, ti, ci: (bi, ti, ci)),
      out_shape=jax.ShapeDtypeStruct((b, t_pad, c_pad), x.dtype), name="temporal_conv",
      **_mode(interpret))(xp, wp)
  return out[:, :t, :c]


def _dw(x, g, k, left, blocks, interpret):
  b, t, c = x.shape
  bt, bc, t_pad, c_pad = _sizes(t, c, blocks)
  xp = _layout(x, t_pad, c_pad, left, k - 1 - left)
  gp = jnp.pad(g, ((0, 0), (0, t_pad - t), (0, c_pad - c)))
  nt = t_pad // bt
  parts = pl.pallas_call(
      functools.partial(_dw_kernel, taps=k, bt=bt), grid=(b, nt, c_pad // bc),
      in_specs=[pl.BlockSpec((None, xp.shape[1], bc), lambda bi, ti, ci: (bi, 0, ci)),
                pl.BlockSpec((None, bt, bc), lambda bi, ti, ci: (bi, ti, ci))],
      out_specs=pl.BlockSpec((None, k, bc), lambda bi, ti, ci: (bi * nt + ti, 0, ci)),
      out_shape=jax.ShapeDtypeStruct((b * nt, k, c_pad), jnp.float32), name="temporal_conv_dw",
      **_mode(interpret))(xp, gp)
  return parts.sum(0)[:, :c]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _temporal_conv(x, w, left, residual, blocks, interpret):
  return _conv(x, w, left, residual, blocks, interpret)


def _fwd(x, w, left, residual, blocks, interpret):
  return _conv(x, w, left, residual, blocks, interpret), (x, w)


def _bwd(left, residual, blocks, interpret, res, g):
  x, w = res
  k = w.shape[0]
  dx = _conv(g, w[::-1], k - 1 - left, residual, blocks, interpret)
  dw = _dw(x, g, k, left, blocks, interpret).astype(w.dtype)
  return dx.astype(x.dtype), dw


_temporal_conv.defvjp(_fwd, _bwd)


def temporal_conv(x, w, *, left: int, residual: bool = True, implementation: str = "auto",
                  block_sizes: tuple[int, int] | None = None, interpret: bool | None = None):
  """x [B, T, C], w [K, C] -> [B, T, C] in x.dtype: x·residual + depthwise conv (padding left, K-1-left).

  implementation: "pallas", "xla" (conv_general_dilated; cuDNN on GPU), "shifted" (K shifted copies summed:
  what "auto" takes on CPU, where XLA's grouped convolution in a scanned stack is slow) or "auto" (= "xla" off CPU:
  the Pallas kernel is verified in interpret mode and lowered to Triton, but has not been compiled or
  timed on a GPU; "auto" should switch to it only once benchmarks/conv.py shows it winning there).
  block_sizes: (time, channel) tile, powers of two.
  """
  k, c = w.shape
  if x.ndim != 3 or x.shape[-1] != c:
    raise ValueError(f"temporal_conv expects x [B, T, {c}] for w [K={k}, C={c}], got x {x.shape}")
  if not 0 <= left <= k - 1:
    raise ValueError(f"left padding {left} must lie in [0, K-1={k - 1}]")
  if implementation == "auto":
    implementation = "shifted" if jax.default_backend() == "cpu" else "xla"
  if implementation == "xla":
    return reference(x, w, left=left, residual=residual)
  if implementation == "shifted":
    return shifted_sum(x, w, left=left, residual=residual)
  if implementation != "pallas":
    raise ValueError(f"unknown temporal_conv implementation {implementation!r}; expected auto, pallas, xla, shifted")
  return _temporal_conv(x, w, left, residual, tuple(block_sizes) if block_sizes else None, interpret)
