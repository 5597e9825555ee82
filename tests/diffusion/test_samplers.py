"""Euler and UniPC plans and sampling loops against diffusers' schedulers on the same model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from shared.diffusion import ddpm, samplers
from shared.errors import ConfigError

ATOL = RTOL = 1e-5


def assert_close(got, want):
  """Elementwise 1e-5, with the absolute part scaled by the trajectory's magnitude: these loops reach values in
  the hundreds, where one float32 ulp is ~3e-5, and small elements come from cancelling large terms."""
  want = np.asarray(want)
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(want).max()) / 100))


def _unipc_kwargs(cfg):
  """Our unipc_plan kwargs → diffusers UniPCMultistepScheduler kwargs."""
  kw = dict(solver_order=cfg.get("solver_order", 2), solver_type=cfg.get("solver_type", "bh2"),
            predict_x0=cfg.get("predict_x0", True),
            prediction_type=cfg.get("prediction_type", "flow_prediction"),
            use_flow_sigmas=cfg.get("use_flow_sigmas", True), flow_shift=cfg.get("flow_shift", 1.0),
            timestep_spacing=cfg.get("timestep_spacing", "linspace"),
            final_sigmas_type=cfg.get("final_sigmas_type", "zero"),
            lower_order_final=cfg.get("lower_order_final", True),
            disable_corrector=list(cfg.get("disable_corrector", ())))
  if not kw["use_flow_sigmas"]:  # UniCUE / AudioLDM β table
    kw.update(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear")
  return kw


def _our_unipc(cfg, steps):
  kw = _unipc_kwargs(cfg)
  for k in ("beta_start", "beta_end", "beta_schedule"):
    kw.pop(k, None)
  sched = None if kw["use_flow_sigmas"] else ddpm.audioldm_schedule()
  return samplers.unipc_plan(steps, schedule=sched, **kw)


WAN = dict(flow_shift=5.0)
UNIPC_CONFIGS = {
    "wan_bh2_shift5": WAN,
    "flow_bh1_shift5": dict(WAN, solver_type="bh1", final_sigmas_type="sigma_min"),
    "flow_order3_shift3": dict(flow_shift=3.0, solver_order=3),
    "flow_no_corrector_at_2": dict(WAN, disable_corrector=(2,)),
    "audioldm_eps_bh2": dict(use_flow_sigmas=False, prediction_type="epsilon"),
    "audioldm_eps_bh1_leading": dict(use_flow_sigmas=False, prediction_type="epsilon",
                                     solver_type="bh1", timestep_spacing="leading",
                                     final_sigmas_type="sigma_min"),
    "audioldm_eps_noise_pred_trailing": dict(use_flow_sigmas=False, prediction_type="epsilon",
                                             predict_x0=False, timestep_spacing="trailing",
                                             final_sigmas_type="sigma_min"),
    "audioldm_v_order3": dict(use_flow_sigmas=False, prediction_type="v_prediction",
                              solver_order=3),
}


@pytest.mark.parametrize("steps,shift", [(10, 5.0), (50, 5.0), (7, 1.0), (20, 3.0)])
def test_euler_plan_equals_diffusers(steps, shift):
  ref = FlowMatchEulerDiscreteScheduler(shift=shift)
  ref.set_timesteps(steps)
  plan = samplers.euler_plan(steps, shift)
  np.testing.assert_allclose(plan.timesteps, ref.timesteps.numpy(), rtol=1e-6, atol=1e-4)
  np.testing.assert_allclose(plan.sigmas, ref.sigmas.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("steps", [10, 50, 13])
@pytest.mark.parametrize("name", sorted(UNIPC_CONFIGS))
def test_unipc_plan_equals_diffusers(name, steps):
  cfg = UNIPC_CONFIGS[name]
  ref = UniPCMultistepScheduler(**_unipc_kwargs(cfg))
  ref.set_timesteps(steps)
  plan = _our_unipc(cfg, steps)
  np.testing.assert_array_equal(plan.timesteps, ref.timesteps.numpy().astype(np.float32))
  np.testing.assert_allclose(plan.sigmas, ref.sigmas.numpy(), rtol=1e-6, atol=0)


def _drive(ref, fn, x, mask=None, value=None):
  """The diffusers loop: the model at each scheduler timestep, then scheduler.step."""
  x = torch.from_numpy(np.array(x))
  if mask is not None:
    x = torch.where(mask, value, x)
  for t in ref.timesteps:
    out = fn(x, t.to(torch.float32))
    x = ref.step(out, t, x).prev_sample
    if mask is not None:
      x = torch.where(mask, value, x)
  return x.numpy()


def test_euler_loop_equals_diffusers(model, noise):
  ref = FlowMatchEulerDiscreteScheduler(shift=5.0)
  ref.set_timesteps(10)
  want = _drive(ref, model.torch, noise)
  plan = samplers.euler_plan(10, 5.0)
  got = jax.jit(lambda x: samplers.euler_sample(model.jax, x, plan))(jnp.asarray(noise))
  assert_close(got, want)
  assert np.abs(want - noise).max() > 0.5  # the loop moved the sample


@pytest.mark.parametrize("name", sorted(UNIPC_CONFIGS))
def test_unipc_loop_equals_diffusers(name, model, noise):
  cfg = UNIPC_CONFIGS[name]
  ref = UniPCMultistepScheduler(**_unipc_kwargs(cfg))
  ref.set_timesteps(10)
  want = _drive(ref, model.torch, noise)
  plan = _our_unipc(cfg, 10)
  got = jax.jit(lambda x: samplers.unipc_sample(model.jax, x, plan))(jnp.asarray(noise))
  assert np.all(np.isfinite(want))
  assert_close(got, want)


def test_unipc_fixed_tokens_equal_diffusers_with_reimposed_condition(model, noise):
  """TI2V-style: the first tokens are given clean; they are reset after every step on both sides."""
  mask = np.zeros(noise.shape[:2] + (1,), bool)
  mask[:, :2] = True
  value = np.random.RandomState(5).randn(*noise.shape).astype(np.float32)
  ref = UniPCMultistepScheduler(**_unipc_kwargs(WAN))
  ref.set_timesteps(10)
  want = _drive(ref, model.torch, noise, torch.from_numpy(mask), torch.from_numpy(value))
  plan = _our_unipc(WAN, 10)
  got = jax.jit(lambda x: samplers.unipc_sample(model.jax, x, plan, fixed_mask=mask[..., 0],
                                                fixed_value=jnp.asarray(value)))(noise)
  assert_close(got, want)
  np.testing.assert_array_equal(np.asarray(got)[:, :2], value[:, :2])


def test_exact_velocity_lands_on_data():
  """Sign convention: with the true velocity ε - x0 of the linear path, sampling from ε gives x0."""
  r = np.random.RandomState(3)
  x0, eps = (jnp.asarray(r.randn(3, 5).astype(np.float32)) for _ in range(2))
  fn = lambda x, t: eps - x0
  euler = samplers.flow_sampler("euler", 10, 5.0)(fn, eps)
  unipc = samplers.flow_sampler("unipc", 10, 5.0)(fn, eps)
  np.testing.assert_allclose(np.asarray(euler), np.asarray(x0), atol=1e-5)
  np.testing.assert_allclose(np.asarray(unipc), np.asarray(x0), atol=1e-5)
  wrong = samplers.euler_sample(lambda x, t: x0 - eps, eps, samplers.euler_plan(10, 5.0))
  assert np.abs(np.asarray(wrong) - np.asarray(x0)).max() > 0.5


def test_loop_is_one_scan():
  """No Python loop per step: the jitted program has one while loop and calls fn once."""
  calls = []

  def fn(x, t):
    calls.append(1)
    return -x

  plan = samplers.unipc_plan(25, flow_shift=5.0)
  text = jax.jit(lambda x: samplers.unipc_sample(fn, x, plan)).lower(jnp.ones((2, 3))).as_text()
  assert len(calls) == 1
  assert text.count("stablehlo.while") == 1


def test_bad_config_is_reported():
  with pytest.raises(ConfigError, match="solver_type"):
    samplers.unipc_plan(10, solver_type="midpoint3")
  with pytest.raises(ConfigError, match="NoiseSchedule"):
    samplers.unipc_plan(10, use_flow_sigmas=False, prediction_type="epsilon")
  with pytest.raises(ConfigError, match="euler"):
    samplers.flow_sampler("heun", 10)
