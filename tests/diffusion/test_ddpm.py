"""DDPM schedule, q_sample, DDPM and DDIM steps and loops against diffusers (UniCUE's config)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from shared.diffusion import ddpm, samplers

AUDIOLDM = dict(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                beta_schedule="scaled_linear")
LINEAR = dict(AUDIOLDM, beta_schedule="linear")


@pytest.mark.parametrize("cfg", [AUDIOLDM, LINEAR], ids=["scaled_linear", "linear"])
def test_schedule_and_q_sample_equal_diffusers(cfg):
  ref = DDPMScheduler(**cfg)
  ours = ddpm.make_schedule(**cfg)
  np.testing.assert_allclose(ours.betas, ref.betas.numpy(), rtol=1e-6)
  np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=1e-5)
  r = np.random.RandomState(0)
  x0, eps = r.randn(3, 2, 4).astype(np.float32), r.randn(3, 2, 4).astype(np.float32)
  t = np.array([0, 500, 999])
  want = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(t)).numpy()
  np.testing.assert_allclose(np.asarray(ddpm.q_sample(ours, x0, eps, t)), want, atol=1e-6)
  v = ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(t)).numpy()
  np.testing.assert_allclose(
      np.asarray(ddpm.training_target(ours, x0, eps, t, "v_prediction")), v, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ddpm.training_target(ours, x0, eps, t)), eps)


@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
def test_predicted_eps_inverts_each_target(ptype):
  """A model output equal to the training target of (x0, ε) implies ε back at x_t, for every target."""
  s = ddpm.audioldm_schedule()
  r = np.random.RandomState(1)
  x0, eps = r.randn(4, 3, 5).astype(np.float32), r.randn(4, 3, 5).astype(np.float32)
  t = np.array([0, 250, 700, 999])
  xt = ddpm.q_sample(s, x0, eps, t)
  out = ddpm.training_target(s, x0, eps, t, ptype)
  np.testing.assert_allclose(np.asarray(ddpm.predicted_eps(s, out, xt, t, ptype)), eps, atol=2e-4)


def test_audioldm_preset():
  s = ddpm.audioldm_schedule()
  assert s.num_train_timesteps == 1000
  np.testing.assert_allclose([s.betas[0], s.betas[-1]], [0.0015, 0.0195], rtol=1e-6)


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("linspace", 0), ("trailing", 0)])
def test_timesteps_equal_diffusers(spacing, offset):
  for cls in (DDPMScheduler, DDIMScheduler):
    ref = cls(**AUDIOLDM, timestep_spacing=spacing, steps_offset=offset)
    ref.set_timesteps(25)
    got = ddpm.inference_timesteps(1000, 25, spacing, offset)
    np.testing.assert_array_equal(got, ref.timesteps.numpy())


STEP_CASES = [
    dict(prediction_type="epsilon", clip_sample=False, variance_type="fixed_small"),
    dict(prediction_type="epsilon", clip_sample=True, variance_type="fixed_large"),
    dict(prediction_type="v_prediction", clip_sample=False, variance_type="fixed_small"),
    dict(prediction_type="sample", clip_sample=False, variance_type="fixed_small"),
]


@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_ddpm_step_equals_diffusers(case):
  ref = DDPMScheduler(**AUDIOLDM, **case)
  ref.set_timesteps(20)
  ours = ddpm.audioldm_schedule()
  plan = samplers.ddpm_plan(ours, 20)
  r = np.random.RandomState(1)
  for i in (0, 7, 19):  # first, middle, last (t -> -1, no noise)
    t = int(ref.timesteps[i])
    x, out = r.randn(2, 3, 4).astype(np.float32), r.randn(2, 3, 4).astype(np.float32)
    res = ref.step(torch.from_numpy(out), t, torch.from_numpy(x),
                   generator=torch.Generator().manual_seed(i))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i)).numpy()
    prev, x0 = ddpm.ddpm_step(ours, jnp.asarray(out), t, int(plan.prev_timesteps[i]),
                              jnp.asarray(x), jnp.asarray(noise), **case)
    np.testing.assert_allclose(np.asarray(prev), res.prev_sample.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(x0), res.pred_original_sample.numpy(), atol=1e-4,
                               rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("case", STEP_CASES[:3], ids=lambda c: "-".join(map(str, c.values())))
def test_ddim_step_equals_diffusers(case, eta):
  case = {k: v for k, v in case.items() if k != "variance_type"}
  ref = DDIMScheduler(**AUDIOLDM, **case, set_alpha_to_one=False, steps_offset=1)
  ref.set_timesteps(20)
  ours = ddpm.audioldm_schedule()
  plan = samplers.ddim_plan(ours, 20, "leading", 1)
  np.testing.assert_array_equal(plan.timesteps, ref.timesteps.numpy())
  r = np.random.RandomState(2)
  for i in (0, 7, 19):
    t = int(ref.timesteps[i])
    x, out, n = (r.randn(2, 3, 4).astype(np.float32) for _ in range(3))
    res = ref.step(torch.from_numpy(out), t, torch.from_numpy(x), eta=eta,
                   variance_noise=torch.from_numpy(n) if eta > 0 else None)
    prev, x0 = ddpm.ddim_step(ours, jnp.asarray(out), t, int(plan.prev_timesteps[i]),
                              jnp.asarray(x), eta=eta, noise=jnp.asarray(n), **case)
    np.testing.assert_allclose(np.asarray(prev), res.prev_sample.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(x0), res.pred_original_sample.numpy(), atol=1e-4,
                               rtol=1e-5)


def test_ddim_loop_equals_diffusers(model, noise):
  """UniCUE / AudioLDM sampling config: DDIM, ε, 10 steps, leading + offset 1, ᾱ_final = ᾱ_0."""
  ref = DDIMScheduler(**AUDIOLDM, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
  ref.set_timesteps(10)
  x = torch.from_numpy(noise)
  for t in ref.timesteps:
    x = ref.step(model.torch(x, t.to(torch.float32)), t, x).prev_sample
  sched = ddpm.audioldm_schedule()
  plan = samplers.ddim_plan(sched, 10, "leading", 1)
  got = jax.jit(lambda x: samplers.ddim_sample(model.jax, x, sched, plan))(jnp.asarray(noise))
  np.testing.assert_allclose(np.asarray(got), x.numpy(), atol=1e-5, rtol=1e-5)


def test_ddpm_loop_equals_diffusers(model, noise):
  ref = DDPMScheduler(**AUDIOLDM, clip_sample=False)
  ref.set_timesteps(10)
  gen = torch.Generator().manual_seed(0)
  x = torch.from_numpy(noise)
  for t in ref.timesteps:
    x = ref.step(model.torch(x, t.to(torch.float32)), t, x, generator=gen).prev_sample
  gen = torch.Generator().manual_seed(0)  # the same draws, in order (none at t = 0)
  noises = np.stack([torch.randn(noise.shape, generator=gen).numpy() for _ in range(9)]
                    + [np.zeros_like(noise)])
  sched = ddpm.audioldm_schedule()
  plan = samplers.ddpm_plan(sched, 10)
  got = jax.jit(lambda x, n: samplers.ddpm_sample(model.jax, x, sched, plan, noises=n))(
      jnp.asarray(noise), jnp.asarray(noises))
  np.testing.assert_allclose(np.asarray(got), x.numpy(), atol=1e-5, rtol=1e-5)
