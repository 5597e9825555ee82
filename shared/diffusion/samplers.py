"""Samplers: flow Euler, UniPC multistep, DDIM and DDPM, each one `lax.scan` over steps.

Every sampler has two halves:

- a *plan*, built on the host in numpy from the configuration (timesteps, σ table and, for UniPC,
  per-step linear coefficients). The plans reproduce diffusers' `set_timesteps` exactly:
  `euler_plan` ↔ FlowMatchEulerDiscreteScheduler(shift=...), `unipc_plan` ↔
  UniPCMultistepScheduler (flow: use_flow_sigmas + flow_shift + prediction_type="flow_prediction"
  as Wan configures it; or a discrete β schedule with ε / v / x0 prediction), `ddim_plan` /
  `ddpm_plan` ↔ DDIMScheduler / DDPMScheduler.
- a *loop*, `*_sample(fn, x, plan, ...)`, pure jnp, to be called inside `jax.jit`: one
  `lax.scan` over the steps (no Python loop per step), with `fn(x, t) -> prediction` the model
  (t a float32 scalar: the timestep the network is given, exactly as diffusers' pipelines pass it).
  Wrap CFG into `fn` with `shared.diffusion.guidance.guided`.

UniPC is written as tables: every predictor and corrector update of UniPC (bh1/bh2, predict_x0 or
not, any solver order) is a fixed linear combination of the current sample, the last sample, the
history of converted model outputs and the new output, whose coefficients depend only on the σ
schedule. `unipc_plan` computes those coefficients on the host (float64) following diffusers'
`multistep_uni_p_bh_update` / `multistep_uni_c_bh_update`; the scan only applies them.

Conditioning tokens kept clean (TI2V first frame, TV2A video): pass `fixed_mask` (1 = given) and
`fixed_value`; x is reset to the given value there before the first and after every step.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from shared.diffusion import ddpm as ddpm_lib
from shared.errors import ConfigError

Array = jax.Array
ModelFn = Callable[[Array, Array], Array]


def _fix(x: Array, fixed_mask: Array | None, fixed_value: Array | None) -> Array:
  if fixed_mask is None:
    return x
  m = jnp.asarray(fixed_mask)
  m = m.reshape(m.shape + (1,) * (x.ndim - m.ndim)).astype(bool)
  return jnp.where(m, fixed_value.astype(x.dtype), x)


# ------------------------------------------------------------------------------------------------
# Flow-matching Euler (FlowMatchEulerDiscreteScheduler)


class EulerPlan(NamedTuple):
  timesteps: np.ndarray   # float32 [n]: σ · N, what the model is given
  sigmas: np.ndarray      # float32 [n + 1], from ≈1 down to 0


def euler_plan(num_inference_steps: int, shift: float = 1.0,
               num_train_timesteps: int = 1000) -> EulerPlan:
  """σ schedule of FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(n).

  As in diffusers, the end point is the shifted training σ_min = shift(1/N), and the linspace
  between σ_max and it is shifted once more.
  """
  n, big_n = int(num_inference_steps), int(num_train_timesteps)
  if n < 1:
    raise ConfigError(f"num_inference_steps must be >= 1, got {n}")
  train = (np.linspace(1, big_n, big_n, dtype=np.float32)[::-1] / np.float32(big_n))
  train = (np.float32(shift) * train / (np.float32(1) + np.float32(shift - 1) * train)
           ).astype(np.float32)
  sigma_max, sigma_min = float(train[0]), float(train[-1])
  t = np.linspace(sigma_max * big_n, sigma_min * big_n, n)
  s = t / big_n
  s = (shift * s / (1 + (shift - 1) * s)).astype(np.float32)
  timesteps = (s * np.float32(big_n)).astype(np.float32)
  sigmas = np.concatenate([s, np.zeros(1, np.float32)]).astype(np.float32)
  return EulerPlan(timesteps=timesteps, sigmas=sigmas)


def euler_sample(fn: ModelFn, x: Array, plan: EulerPlan, *, fixed_mask: Array | None = None,
                 fixed_value: Array | None = None) -> Array:
  """Integrates dx/dσ = fn(x, t) from σ_0 to 0 with Euler steps (float32). x: initial noise."""
  x = _fix(x.astype(jnp.float32), fixed_mask, fixed_value)
  ts = jnp.asarray(plan.timesteps, jnp.float32)
  sig = jnp.asarray(plan.sigmas, jnp.float32)

  def body(x, i):
    v = fn(x, ts[i]).astype(jnp.float32)
    x = x + (sig[i + 1] - sig[i]) * v
    return _fix(x, fixed_mask, fixed_value), None

  x, _ = jax.lax.scan(body, x, jnp.arange(ts.shape[0]))
  return x


# ------------------------------------------------------------------------------------------------
# UniPC multistep (UniPCMultistepScheduler)


class UniPCPlan(NamedTuple):
  timesteps: np.ndarray   # float32 [n] (integer values, as diffusers casts them to int64)
  sigmas: np.ndarray      # float32 [n + 1]
  convert: np.ndarray     # float32 [n, 2]: m = c0 x + c1 out (the converted model output)
  corrector: np.ndarray   # float32 [n, order + 3]: x, last x, history[0..order-1], new m
  predictor: np.ndarray   # float32 [n, order + 1]: corrected x, history[0..order-1] (after push)


def unipc_sigmas(num_inference_steps: int, *, use_flow_sigmas: bool = True, flow_shift: float = 1.0,
                 schedule: ddpm_lib.NoiseSchedule | None = None, timestep_spacing: str = "linspace",
                 steps_offset: int = 0, final_sigmas_type: str = "zero",
                 num_train_timesteps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """(timesteps float32 [n], sigmas float32 [n+1]) as UniPCMultistepScheduler.set_timesteps.

  Flow: σ = shift(linspace(1, 1/N, n+1)[:-1]), σ_0 nudged to 1 - 1e-6, t = int(σ N).
  Otherwise: discrete timesteps by `timestep_spacing`, σ = √((1-ᾱ)/ᾱ) interpolated at them.
  """
  n = int(num_inference_steps)
  if n < 1:
    raise ConfigError(f"num_inference_steps must be >= 1, got {n}")
  if final_sigmas_type not in ("zero", "sigma_min"):
    raise ConfigError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {final_sigmas_type!r}")
  if use_flow_sigmas:
    big_n = int(num_train_timesteps)
    s = np.linspace(1, 1 / big_n, n + 1)[:-1]
    s = flow_shift * s / (1 + (flow_shift - 1) * s)
    if abs(s[0] - 1) < 1e-6:
      s[0] -= 1e-6
    timesteps = (s * big_n).astype(np.int64)
    last = s[-1] if final_sigmas_type == "sigma_min" else 0.0
  else:
    if schedule is None:
      raise ConfigError("unipc_sigmas without use_flow_sigmas needs a NoiseSchedule")
    big_n = schedule.num_train_timesteps
    if timestep_spacing == "linspace":
      timesteps = np.linspace(0, big_n - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
    elif timestep_spacing == "leading":
      ratio = big_n // (n + 1)
      timesteps = (np.arange(0, n + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
      timesteps += steps_offset
    elif timestep_spacing == "trailing":
      ratio = big_n / n
      timesteps = np.arange(big_n, 0, -ratio).round().copy().astype(np.int64) - 1
    else:
      raise ConfigError(
          f"timestep_spacing must be linspace/leading/trailing, got {timestep_spacing!r}")
    acp = schedule.alphas_cumprod
    full = (((1 - acp) / acp) ** 0.5).astype(np.float32)
    s = np.interp(timesteps, np.arange(0, len(full)), full)
    last = float(full[0]) if final_sigmas_type == "sigma_min" else 0.0
  sigmas = np.concatenate([s, [last]]).astype(np.float32)
  return timesteps.astype(np.float32), sigmas


def _alpha_sigma(s: np.ndarray, flow: bool) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(s, np.float64)
  if flow:
    return 1.0 - s, s
  a = 1.0 / np.sqrt(s ** 2 + 1.0)
  return a, s * a


def _bh_terms(h: float, order: int, predict_x0: bool, solver_type: str):
  """h φ_1(h), B(h) and the b vector of UniPC (diffusers' R/b construction), float64."""
  hh = -h if predict_x0 else h
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if solver_type == "bh1" else np.expm1(hh)
    b, fact = [], 1
    for i in range(1, order + 1):
      b.append(h_phi_k * fact / b_h)
      fact *= i + 1
      h_phi_k = h_phi_k / hh - 1.0 / fact
  return h_phi_1, b_h, np.array(b)


def unipc_plan(num_inference_steps: int, *, solver_order: int = 2, solver_type: str = "bh2",
               predict_x0: bool = True, prediction_type: str = "flow_prediction",
               use_flow_sigmas: bool = True, flow_shift: float = 1.0,
               schedule: ddpm_lib.NoiseSchedule | None = None, timestep_spacing: str = "linspace",
               steps_offset: int = 0, final_sigmas_type: str = "zero",
               lower_order_final: bool = True, disable_corrector: Sequence[int] = (),
               num_train_timesteps: int = 1000) -> UniPCPlan:
  """Timesteps and UniPC coefficient tables equal to UniPCMultistepScheduler with the same
  arguments. Wan / UniTalking: `unipc_plan(50, flow_shift=5.0)` (bh2, order 2, predict_x0, flow).
  UniCUE-style ε model: `unipc_plan(n, use_flow_sigmas=False, prediction_type="epsilon",
  schedule=audioldm_schedule())`.

  One deliberate difference: with solver_type "bh1" and final_sigmas_type "zero", diffusers'
  last predictor step multiplies B(h) = -inf by a zero residual and returns NaN; here the empty
  residual contributes nothing and the last step returns the x0 prediction, as bh2 does."""
  if solver_type not in ("bh1", "bh2"):
    raise ConfigError(f"solver_type must be 'bh1' or 'bh2', got {solver_type!r}")
  if prediction_type == "flow_prediction" and not (use_flow_sigmas and predict_x0):
    raise ConfigError("prediction_type 'flow_prediction' needs use_flow_sigmas and predict_x0")
  timesteps, sigmas = unipc_sigmas(
      num_inference_steps, use_flow_sigmas=use_flow_sigmas, flow_shift=flow_shift,
      schedule=schedule, timestep_spacing=timestep_spacing, steps_offset=steps_offset,
      final_sigmas_type=final_sigmas_type, num_train_timesteps=num_train_timesteps)
  n, order = len(timesteps), int(solver_order)
  alpha, sig = _alpha_sigma(sigmas, use_flow_sigmas)
  with np.errstate(divide="ignore"):
    lam = np.log(alpha) - np.log(sig)

  convert = np.zeros((n, 2))
  for i in range(n):
    a, s, raw = alpha[i], sig[i], float(sigmas[i])
    if predict_x0:
      table = {"epsilon": (1 / a, -s / a), "sample": (0.0, 1.0), "v_prediction": (a, -s),
               "flow_prediction": (1.0, -raw)}
    else:
      table = {"epsilon": (0.0, 1.0), "sample": (1 / s, -a / s), "v_prediction": (s, a)}
    if prediction_type not in table:
      raise ConfigError(f"prediction_type {prediction_type!r} not supported with "
                        f"predict_x0={predict_x0}")
    convert[i] = table[prediction_type]

  this_order = [min(order, n - i if lower_order_final else order, i + 1) for i in range(n)]

  def update(s0: int, t_idx: int, o: int, hist_idx: Callable[[int], int], rhos_fn):
    """Coefficients of one UniPC update from σ[s0] to σ[t_idx] (see diffusers): the sample's,
    the newest output m0's, the older outputs' (k steps back), B(h)·base, and the ρ vector."""
    h = lam[t_idx] - lam[s0]
    rks = [(lam[hist_idx(k)] - lam[s0]) / h for k in range(1, o)] + [1.0]
    h_phi_1, b_h, b = _bh_terms(h, o, predict_x0, solver_type)
    r_mat = np.stack([np.power(np.array(rks), j) for j in range(o)])
    rhos = rhos_fn(r_mat, b, o)
    base = alpha[t_idx] if predict_x0 else sig[t_idx]
    x_c = sig[t_idx] / sig[s0] if predict_x0 else alpha[t_idx] / alpha[s0]
    c_m0 = -base * h_phi_1
    c_hist = {}
    for k in range(1, o):
      c = -base * b_h * rhos[k - 1] / rks[k - 1]
      c_hist[k] = c
      c_m0 -= c
    return x_c, c_m0, c_hist, base * b_h, rhos

  corrector = np.zeros((n, order + 3))
  predictor = np.zeros((n, order + 1))
  for i in range(n):
    # Corrector: refines x_i using the new output m_i; order of the previous predictor.
    if i > 0 and (i - 1) not in disable_corrector:
      o = this_order[i - 1]
      rc = lambda r, b, o: np.array([0.5]) if o == 1 else np.linalg.solve(r, b)
      x_c, c_m0, c_hist, bb, rhos = update(i - 1, i, o, lambda k: i - 1 - k, rc)
      corrector[i, 1] = x_c
      corrector[i, 2 + order - 1] = c_m0 + bb * rhos[-1]
      for k, c in c_hist.items():
        corrector[i, 2 + order - 1 - k] = c
      corrector[i, order + 2] = -bb * rhos[-1]
    else:
      corrector[i, 0] = 1.0
    # Predictor: x_i → x_{i+1} from the history ending with m_i.
    o = this_order[i]
    rp = lambda r, b, o: (np.array([]) if o == 1 else np.array([0.5]) if o == 2
                          else np.linalg.solve(r[:-1, :-1], b[:-1]))
    x_c, c_m0, c_hist, _, _ = update(i, i + 1, o, lambda k: i - k, rp)
    predictor[i, 0] = x_c
    predictor[i, 1 + order - 1] = c_m0
    for k, c in c_hist.items():
      predictor[i, 1 + order - 1 - k] = c
  for name, table in (("corrector", corrector), ("predictor", predictor), ("convert", convert)):
    if not np.all(np.isfinite(table)):
      raise ConfigError(f"UniPC {name} coefficients are not finite for this configuration "
                        f"(sigmas {sigmas.tolist()}); try final_sigmas_type='sigma_min'")
  return UniPCPlan(timesteps=timesteps, sigmas=sigmas, convert=convert.astype(np.float32),
                   corrector=corrector.astype(np.float32),
                   predictor=predictor.astype(np.float32))


def unipc_sample(fn: ModelFn, x: Array, plan: UniPCPlan, *, fixed_mask: Array | None = None,
                 fixed_value: Array | None = None) -> Array:
  """Runs UniPC (predictor + corrector) over the plan's steps; float32. x: initial noise."""
  order = plan.predictor.shape[1] - 1
  x = _fix(x.astype(jnp.float32), fixed_mask, fixed_value)
  ts = jnp.asarray(plan.timesteps, jnp.float32)
  conv, corr, pred = (jnp.asarray(a, jnp.float32)
                      for a in (plan.convert, plan.corrector, plan.predictor))

  def combine(coefs, arrays):
    return sum(coefs[j] * arrays[j] for j in range(len(arrays)))

  def body(carry, i):
    x, last, hist = carry
    out = fn(x, ts[i]).astype(jnp.float32)
    m = conv[i, 0] * x + conv[i, 1] * out
    xc = combine(corr[i], [x, last] + [hist[j] for j in range(order)] + [m])
    hist = jnp.concatenate([hist[1:], m[None]], axis=0)
    x_next = combine(pred[i], [xc] + [hist[j] for j in range(order)])
    return (_fix(x_next, fixed_mask, fixed_value), xc, hist), None

  hist0 = jnp.zeros((order,) + x.shape, jnp.float32)
  (x, _, _), _ = jax.lax.scan(body, (x, jnp.zeros_like(x), hist0), jnp.arange(ts.shape[0]))
  return x


def flow_sampler(name: str, num_inference_steps: int, shift: float = 1.0
                 ) -> Callable[..., Array]:
  """A flow-prediction sampler by config name: "euler" or "unipc" (Wan's bh2, order 2).

  Returns sample(fn, x, *, fixed_mask=None, fixed_value=None) -> x0 (call it inside jit).
  """
  if name == "euler":
    plan = euler_plan(num_inference_steps, shift)
    return lambda fn, x, **kw: euler_sample(fn, x, plan, **kw)
  if name == "unipc":
    uplan = unipc_plan(num_inference_steps, flow_shift=shift)
    return lambda fn, x, **kw: unipc_sample(fn, x, uplan, **kw)
  raise ConfigError(f"flow sampler must be 'euler' or 'unipc', got {name!r}")


# ------------------------------------------------------------------------------------------------
# DDIM / DDPM (discrete β schedules; UniCUE's AudioLDM generator)


class DiscretePlan(NamedTuple):
  timesteps: np.ndarray   # int32 [n], descending
  prev_timesteps: np.ndarray  # int32 [n]; < 0 means the final step to data


def ddim_plan(schedule: ddpm_lib.NoiseSchedule, num_inference_steps: int,
              timestep_spacing: str = "leading", steps_offset: int = 0) -> DiscretePlan:
  """DDIMScheduler.set_timesteps; prev_t = t - N // n as DDIMScheduler.step computes it."""
  big_n = schedule.num_train_timesteps
  ts = ddpm_lib.inference_timesteps(big_n, num_inference_steps, timestep_spacing, steps_offset)
  return DiscretePlan(ts.astype(np.int32), (ts - big_n // num_inference_steps).astype(np.int32))


def ddpm_plan(schedule: ddpm_lib.NoiseSchedule, num_inference_steps: int | None = None,
              timestep_spacing: str = "leading", steps_offset: int = 0) -> DiscretePlan:
  """DDPMScheduler timesteps (all N when num_inference_steps is None); prev_t = the next one."""
  big_n = schedule.num_train_timesteps
  if num_inference_steps is None:
    ts = np.arange(big_n)[::-1].copy()
  else:
    ts = ddpm_lib.inference_timesteps(big_n, num_inference_steps, timestep_spacing, steps_offset)
  prev = np.concatenate([ts[1:], [-1]])
  return DiscretePlan(ts.astype(np.int32), prev.astype(np.int32))


def ddim_sample(fn: ModelFn, x: Array, schedule: ddpm_lib.NoiseSchedule, plan: DiscretePlan, *,
                prediction_type: str = "epsilon", eta: float = 0.0, rng: Array | None = None,
                clip_sample: bool = False, set_alpha_to_one: bool = False,
                fixed_mask: Array | None = None, fixed_value: Array | None = None) -> Array:
  """DDIM loop (deterministic for eta = 0; eta > 0 needs rng). fn gets t as float32."""
  if eta > 0 and rng is None:
    raise ConfigError("ddim_sample with eta > 0 needs rng")
  x = _fix(x.astype(jnp.float32), fixed_mask, fixed_value)
  ts, prev = jnp.asarray(plan.timesteps), jnp.asarray(plan.prev_timesteps)

  def body(x, i):
    out = fn(x, ts[i].astype(jnp.float32))
    noise = (jax.random.normal(jax.random.fold_in(rng, i), x.shape, jnp.float32)
             if eta > 0 else None)
    x, _ = ddpm_lib.ddim_step(schedule, out, ts[i], prev[i], x, eta=eta, noise=noise,
                              prediction_type=prediction_type, clip_sample=clip_sample,
                              set_alpha_to_one=set_alpha_to_one)
    return _fix(x, fixed_mask, fixed_value), None

  x, _ = jax.lax.scan(body, x, jnp.arange(ts.shape[0]))
  return x


def ddpm_sample(fn: ModelFn, x: Array, schedule: ddpm_lib.NoiseSchedule, plan: DiscretePlan, *,
                rng: Array | None = None, noises: Array | None = None,
                prediction_type: str = "epsilon", clip_sample: bool = False,
                variance_type: str = "fixed_small", fixed_mask: Array | None = None,
                fixed_value: Array | None = None) -> Array:
  """Ancestral DDPM loop. Step noise: `noises` [n, *x.shape] if given, else drawn from rng."""
  if rng is None and noises is None:
    raise ConfigError("ddpm_sample needs rng or noises")
  x = _fix(x.astype(jnp.float32), fixed_mask, fixed_value)
  ts, prev = jnp.asarray(plan.timesteps), jnp.asarray(plan.prev_timesteps)

  def body(x, i):
    out = fn(x, ts[i].astype(jnp.float32))
    noise = (noises[i] if noises is not None
             else jax.random.normal(jax.random.fold_in(rng, i), x.shape, jnp.float32))
    x, _ = ddpm_lib.ddpm_step(schedule, out, ts[i], prev[i], x, noise,
                              prediction_type=prediction_type, clip_sample=clip_sample,
                              variance_type=variance_type)
    return _fix(x, fixed_mask, fixed_value), None

  x, _ = jax.lax.scan(body, x, jnp.arange(ts.shape[0]))
  return x


__all__ = ["EulerPlan", "UniPCPlan", "DiscretePlan", "euler_plan", "euler_sample", "unipc_sigmas",
           "unipc_plan", "unipc_sample", "flow_sampler", "ddim_plan", "ddpm_plan", "ddim_sample",
           "ddpm_sample"]
