"""DDPM noise schedules, q_sample, ε/v training targets, and the DDPM ancestral and DDIM steps.

Matches diffusers `DDPMScheduler` / `DDIMScheduler` (same β tables, same timestep spacings, same
step formulas) for the configurations this project uses:

- UniCUE / AudioLDM: 1000 steps, β 0.0015 → 0.0195, ε-prediction. AudioLDM (like every LDM)
  calls its schedule "linear" but builds it as linspace(√β0, √β1)² — diffusers' "scaled_linear";
  `audioldm_schedule()` gives that table. Its DDIM config: clip_sample False,
  set_alpha_to_one False, steps_offset 1, timestep_spacing "leading".

All schedule tables are host numpy (float32, as torch builds them); the step functions are pure
jnp and take traced integer timesteps, so a whole sampling loop can be one `lax.scan`
(see `shared.diffusion.samplers`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
  """A discrete variance-preserving schedule. betas/alphas_cumprod: float32 numpy [N]."""
  betas: np.ndarray
  alphas_cumprod: np.ndarray

  @property
  def num_train_timesteps(self) -> int:
    return int(self.betas.shape[0])


def make_schedule(num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                  beta_end: float = 0.02, beta_schedule: str = "linear") -> NoiseSchedule:
  """β table like diffusers: "linear" = linspace(β0, β1); "scaled_linear" = linspace(√β0, √β1)²."""
  n = int(num_train_timesteps)
  if beta_schedule == "linear":
    betas = np.linspace(beta_start, beta_end, n, dtype=np.float64).astype(np.float32)
  elif beta_schedule == "scaled_linear":
    betas = (np.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=np.float64)
             .astype(np.float32)) ** 2
  else:
    raise ConfigError(
        f"beta_schedule must be 'linear' or 'scaled_linear', got {beta_schedule!r}")
  alphas_cumprod = np.cumprod((1.0 - betas).astype(np.float32), dtype=np.float32)
  return NoiseSchedule(betas=betas.astype(np.float32), alphas_cumprod=alphas_cumprod)


def audioldm_schedule() -> NoiseSchedule:
  """UniCUE's speech generator (AudioLDM): 1000 steps, √β linear from 0.0015 to 0.0195."""
  return make_schedule(1000, 0.0015, 0.0195, "scaled_linear")


def inference_timesteps(num_train_timesteps: int, num_inference_steps: int,
                        spacing: str = "leading", steps_offset: int = 0) -> np.ndarray:
  """Descending int64 timesteps, as DDPMScheduler/DDIMScheduler.set_timesteps computes them."""
  n, k = int(num_train_timesteps), int(num_inference_steps)
  if not 0 < k <= n:
    raise ConfigError(f"num_inference_steps must be in [1, {n}], got {k}")
  if spacing == "linspace":
    return np.linspace(0, n - 1, k).round()[::-1].copy().astype(np.int64)
  if spacing == "leading":
    ratio = n // k
    return (np.arange(0, k) * ratio).round()[::-1].copy().astype(np.int64) + steps_offset
  if spacing == "trailing":
    ratio = n / k
    return np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1
  raise ConfigError(
      f"timestep_spacing must be 'linspace', 'leading' or 'trailing', got {spacing!r}")


def _bcast(a: Array, ndim: int) -> Array:
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def q_sample(schedule: NoiseSchedule, x0: Array, noise: Array, t: Array) -> Array:
  """x_t = √ᾱ_t x0 + √(1 - ᾱ_t) ε; t int [B] (or scalar). Like diffusers `add_noise`."""
  acp = jnp.asarray(schedule.alphas_cumprod)[t]
  a = _bcast(acp ** 0.5, x0.ndim)
  s = _bcast((1.0 - acp) ** 0.5, x0.ndim)
  return (a * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)).astype(x0.dtype)


def training_target(schedule: NoiseSchedule, x0: Array, noise: Array, t: Array,
                    prediction_type: str = "epsilon") -> Array:
  """The regression target: ε ("epsilon"), x0 ("sample") or
  v = √ᾱ ε - √(1-ᾱ) x0 ("v_prediction")."""
  if prediction_type == "epsilon":
    return noise.astype(jnp.float32)
  if prediction_type == "sample":
    return x0.astype(jnp.float32)
  if prediction_type == "v_prediction":
    acp = jnp.asarray(schedule.alphas_cumprod)[t]
    return (_bcast(acp ** 0.5, x0.ndim) * noise.astype(jnp.float32)
            - _bcast((1.0 - acp) ** 0.5, x0.ndim) * x0.astype(jnp.float32))
  raise ConfigError(f"prediction_type must be epsilon/sample/v_prediction, got {prediction_type!r}")


def sample_train_timesteps(rng: Array, batch: int, num_train_timesteps: int = 1000) -> Array:
  """Uniform integer timesteps in [0, N) (int32 [B])."""
  return jax.random.randint(rng, (batch,), 0, num_train_timesteps, dtype=jnp.int32)


def _pred_x0_eps(model_output, sample, acp_t, prediction_type):
  beta_t = 1.0 - acp_t
  if prediction_type == "epsilon":
    x0 = (sample - beta_t ** 0.5 * model_output) / acp_t ** 0.5
    eps = model_output
  elif prediction_type == "sample":
    x0 = model_output
    eps = (sample - acp_t ** 0.5 * x0) / beta_t ** 0.5
  elif prediction_type == "v_prediction":
    x0 = acp_t ** 0.5 * sample - beta_t ** 0.5 * model_output
    eps = acp_t ** 0.5 * model_output + beta_t ** 0.5 * sample
  else:
    raise ConfigError(
        f"prediction_type must be epsilon/sample/v_prediction, got {prediction_type!r}")
  return x0, eps


def predicted_eps(schedule: NoiseSchedule, model_output: Array, sample: Array, t: Array,
                  prediction_type: str = "epsilon") -> Array:
  """The ε a model output implies at x_t = sample, timestep t int [B] (any prediction_type), e.g. to compare ε
  errors of models trained on different targets."""
  acp = _bcast(jnp.asarray(schedule.alphas_cumprod)[t], sample.ndim)
  return _pred_x0_eps(model_output.astype(jnp.float32), sample.astype(jnp.float32), acp, prediction_type)[1]


def ddpm_step(schedule: NoiseSchedule, model_output: Array, t: Array, prev_t: Array,
              sample: Array, noise: Array | None = None, *, prediction_type: str = "epsilon",
              clip_sample: bool = False, clip_sample_range: float = 1.0,
              variance_type: str = "fixed_small") -> tuple[Array, Array]:
  """One ancestral DDPM step t → prev_t (prev_t < 0 means "to data"), like DDPMScheduler.step.

  t, prev_t: int scalars (may be traced). noise: standard normal like `sample`, added with the
  posterior std when t > 0 (None: no noise, i.e. the posterior mean). Returns (prev_sample,
  pred_original_sample), float32. variance_type: "fixed_small" or "fixed_large".
  """
  acp = jnp.asarray(schedule.alphas_cumprod)
  acp_t = acp[t]
  acp_prev = jnp.where(prev_t >= 0, acp[jnp.maximum(prev_t, 0)], 1.0)
  beta_prod_t = 1.0 - acp_t
  beta_prod_prev = 1.0 - acp_prev
  alpha_t = acp_t / acp_prev
  beta_t = 1.0 - alpha_t
  x = sample.astype(jnp.float32)
  x0, _ = _pred_x0_eps(model_output.astype(jnp.float32), x, acp_t, prediction_type)
  if clip_sample:
    x0 = jnp.clip(x0, -clip_sample_range, clip_sample_range)
  mean = (acp_prev ** 0.5 * beta_t / beta_prod_t) * x0 + (alpha_t ** 0.5 * beta_prod_prev
                                                          / beta_prod_t) * x
  if noise is not None:
    if variance_type == "fixed_small":
      var = jnp.maximum(beta_prod_prev / beta_prod_t * beta_t, 1e-20)
    elif variance_type == "fixed_large":
      var = beta_t
    else:
      raise ConfigError(f"variance_type must be fixed_small/fixed_large, got {variance_type!r}")
    mean = mean + jnp.where(t > 0, var ** 0.5, 0.0) * noise.astype(jnp.float32)
  return mean, x0


def ddim_step(schedule: NoiseSchedule, model_output: Array, t: Array, prev_t: Array,
              sample: Array, *, eta: float = 0.0, noise: Array | None = None,
              prediction_type: str = "epsilon", clip_sample: bool = False,
              clip_sample_range: float = 1.0, set_alpha_to_one: bool = False
              ) -> tuple[Array, Array]:
  """One DDIM step t → prev_t, like DDIMScheduler.step (diffusers uses prev_t = t - N // steps;
  prev_t < 0 uses ᾱ = 1 if set_alpha_to_one else ᾱ_0). Returns (prev_sample, pred_original)."""
  acp = jnp.asarray(schedule.alphas_cumprod)
  final = 1.0 if set_alpha_to_one else acp[0]
  acp_t = acp[t]
  acp_prev = jnp.where(prev_t >= 0, acp[jnp.maximum(prev_t, 0)], final)
  beta_prod_t = 1.0 - acp_t
  x = sample.astype(jnp.float32)
  x0, eps = _pred_x0_eps(model_output.astype(jnp.float32), x, acp_t, prediction_type)
  if clip_sample:
    x0 = jnp.clip(x0, -clip_sample_range, clip_sample_range)
  variance = (1.0 - acp_prev) / beta_prod_t * (1.0 - acp_t / acp_prev)
  std = eta * variance ** 0.5
  prev = acp_prev ** 0.5 * x0 + (1.0 - acp_prev - std ** 2) ** 0.5 * eps
  if eta > 0:
    if noise is None:
      raise ConfigError("ddim_step with eta > 0 needs `noise`")
    prev = prev + std * noise.astype(jnp.float32)
  return prev, x0
