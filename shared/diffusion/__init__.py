"""Flow matching, DDPM, classifier-free guidance and samplers (Euler, UniPC, DDIM, DDPM).

- `flow_matching`: linear path x_σ = (1-σ) x0 + σ ε, target v = ε - x0 (diffusers/Wan sign),
  σ sampling (uniform, logit-normal, shift), per-token σ and weighted loss for clean tokens.
- `ddpm`: β schedules (AudioLDM's for UniCUE), q_sample, ε/v targets, DDPM and DDIM steps equal to
  diffusers' DDPMScheduler / DDIMScheduler.
- `samplers`: host-side plans equal to diffusers' `set_timesteps`, and jit-able `lax.scan` loops
  taking `fn(x, t) -> prediction`: Euler (FlowMatchEulerDiscreteScheduler), UniPC
  (UniPCMultistepScheduler), DDIM, DDPM.
- `guidance`: nested CFG (uncond + s_text (text - uncond) + s_ref (text+ref - text)), a batched
  guided model function, condition dropout for training.

Typical UniTalking sampling, inside jit:

  plan = unipc_plan(50, flow_shift=5.0)
  model = guided(lambda x, t, c: net.apply(p, x, t, c), [null, text, text_ref], [5.0, 2.0])
  x0 = unipc_sample(model, noise, plan)
"""
from __future__ import annotations

from shared.diffusion.ddpm import (NoiseSchedule, audioldm_schedule, ddim_step, ddpm_step,
                                   inference_timesteps, make_schedule, predicted_eps, q_sample,
                                   sample_train_timesteps, training_target)
from shared.diffusion.flow_matching import (flow_matching_inputs, flow_matching_loss, interpolate,
                                            per_token_sigma, sample_sigma, shift_sigma,
                                            sigma_to_timestep, velocity_target, weighted_mse)
from shared.diffusion.guidance import apply_dropout, cfg, cfg_combine, dropout_masks, guided
from shared.diffusion.samplers import (DiscretePlan, EulerPlan, UniPCPlan, ddim_plan, ddim_sample,
                                       ddpm_plan, ddpm_sample, euler_plan, euler_sample,
                                       flow_sampler, unipc_plan, unipc_sample, unipc_sigmas)

__all__ = [
    "NoiseSchedule", "audioldm_schedule", "ddim_step", "ddpm_step", "inference_timesteps",
    "make_schedule", "predicted_eps", "q_sample", "sample_train_timesteps", "training_target",
    "flow_matching_inputs", "flow_matching_loss", "interpolate", "per_token_sigma",
    "sample_sigma", "shift_sigma", "sigma_to_timestep", "velocity_target", "weighted_mse",
    "apply_dropout", "cfg", "cfg_combine", "dropout_masks", "guided",
    "DiscretePlan", "EulerPlan", "UniPCPlan", "ddim_plan", "ddim_sample", "ddpm_plan",
    "ddpm_sample", "euler_plan", "euler_sample", "flow_sampler", "unipc_plan", "unipc_sample",
    "unipc_sigmas",
]
