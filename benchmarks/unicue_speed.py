"""UniCUE speed, same CPU, same run: ours (JAX, jitted) vs the same networks from diffusers / transformers (PyTorch)
with the same weights (converted by the shared.weights families) and the same inputs.

  python benchmarks/unicue_speed.py                                   # --size tiny: ~100 CPU s (2 cores: 151 s wall
                                                                      # at load average 6-10, 2 trainings running)
  python benchmarks/unicue_speed.py --size tiny --steps 5 --repeats 3 --threads 2
  python benchmarks/unicue_speed.py --size audioldm                   # paper size: an idle many-core box, or a GPU:
  JAX_PLATFORMS=cuda python benchmarks/unicue_speed.py --size audioldm --torch-device cuda   # (CUDA jax + torch)
  python benchmarks/unicue_speed.py --size audioldm --steps 1 --ddim-steps 2 --repeats 1   # path check only

Sizes: "tiny" = configs/unicue/tiny.py stage v2s (UNet (32, 64), cross-attention d 64, 8 time channels; mel VAE
(8, 16, 32), 4 latent channels; 32 px frames) with a width-64 HiFi-GAN at AudioLDM's rates / kernels (the project
has no tiny vocoder); "audioldm" = configs/unicue/paper.py stage v2s (AudioLDM-s-full UNet (128, 256, 384, 640),
185M + the visual cross-attention, class embedding 512 from the pooled adapter output; AudioLDM's mel VAE; the
AudioLDM vocoder, SpeechT5HifiGan 1024 channels; ResNet-18 / 6 x 1024 processor on 256 px frames). Everything fp32
(paper.py's bfloat16 compute is set to float32 so both sides compute the same thing), remat off, random weights
(nothing is ever downloaded). --size audioldm needs > 11 GB of RAM for the train step; on a loaded 2-core CPU
neither its train step (compilation) nor its 2-DDIM-step path check finished within 190 s: run it on an idle
many-core box or a GPU.

(1) Stage-2 LDM train step ("bench": "ldm_train_step"): the UNet alone, forward + backward + AdamW update (lr 1e-4,
    weight decay 0.01, eps 1e-8) on an ε-MSE loss: latents [B, C_in, T/4, 16] (tiny: B 8, 48 latent frames = the
    tiny training clip; audioldm: B 2, 256 = 10.24 s), int timesteps, the visual sequence [B, L, d] with a padding
    mask (the last clip's final quarter padded), class labels [B, 512] at audioldm size. Ours: UNet2DCondition,
    one jitted step (params and optimizer state donated). Reference: diffusers UNet2DConditionModel built from
    our config (unet2d_family.config_to_diffusers), its own random init imported into ours
    (unet2d_family.import_unet2d), torch.optim.AdamW. Warm-up steps (ours: compilation) are untimed; timed steps
    alternate ours / torch step by step (a loaded, shared CPU then slows both alike). Both sides see the same
    inputs every step, so their loss sequences must agree: "loss_ours" / "loss_torch" are the first two losses
    (before and after one update), "first_loss_rel_diff" their first-step relative difference.
(2) End-to-end inference of one clip of --seconds (3 s: 75 video frames at 25 fps -> 300 mel frames -> latents
    [75, 16, C]) ("bench": "e2e_clip"). Ours = the UniCUE stage-2 generation path, unicue_jax.task._generate (processor
    -> VisioPhonetic adapter (-> class label) -> --ddim-steps DDIM steps (AudioLDM's schedule, leading spacing,
    steps_offset 1, eta 0) with the UNet -> VAE decode -> denormalised log-mel) followed by the HiFi-GAN vocoder
    (shared.models.hifigan), all in one jit: "with_processor_adapter": true. Per-component split of ours, each
    component its own jit, run back to back on the same clip ("ours_jax_components"): processor_adapter_s, ddim_s (all
    steps), vae_s, vocoder_s; the same run without its first component is ours from the conditioning sequence as
    given, what the reference does: "with_processor_adapter": false.
    Reference: diffusers UNet2DConditionModel + DDIMScheduler (same schedule; its timesteps are checked equal to
    ours) + AutoencoderKL, transformers SpeechT5HifiGan, weights exported from ours (UNet, VAE: export_*) or imported
    into ours (vocoder: hifigan_family.import_state_dict), torch.inference_mode, fed our condition (Z'_mv and the
    class label) and our initial noise: there is no PyTorch processor / adapter, so the like-for-like ratio is the one
    without them ("ratio"); "ratio_with_processor_adapter" sets ours with them against the reference without.
    "wav_rel_err" (max |ours - torch| / max |torch| of the waveforms) checks both compute the same clip.
    The paper reports 4.15 s per clip on an A6000 (SPECS.md § UniCUE) for the whole UniCUE inference.

Every figure is wall-clock seconds (median over --steps / --repeats; "*_min" the fastest: the least disturbed by
other processes) plus "cpu_*" / "*_cpu_s" = process CPU seconds (user + system, all threads) over the same
calls: on a shared, loaded CPU the CPU seconds move less than the wall clock. "loadavg" is os.getloadavg() at the
start and the end.
"ratio" = ours / reference: below 1, ours is faster. torch.set_num_threads(--threads), default os.cpu_count() (what
XLA's CPU backend uses); OMP_WAIT_POLICY=PASSIVE unless set (torch's spinning OpenMP threads otherwise stall on a
CPU shared with other jobs). Ours is timed without compilation: the train step after its first (compiling,
untimed) step, "compile_s" = that first step; the inference functions compiled ahead of time (jit(...).lower(...)
.compile(), "compile_s" per function). The torch reference is warmed up by one step / one 2-step clip. The timed
clips alternate ours (one jit), ours (components), torch.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SIZES = {
    # config module, train-step batch and clip (video frames; 4 mel frames each), vocoder overrides
    "tiny": dict(config="configs.unicue.tiny", train_batch=8, train_frames=48,
                 vocoder=dict(upsample_initial_channel=64)),
    "audioldm": dict(config="configs.unicue.paper", train_batch=2, train_frames=256, vocoder={}),
}
PAPER_A6000_S = 4.15


def run_config(size: str, frames: int):
  """The size's stage-2 run config with `frames` video frames per clip, fp32, no remat."""
  import importlib
  cfg = importlib.import_module(SIZES[size]["config"]).get_config("v2s")
  cfg.trainer.precision.compute_dtype = "float32"
  cfg.trainer.remat = "none"
  cfg.data.frames = frames                 # adapter.queries follows (a reference to data.frames)
  cfg.model.adapter.queries = frames
  cfg.model.processor.max_frames = max(int(cfg.model.processor.max_frames), frames)
  return cfg


def _median_min(xs):
  return round(statistics.median(xs), 4), round(min(xs), 4)


def _timed(fn):
  """fn() -> (result, wall s, process CPU s)."""
  w, c = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - w, time.process_time() - c


# ----------------------------------------------------------------------------------------------- (1) train step

def bench_train(size: str, steps: int, warmup: int, dev: str = "cpu", lr: float = 1e-4, wd: float = 0.01) -> list[dict]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import torch
  from diffusers import UNet2DConditionModel

  from shared.models.unet2d import UNet2DCondition
  from shared.weights import unet2d_family as UF
  from unicue_jax import data as data_lib
  from unicue_jax import model as model_lib

  s = SIZES[size]
  cfg = run_config(size, s["train_frames"])
  uc = model_lib.model_config(cfg).unet
  f = 2 ** (len(cfg.model.vae.block_out_channels) - 1)
  b, h, w, l = s["train_batch"], data_lib.mel_frames(cfg.data) // f, 64 // f, s["train_frames"]
  r = np.random.default_rng(0)
  x = r.normal(size=(b, h, w, uc.in_channels)).astype(np.float32)
  noise = r.normal(size=(b, h, w, uc.out_channels)).astype(np.float32)
  t = r.integers(0, 1000, (b,))
  ctx = r.normal(size=(b, l, uc.context_dim)).astype(np.float32)
  mask = np.ones((b, l), bool)
  mask[-1, l - l // 4:] = False
  labels = None
  if uc.class_embed_type is not None:
    labels = r.normal(size=(b, uc.projection_class_embeddings_input_dim)).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=-1, keepdims=True)

  torch.manual_seed(0)
  tm = UNet2DConditionModel(**{k: v for k, v in UF.config_to_diffusers(uc).items() if not k.startswith("_")})
  params = UF.import_unet2d(tm.state_dict(), uc)          # diffusers' init -> ours: the same weights
  tm.to(dev).train()
  n_params = sum(p.numel() for p in tm.parameters())
  model = UNet2DCondition(uc)

  opt = optax.adamw(lr, eps=1e-8, weight_decay=wd)
  d = dict(x=jnp.asarray(x), noise=jnp.asarray(noise), t=jnp.asarray(t, jnp.int32), ctx=jnp.asarray(ctx),
           mask=jnp.asarray(mask), labels=None if labels is None else jnp.asarray(labels))

  def loss_fn(p, d):
    eps = model.apply({"params": p}, d["x"], d["t"], d["ctx"], d["labels"], d["mask"])
    return jnp.mean(jnp.square(eps - d["noise"]))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(p, o, d):
    loss, g = jax.value_and_grad(loss_fn)(p, d)
    u, o = opt.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  state = {"p": params, "o": opt.init(params)}
  ours_loss, torch_loss = [], []

  def ours():
    state["p"], state["o"], loss = step(state["p"], state["o"], d)
    ours_loss.append(float(jax.block_until_ready(loss)))

  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(dev)  # noqa: E731
  xt, nt, tt = nchw(x), nchw(noise), torch.from_numpy(t).to(dev)
  ct, mt = torch.from_numpy(ctx).to(dev), torch.from_numpy(mask).to(dev)
  lt = None if labels is None else torch.from_numpy(labels).to(dev)
  topt = torch.optim.AdamW(tm.parameters(), lr=lr, weight_decay=wd, eps=1e-8)

  def theirs():
    topt.zero_grad(set_to_none=True)
    out = tm(xt, tt, encoder_hidden_states=ct, class_labels=lt, encoder_attention_mask=mt).sample
    loss = torch.mean((out - nt) ** 2)
    loss.backward()
    topt.step()
    torch_loss.append(float(loss.detach()))                 # synchronises (cuda)

  _, compile_s, _ = _timed(ours)                           # first step: compilation + the step
  theirs()
  for _ in range(warmup - 1):
    ours()
    theirs()
  tim = {"ours": ([], []), "torch": ([], [])}
  for _ in range(steps):
    for name, fn in (("ours", ours), ("torch", theirs)):
      _, ws, cs = _timed(fn)
      tim[name][0].append(ws)
      tim[name][1].append(cs)
  shape = dict(batch=b, latent=[uc.in_channels, h, w], context=[l, uc.context_dim],
               class_labels=None if labels is None else int(labels.shape[1]),
               block_out_channels=list(uc.block_out_channels), params=n_params)
  rows = []
  for name, impl in (("ours", "ours_jax"), ("torch", "diffusers_torch")):
    wall, cpu = tim[name]
    med, mn = _median_min(wall)
    rows.append(dict(bench="ldm_train_step", size=size, impl=impl, ms_per_step=round(med * 1e3, 1),
                     ms_min=round(mn * 1e3, 1), cpu_ms_per_step=round(statistics.median(cpu) * 1e3, 1), **shape,
                     **({"compile_s": round(compile_s, 1)} if name == "ours" else {}),
                     steps_ms=[round(v * 1e3, 1) for v in wall]))
  o, tr = rows
  rows.append(dict(bench="ldm_train_step", size=size, summary=True,
                   ratio=round(o["ms_per_step"] / tr["ms_per_step"], 3),
                   ratio_min=round(o["ms_min"] / tr["ms_min"], 3),
                   ratio_cpu=round(o["cpu_ms_per_step"] / tr["cpu_ms_per_step"], 3),
                   loss_ours=[round(v, 6) for v in ours_loss[:2]], loss_torch=[round(v, 6) for v in torch_loss[:2]],
                   first_loss_rel_diff=float(f"{abs(ours_loss[0] - torch_loss[0]) / abs(torch_loss[0]):.2e}")))
  return rows


# ----------------------------------------------------------------------------------------------- (2) end to end

def _randomize_vocoder(model, seed=0):
  """Weights of about unit gain (SpeechT5HifiGan's 0.01 init gives a near-silent output), as tests/models do."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 3:
        fan_in = p.shape[0] * p.shape[2] if name.startswith("upsampler") else p.shape[1] * p.shape[2]
        p.copy_(torch.randn(p.shape, generator=g) * (0.15 if name.startswith("conv_post") else 1.5) / fan_in ** 0.5)
      else:
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
  return model.eval()


def bench_e2e(size: str, seconds: float, ddim_steps: int, repeats: int, dev: str = "cpu") -> list[dict]:
  import dataclasses

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
  from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

  from shared.diffusion import audioldm_schedule, ddim_plan, ddim_sample
  from shared.models.hifigan import AUDIOLDM_VOCODER, HifiGan
  from shared.nn.positions import whisper_sinusoids
  from shared.weights import autoencoder_kl_family as AF
  from shared.weights import hifigan_family as HF
  from shared.weights import unet2d_family as UF
  from unicue_jax import data as data_lib
  from unicue_jax import model as model_lib
  from unicue_jax.model import UniCueV2S
  from unicue_jax.task import _generate

  s = SIZES[size]
  fps = 25
  frames = int(round(seconds * fps))
  cfg = run_config(size, frames)
  mc = model_lib.model_config(cfg)
  if mc.concat_condition:
    raise SystemExit("concat_condition (the 'aligned' ablation) is not mirrored in the torch reference")
  model = UniCueV2S(mc)
  m = data_lib.mel_frames(cfg.data)
  f = 2 ** (len(mc.vae.block_out_channels) - 1)
  latent = (m // f, 64 // f, mc.vae.latent_channels)
  mel_mean, mel_std = float(cfg.data.mel_mean), float(cfg.data.mel_std)
  img = int(cfg.data.image_size)
  r = np.random.default_rng(0)
  video = r.integers(0, 256, (1, frames, img, img, 3), dtype=np.uint8)
  pose = r.integers(0, 256, (1, frames, img, img, 3), dtype=np.uint8)
  mask = np.ones((1, frames), bool)

  # parameters: the init needs only small inputs (parameter shapes do not depend on image / mel size)
  small = (jnp.zeros((1, frames, 32, 32, 3), jnp.uint8),) * 2 + (jnp.asarray(mask), jnp.zeros((1, 8 * f, 64)))
  init = jax.jit(functools.partial(model.init, method=UniCueV2S.init_all),
                 compiler_options={"xla_backend_optimization_level": 0})   # runs once: compile fast
  variables = nn.meta.unbox(init(jax.random.key(0), *small))
  variables = jax.device_get(variables)
  vc = dataclasses.replace(AUDIOLDM_VOCODER, **s["vocoder"])
  voc = HifiGan(vc)
  voc_t = _randomize_vocoder(SpeechT5HifiGan(SpeechT5HifiGanConfig(
      model_in_dim=vc.model_in_dim, sampling_rate=vc.sampling_rate,
      upsample_initial_channel=vc.upsample_initial_channel,
      upsample_rates=list(vc.upsample_rates), upsample_kernel_sizes=list(vc.upsample_kernel_sizes),
      resblock_kernel_sizes=list(vc.resblock_kernel_sizes),
      resblock_dilation_sizes=[list(x) for x in vc.resblock_dilation_sizes], leaky_relu_slope=vc.leaky_relu_slope,
      normalize_before=vc.normalize_before)))
  voc_p = HF.import_state_dict(voc_t.state_dict(), vc)        # transformers -> ours
  p = variables["params"]
  unet_t = UNet2DConditionModel(**{k: v for k, v in UF.config_to_diffusers(mc.unet).items() if not k.startswith("_")})
  unet_t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in UF.export_unet2d(p["unet"], mc.unet).items()},
                         strict=True)                           # ours -> diffusers
  vae_t = AutoencoderKL(**{k: v for k, v in AF.config_to_diffusers(mc.vae).items() if not k.startswith("_")})
  vae_sd = AF.export_autoencoder_kl(p["vae"], mc.vae)
  vae_t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in vae_sd.items()}, strict=True)
  n_params = {"unet": sum(q.numel() for q in unet_t.parameters()), "vae": sum(q.numel() for q in vae_t.parameters()),
              "vocoder": sum(q.numel() for q in voc_t.parameters()),
              "processor_adapter": int(sum(np.size(v) for k in ("processor", "adapter", "class_proj") if k in p
                                           for v in jax.tree.leaves(p[k])))}

  # ours: every function compiled ahead of time (lower().compile(): "compile_s"), then timed
  gen = functools.partial(_generate, model, ddim_steps, 0.0, latent, mel_mean, mel_std, "epsilon")
  schedule = audioldm_schedule()
  plan = ddim_plan(schedule, ddim_steps, "leading", steps_offset=1)

  def full(v, vp, video, pose, mask, rng):                      # the project's generation path + the vocoder
    return voc.apply({"params": vp}, gen(v, video, pose, mask, rng))

  def condition(v, video, pose, mask):
    return model.apply(v, video, pose, mask, method=UniCueV2S.condition)

  def sample(v, ctx, labels, mask, x):
    fn = lambda x, t: model.apply(v, x, t, ctx, labels, mask, method=UniCueV2S.denoise)  # noqa: E731
    return ddim_sample(fn, x, schedule, plan, eta=0.0)

  def decode(v, z):
    return model.apply(v, z, method=UniCueV2S.decode_latents) * mel_std + mel_mean

  def vocode(vp, mel):
    return voc.apply({"params": vp}, mel)

  v = jax.device_put(variables)
  vp = jax.device_put(voc_p)
  vj, pj, mj = jnp.asarray(video), jnp.asarray(pose), jnp.asarray(mask)
  rng = jax.random.key(0)
  x0 = jax.random.normal(jax.random.split(rng)[0], (1,) + latent, jnp.float32)   # what _generate draws
  compile_s = {}

  def aot(name, fn, *args):
    t0 = time.perf_counter()
    out = jax.jit(fn).lower(*args).compile()
    compile_s[name] = round(time.perf_counter() - t0, 1)
    return out

  cond_c = aot("processor_adapter", condition, v, vj, pj, mj)
  ctx, labels = jax.block_until_ready(cond_c(v, vj, pj, mj))
  full_c = aot("full", full, v, vp, vj, pj, mj, rng)
  sample_c = aot("ddim", sample, v, ctx, labels, mj, x0)
  z_shape = jax.ShapeDtypeStruct(x0.shape, jnp.float32)
  decode_c = aot("vae", decode, v, z_shape)
  vocode_c = aot("vocoder", vocode, vp, jax.ShapeDtypeStruct((1, m, 64), jnp.float32))

  # reference: fed our condition and our initial noise
  sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
                        prediction_type="epsilon")
  sched.set_timesteps(ddim_steps)
  if not np.array_equal(sched.timesteps.numpy(), np.asarray(plan.timesteps)):
    raise SystemExit(f"DDIM timesteps differ: diffusers {sched.timesteps[:4]}... ours {plan.timesteps[:4]}...")
  ctx_t, mask_t = torch.from_numpy(np.array(ctx)), torch.from_numpy(mask)
  labels_t = None if labels is None else torch.from_numpy(np.array(labels))
  x0_t = torch.from_numpy(np.ascontiguousarray(np.array(x0).transpose(0, 3, 1, 2)))
  pos_t = None
  if mc.time_channels:                                           # UniCueV2S.denoise's time sinusoids, NCHW
    pos = whisper_sinusoids(latent[0], mc.time_channels, 100.0)  # [H, P]
    pos_t = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(pos.T[None, :, :, None],
                                                                  (1, mc.time_channels, latent[0], latent[1]))))
  scale = float(np.asarray(p["latent_scale"]))
  unet_t.to(dev).eval(), vae_t.to(dev).eval(), voc_t.to(dev).eval()
  ctx_t, mask_t, x0_t = ctx_t.to(dev), mask_t.to(dev), x0_t.to(dev)
  labels_t = None if labels_t is None else labels_t.to(dev)
  pos_t = None if pos_t is None else pos_t.to(dev)

  def clock():
    if dev != "cpu":
      torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()

  def split(parts: dict, marks: list):
    """Wall and CPU seconds between consecutive clock() marks, appended per part."""
    for k, (a, b) in zip(parts, zip(marks, marks[1:])):
      parts[k][0].append(b[0] - a[0])
      parts[k][1].append(b[1] - a[1])

  tparts = {k: ([], []) for k in ("ddim", "vae", "vocoder")}

  @torch.inference_mode()
  def reference(n_steps=None):
    marks = [clock()]
    x = x0_t.clone()
    for t in sched.timesteps[:n_steps]:
      inp = x if pos_t is None else torch.cat([x, pos_t], 1)
      eps = unet_t(inp, t, encoder_hidden_states=ctx_t, class_labels=labels_t, encoder_attention_mask=mask_t).sample
      x = sched.step(eps, t, x).prev_sample
    marks.append(clock())
    mel = vae_t.decode(x / scale).sample[:, 0] * mel_std + mel_mean     # [B, M, 64]
    marks.append(clock())
    wav = voc_t(mel)
    marks.append(clock())
    if n_steps is None:
      split(tparts, marks)
    return wav.cpu().numpy()

  oparts = {k: ([], []) for k in ("processor_adapter", "ddim", "vae", "vocoder")}

  def components():
    marks = [clock()]
    c = jax.block_until_ready(cond_c(v, vj, pj, mj))
    marks.append(clock())
    z = jax.block_until_ready(sample_c(v, c[0], c[1], mj, x0))
    marks.append(clock())
    mel = jax.block_until_ready(decode_c(v, z))
    marks.append(clock())
    wav = jax.block_until_ready(vocode_c(vp, mel))
    marks.append(clock())
    split(oparts, marks)
    return np.asarray(wav)

  full_t = ([], [])

  def ours_full():
    a = clock()
    wav = np.asarray(jax.block_until_ready(full_c(v, vp, vj, pj, mj, rng)))
    b = clock()
    full_t[0].append(b[0] - a[0])
    full_t[1].append(b[1] - a[1])
    return wav

  reference(2)                                                  # torch warm-up: a 2-step clip
  outs = {}
  for _ in range(repeats):                                      # alternate: a loaded CPU slows all alike
    outs["full"], outs["components"], outs["torch"] = ours_full(), components(), reference()

  ref = outs["torch"]
  rel = lambda a: float(f"{np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-12):.2e}")  # noqa: E731
  med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
  common = dict(size=size, seconds=seconds, video_frames=frames, image_size=img, mel_frames=m, latent=list(latent),
                ddim_steps=ddim_steps, samples=int(ref.shape[-1]), repeats=repeats, params=n_params)
  totals = lambda parts, keys, i: [sum(x) for x in zip(*(parts[k][i] for k in keys))]  # noqa: E731
  nocond = ("ddim", "vae", "vocoder")
  o_full, o_full_min = _median_min(full_t[0])
  o_nc, o_nc_min = _median_min(totals(oparts, nocond, 0))
  t_all, t_all_min = _median_min(totals(tparts, nocond, 0))
  rows = [
      dict(bench="e2e_clip", impl="ours_jax", with_processor_adapter=True, what="unicue_jax.task._generate + vocoder, "
           "one jit", s_per_clip=o_full, s_min=o_full_min, cpu_s_per_clip=med(full_t[1]), compile_s=compile_s["full"],
           wav_rel_err=rel(outs["full"]), **common),
      dict(bench="e2e_clip", impl="ours_jax", with_processor_adapter=False, what="DDIM + VAE + vocoder jits back to "
           "back, from the condition", s_per_clip=o_nc, s_min=o_nc_min,
           cpu_s_per_clip=med(totals(oparts, nocond, 1)), wav_rel_err=rel(outs["components"]), **common),
      dict(bench="e2e_clip", impl="ours_jax_components", **{f"{k}_s": med(x[0]) for k, x in oparts.items()},
           **{f"{k}_cpu_s": med(x[1]) for k, x in oparts.items()}, compile_s=compile_s, **common),
      dict(bench="e2e_clip", impl="diffusers_transformers_torch", with_processor_adapter=False, s_per_clip=t_all,
           s_min=t_all_min, cpu_s_per_clip=med(totals(tparts, nocond, 1)),
           **{f"{k}_s": med(x[0]) for k, x in tparts.items()}, **common),
      dict(bench="e2e_clip", size=size, summary=True, ratio=round(o_nc / t_all, 3),
           ratio_min=round(o_nc_min / t_all_min, 3),
           ratio_cpu=round(med(totals(oparts, nocond, 1)) / med(totals(tparts, nocond, 1)), 3),
           ratio_with_processor_adapter=round(o_full / t_all, 3), ours_s=o_nc, ours_with_processor_adapter_s=o_full,
           torch_s=t_all, paper_a6000_s=PAPER_A6000_S, wav_rel_err=rel(outs["full"])),
  ]
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
  ap.add_argument("--seconds", type=float, default=3.0, help="clip length for the end-to-end inference")
  ap.add_argument("--ddim-steps", type=int, default=200)
  ap.add_argument("--steps", type=int, default=5, help="timed train steps per implementation (median reported)")
  ap.add_argument("--warmup", type=int, default=1, help="untimed train steps first (ours: includes compilation)")
  ap.add_argument("--repeats", type=int, default=2, help="timed end-to-end clips per implementation")
  ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
  ap.add_argument("--torch-device", default="cpu", help="cpu | cuda (the reference's device; ours: JAX_PLATFORMS)")
  ap.add_argument("--only", choices=("train", "e2e"), default=None, help="run one of the two benchmarks")
  args = ap.parse_args()
  import jax
  import torch
  torch.set_num_threads(args.threads)
  env = dict(bench="env", device=f"{jax.default_backend()} ({os.cpu_count()} cores)", torch_device=args.torch_device,
             threads=torch.get_num_threads(),
             jax=jax.__version__, torch=torch.__version__, loadavg=[round(x, 2) for x in os.getloadavg()])
  print(json.dumps(env), flush=True)
  t0, c0 = time.perf_counter(), time.process_time()
  if args.only in (None, "train"):
    for r in bench_train(args.size, args.steps, max(args.warmup, 1), args.torch_device):
      print(json.dumps(r), flush=True)
  if args.only in (None, "e2e"):
    for r in bench_e2e(args.size, args.seconds, args.ddim_steps, args.repeats, args.torch_device):
      print(json.dumps(r), flush=True)
  print(json.dumps(dict(bench="env", done=True, total_s=round(time.perf_counter() - t0, 1),
                        total_cpu_s=round(time.process_time() - c0, 1),
                        loadavg=[round(x, 2) for x in os.getloadavg()])), flush=True)


if __name__ == "__main__":
  main()
