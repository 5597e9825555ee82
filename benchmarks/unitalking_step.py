"""UniTalking train-step time: ours (JAX, jitted) vs the PyTorch reference built from diffusers Wan blocks
(unitalking_jax/torch_model.py), same weights, same inputs, same CPU, same run.

  python benchmarks/unitalking_step.py                      # tiny + ~100M configs
  python benchmarks/unitalking_step.py --configs tiny --steps 5 --threads 2

One step = forward + backward + AdamW update, fp32, flow-matching MSE on both streams (velocity targets
noise - x0, per-token video timesteps). Warm-up steps (compile for ours) are excluded; the timed steps of
ours and torch alternate step by step (a loaded, shared CPU then slows both alike). One JSON line per
config: "what", "shape", "params", "ours_s" / "torch_s" (medians of --steps steps), "ratio" (torch_s /
ours_s: above 1 = ours faster), "ours_min_s" / "torch_min_s" / "ratio_min" (fastest steps: the figure least
disturbed by other processes), "device", "threads", "loss_ours" / "loss_torch" (first step: both compute the
same thing), every step's seconds. torch.set_num_threads(--threads), default all cores (what XLA's CPU
backend uses); OMP_WAIT_POLICY=PASSIVE unless set (see below).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch's OpenMP threads otherwise spin at barriers: on a CPU shared with other jobs its steps then take up to
# ~70x longer (tiny: 0.12 s quiet, 8.9 s at load average 8; with passive waiting 0.20 s at load average 6).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> (model sizes, input sizes); tiny = configs/unitalking/tiny.py
CONFIGS = {
    "tiny": dict(dim=128, heads=4, layers=4, ffn=256, text_dim=64, freq_dim=64, vocab=512,
                 batch=8, frames=32, hw=4, cv=24, ta=128, ca=16, text_len=8),
    "100m": dict(dim=768, heads=12, layers=6, ffn=2048, text_dim=256, freq_dim=256, vocab=512,
                 batch=2, frames=8, hw=8, cv=16, ta=128, ca=16, text_len=16),
}
AUDIO_PATCH = 4


def _model_config(s: dict):
  from shared.models.wan_dit import WanDiTConfig
  from unitalking_jax.model import UniTalkingConfig
  v = WanDiTConfig(patch_size=(1, 2, 2), num_attention_heads=s["heads"], attention_head_dim=s["dim"] // s["heads"],
                   in_channels=s["cv"], out_channels=s["cv"], text_dim=s["text_dim"], freq_dim=s["freq_dim"],
                   ffn_dim=s["ffn"], num_layers=s["layers"])
  return UniTalkingConfig(v, audio_channels=s["ca"], audio_patch=AUDIO_PATCH, ref_dim=s["ca"] * AUDIO_PATCH,
                          text_vocab=s["vocab"])


def _inputs(s: dict):
  import numpy as np
  r = np.random.default_rng(0)
  b = s["batch"]
  lv = s["frames"] * (s["hw"] // 2) ** 2
  f32 = lambda *shape: r.normal(size=shape).astype(np.float32)  # noqa: E731
  video, noise_v = f32(b, s["frames"], s["hw"], s["hw"], s["cv"]), f32(b, s["frames"], s["hw"], s["hw"], s["cv"])
  audio, noise_a = f32(b, s["ta"], s["ca"]), f32(b, s["ta"], s["ca"])
  sigma = r.uniform(0.05, 1.0, (b,)).astype(np.float32)
  sig_v = np.repeat(sigma[:, None], lv, axis=1)
  sig_v[:, : (s["hw"] // 2) ** 2] = 0.0                       # first latent frame clean (TI2AV-like)
  sv = sig_v.reshape(b, s["frames"], -1)[:, :, :1, None, None]  # [B, T, 1, 1, 1]
  sa = sigma[:, None, None]
  return dict(xv=(1 - sv) * video + sv * noise_v, xa=(1 - sa) * audio + sa * noise_a,
              tgt_v=noise_v - video, tgt_a=noise_a - audio, t_v=sig_v * 1000, t_a=sigma * 1000,
              text=r.integers(1, s["vocab"], (b, s["text_len"])).astype(np.int32),
              mask=np.ones((b, s["text_len"]), bool), ref=f32(b, 4, s["ca"] * AUDIO_PATCH))


def _interleaved_times(fns, warmup: int, steps: int) -> list[list[float]]:
  """Warm-up steps of each fn, then `steps` rounds alternating them (a shared, loaded CPU then slows both
  alike rather than whichever ran last): per-fn lists of step seconds."""
  for fn in fns:
    for _ in range(warmup):
      fn()
  times = [[] for _ in fns]
  for _ in range(steps):
    for fn, ts in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return times


def bench(name: str, steps: int, warmup: int, lr: float = 1e-4, wd: float = 0.01) -> dict:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  import torch

  from unitalking_jax.model import UniTalking, param_count
  from unitalking_jax.torch_model import UniTalkingTorch

  s = CONFIGS[name]
  c = _model_config(s)
  x = _inputs(s)
  model = UniTalking(c)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), x["xv"], x["xa"], x["t_v"], x["t_a"], x["text"]))
  params = params["params"]
  tm = UniTalkingTorch.from_flax(c, jax.device_get(params)).train()

  # ours
  opt = optax.adamw(lr, weight_decay=wd)
  xj = {k: jnp.asarray(v) for k, v in x.items()}

  def loss_fn(p, d):
    pv, pa = model.apply({"params": p}, d["xv"], d["xa"], d["t_v"], d["t_a"], d["text"], d["mask"], d["ref"])
    return jnp.mean(jnp.square(pv - d["tgt_v"])) + jnp.mean(jnp.square(pa - d["tgt_a"]))

  @functools.partial(jax.jit, donate_argnums=(0, 1))   # params / optimizer state updated in place
  def step(p, o, d):
    loss, g = jax.value_and_grad(loss_fn)(p, d)
    u, o = opt.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  state = {"p": params, "o": opt.init(params), "loss": None}

  def ours():
    state["p"], state["o"], loss = step(state["p"], state["o"], xj)
    loss = float(jax.block_until_ready(loss))
    state["loss"] = state["loss"] if state["loss"] is not None else loss

  # torch
  xt = {k: torch.from_numpy(v) for k, v in x.items()}
  topt = torch.optim.AdamW(tm.parameters(), lr=lr, weight_decay=wd, eps=1e-8)
  tloss = []

  def theirs():
    topt.zero_grad(set_to_none=True)
    pv, pa = tm(xt["xv"], xt["xa"], xt["t_v"], xt["t_a"], xt["text"], xt["mask"], xt["ref"])
    loss = torch.mean((pv - xt["tgt_v"]) ** 2) + torch.mean((pa - xt["tgt_a"]) ** 2)
    loss.backward()
    topt.step()
    tloss.append(float(loss.detach()))

  ours_all, torch_all = _interleaved_times([ours, theirs], warmup, steps)
  ours_s, torch_s = statistics.median(ours_all), statistics.median(torch_all)
  lv = s["frames"] * (s["hw"] // 2) ** 2
  shape = dict(batch=s["batch"], video_tokens=lv, audio_tokens=s["ta"] // AUDIO_PATCH, text=s["text_len"],
               dim=s["dim"], heads=s["heads"], layers=s["layers"], ffn=s["ffn"])
  return dict(what=f"unitalking_train_step_{name}", shape=shape, params=param_count(params),
              ours_s=round(ours_s, 4), torch_s=round(torch_s, 4), ratio=round(torch_s / ours_s, 3),
              ours_min_s=round(min(ours_all), 4), torch_min_s=round(min(torch_all), 4),
              ratio_min=round(min(torch_all) / min(ours_all), 3),
              device=f"{jax.default_backend()} ({os.cpu_count()} cores)", threads=torch.get_num_threads(),
              steps=steps, warmup=warmup, loss_ours=round(state["loss"], 6), loss_torch=round(tloss[0], 6),
              ours_steps_s=[round(t, 4) for t in ours_all], torch_steps_s=[round(t, 4) for t in torch_all])


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default="tiny,100m", help=f"comma-separated subset of {sorted(CONFIGS)}")
  ap.add_argument("--steps", type=int, default=5, help="timed steps per implementation (median reported)")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (ours: includes compilation)")
  ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
  args = ap.parse_args()
  import torch
  torch.set_num_threads(args.threads)
  for name in args.configs.split(","):
    if name not in CONFIGS:
      raise SystemExit(f"--configs: unknown {name!r}; expected names from {sorted(CONFIGS)}")
    print(json.dumps(bench(name, args.steps, args.warmup)), flush=True)


if __name__ == "__main__":
  main()
