"""The video half of `python -m unitalking_jax.train_codec --config configs/unitalking/codec_tiny.py:video`.

Trains a tiny Wan2.2-style video VAE (shared.models.wan_vae: residual down/up paths, 2x2 patchify, causal
3-D convs, temporal stride 4) on SynthCue speech-mode face video (`data.frame_size`^2, uint8 -> [-1, 1]):
random clips of `clip_frames` = 1 + 4k frames, colour-augmented (`data.augment`, see `augment`);
loss = mean |x - x_hat| in [-1, 1] pixel space (decoded from a posterior sample) + kl_weight * mean KL per
latent element.

eval_fn (held-out speakers, SynthCue `test` split, the first `clip_frames` frames of `eval_samples` videos,
posterior means, whole-clip encode / decode, output clamped to [-1, 1]):
  psnr    10 log10(4 / MSE) in [-1, 1] units (= PSNR on [0, 1] images)     l1   mean |x - x_hat| in [-1, 1]
  kl      mean KL per latent element
  val_psnr, val_l1   the same on the `validation` split (unseen utterances of the training speakers)
sample_fn: DIR/samples/<step>/clip<i>.png (original frames on top, reconstruction below, `sampling.scale`x
nearest upscaled) and, with sampling.mp4, clip<i>.mp4 (original | reconstruction side by side).
At the end: per-channel latent statistics over training clips become the config's latents_mean / std and the
VAE is written to DIR/video_vae in diffusers AutoencoderKLWan layout (config.json +
diffusion_pytorch_model.safetensors): shared.models.av_codec.load_wan_video_codec(DIR/video_vae).

Measured (codec_tiny.py:video, 0.68M params, 500 steps of 8 x 9-frame 32x32 clips, lr 2e-3, 12m52s on the
shared 2-core CPU box; 16 held-out clips each): unseen speakers PSNR 10.2 dB / L1 0.536 at init -> 11.9 / 0.460
at step 100 -> 13.3 / 0.317 at 400 -> 13.6 dB / 0.300 at 500; validation (training speakers) 10.8 / 0.478 ->
16.5 dB / 0.197; KL 3.9 per latent element. Still a weak codec: reconstructions are the right background colour
but blurred faces. Without colour augmentation (300 steps) unseen speakers did not improve at all (10.3 dB):
the model memorised the 6 training speakers' colours.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from shared import config as config_lib, train as train_lib
from shared.data.pipeline import make_iterator
from shared.data.synthcue import SynthCue, synthcue_source
from shared.errors import ConfigError
from shared.models import av_codec, wan_vae

EXPORT_DIR = "video_vae"


def source(cfg, split: str) -> SynthCue:
  return synthcue_source(cfg.data, split, "speech", render_video=True, render_audio=False)


def vae_config(cfg) -> wan_vae.WanVAEConfig:
  m = cfg.model
  p = m.patch_size or 1
  z = m.z_dim
  return wan_vae.WanVAEConfig(
      base_dim=m.base_dim, decoder_base_dim=m.get("decoder_base_dim"), z_dim=z, dim_mult=tuple(m.dim_mult),
      num_res_blocks=m.num_res_blocks, temporal_downsample=tuple(bool(t) for t in m.temporal_downsample),
      is_residual=bool(m.is_residual), patch_size=m.patch_size, in_channels=3 * p * p, out_channels=3 * p * p,
      scale_factor_spatial=2 ** (len(m.dim_mult) - 1) * p, latents_mean=(0.0,) * z, latents_std=(1.0,) * z)


def clip(video: np.ndarray, n: int, start: int = 0) -> np.ndarray:
  """video [T, H, W, 3] uint8 -> [n, H, W, 3] from `start` (the last frame repeated if too short)."""
  v = video[start:start + n]
  if v.shape[0] < n:
    v = np.concatenate([v, np.repeat(v[-1:], n - v.shape[0], 0)])
  return v


def eval_set(cfg, split: str = "test", n: int | None = None) -> np.ndarray:
  """The first clip_frames frames of n videos of `split`: uint8 [N, clip_frames, H, W, 3]."""
  src = source(cfg, split)
  n = min(n or cfg.data.eval_samples, len(src))
  return np.stack([clip(src[i]["video"], cfg.data.clip_frames) for i in range(n)])


def augment(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Colour augmentation of a clip [T, H, W, 3] uint8 (SynthCue has few speakers, hence few face /
  background colours; held-out speakers have others): a random RGB permutation, a random inversion, per-channel
  gain in [0.5, 1] and offset in [0, 255 (1 - gain)], and a random horizontal flip."""
  x = v[..., rng.permutation(3)].astype(np.float32)
  if rng.random() < 0.5:
    x = 255.0 - x
  gain = rng.uniform(0.5, 1.0, 3).astype(np.float32)
  x = x * gain + rng.uniform(0.0, 1.0, 3).astype(np.float32) * 255.0 * (1.0 - gain)
  if rng.random() < 0.5:
    x = x[:, :, ::-1]
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def to_unit(frames: np.ndarray) -> np.ndarray:
  return frames.astype(np.float32) / 127.5 - 1.0


def make_task(cfg) -> train_lib.Task:
  d = cfg.data
  vcfg = vae_config(cfg)
  st = vcfg.temporal_stride
  if (d.clip_frames - 1) % st or d.clip_frames < 1:
    raise ConfigError(f"config key data.clip_frames = {d.clip_frames}: expected 1 + {st} k frames")
  if d.frame_size % vcfg.spatial_stride:
    raise ConfigError(f"config key data.frame_size = {d.frame_size}: expected a multiple of the VAE's "
                      f"spatial stride {vcfg.spatial_stride}")
  model = wan_vae.AutoencoderKLWan(vcfg, dtype=config_lib.dtype(cfg.trainer.precision.compute_dtype))
  per_host = cfg.trainer.batch_size // jax.process_count()
  p = vcfg.patch_size

  def prepare(sample):
    v = sample["video"]
    rng = np.random.default_rng([d.seed, 11, int(sample["index"])])
    start = int(rng.integers(0, max(1, v.shape[0] - d.clip_frames + 1)))
    v = clip(v, d.clip_frames, start)
    return {"video": augment(v, rng) if d.augment else v}

  def batch_fn(samples):
    return {"video": np.stack([s["video"] for s in samples])}

  def init_params(rng, batch):
    x = wan_vae.patchify(jnp.asarray(batch["video"][:1, :1 + st], jnp.float32), p)
    return model.init(rng, x)["params"]

  def loss_fn(params, batch, rng):
    """batch["video"] uint8 [B, T, H, W, 3] -> (L1 + kl_weight KL, metrics)."""
    x = batch["video"].astype(jnp.float32) / 127.5 - 1.0
    h = model.apply({"params": params}, wan_vae.patchify(x, p), method=wan_vae.AutoencoderKLWan.encode_frames)
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    logvar = jnp.clip(logvar, -30.0, 20.0)
    z = wan_vae.sample_posterior(rng, mean, logvar)
    y = model.apply({"params": params}, z.astype(model.dtype), method=wan_vae.AutoencoderKLWan.decode_frames)
    y = wan_vae.unpatchify(y.astype(jnp.float32), p)
    l1 = jnp.mean(jnp.abs(y - x))
    kl = jnp.mean(kl_divergence(mean, logvar))
    mse = jnp.mean(jnp.square(jnp.clip(y, -1.0, 1.0) - x))
    n = x.shape[0]   # weight = examples (each term is a batch mean)
    return (l1 + cfg.loss.kl_weight * kl) * n, {"weight": jnp.float32(n), "l1": l1, "kl": kl,
                                                "psnr": 10.0 * jnp.log10(4.0 / mse)}

  def make_iter():
    return make_iterator(source(cfg, "train"), batch_fn, batch_size=per_host, seed=cfg.trainer.seed,
                         map_fn=prepare, workers=d.workers)

  @jax.jit
  def reconstruct(params, x):
    mean, logvar = wan_vae.encode(model, params, x, chunk=None)
    return wan_vae.decode(model, params, mean, chunk=None), mean, logvar

  def run(params, frames: np.ndarray, batch: int = 8):
    outs = [reconstruct(params, jnp.asarray(to_unit(frames[i:i + batch]))) for i in range(0, len(frames), batch)]
    return tuple(np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(3))

  held_out: dict = {}

  def metrics(params, frames: np.ndarray) -> dict:
    rec, mean, logvar = run(params, frames)
    diff = rec.astype(np.float64) - to_unit(frames).astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return {"psnr": 10.0 * np.log10(4.0 / max(mse, 1e-12)), "l1": float(np.mean(np.abs(diff))),
            "kl": float(np.mean(np.asarray(kl_divergence(mean, logvar))))}

  def eval_fn(variables, step):
    del step
    params = variables["params"]
    if "test" not in held_out:
      held_out["test"], held_out["validation"] = eval_set(cfg, "test"), eval_set(cfg, "validation")
    m = metrics(params, held_out["test"])
    return {**m, **{f"val_{k}": v for k, v in metrics(params, held_out["validation"]).items() if k != "kl"}}

  def sample_fn(variables, step, out_dir):
    from PIL import Image
    del step
    params = variables["params"]
    os.makedirs(out_dir, exist_ok=True)
    frames = eval_set(cfg, "test", cfg.sampling.num)
    rec = np.clip(np.round((run(params, frames)[0] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    s = cfg.sampling.scale
    for i in range(frames.shape[0]):
      row = lambda v: np.concatenate(list(v), axis=1)  # noqa: E731  [T, H, W, 3] -> [H, T W, 3]
      gap = np.full((2, row(frames[i]).shape[1], 3), 255, np.uint8)
      pic = np.concatenate([row(frames[i]), gap, row(rec[i])], axis=0)
      Image.fromarray(np.repeat(np.repeat(pic, s, 0), s, 1)).save(os.path.join(out_dir, f"clip{i}.png"))
      if cfg.sampling.mp4:
        from shared.data.media import write_mp4
        both = np.concatenate([frames[i], rec[i]], axis=2)
        write_mp4(os.path.join(out_dir, f"clip{i}.mp4"), np.repeat(np.repeat(both, s, 1), s, 2), fps=25.0)

  task = train_lib.Task(init_params=init_params, loss_fn=loss_fn, make_train_iter=make_iter, eval_fn=eval_fn,
                        sample_fn=sample_fn, tokens_per_example=d.clip_frames * d.frame_size ** 2)
  task.model, task.metrics, task.eval_set, task.reconstruct = model, metrics, eval_set, run
  return task


def kl_divergence(mean, logvar):
  """Elementwise KL(N(mean, exp(logvar)) || N(0, 1))."""
  return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def latent_stats(cfg, task, params, n: int = 32) -> av_codec.LatentStats:
  """Per-channel statistics of the posterior means of n training clips."""
  _, mean, _ = task.reconstruct(params, eval_set(cfg, "train", n))
  return av_codec.LatentStats.fit(mean)


def export_codec(cfg, task, params, workdir: str) -> av_codec.WanVideoCodec:
  """Writes DIR/video_vae (diffusers AutoencoderKLWan layout, fitted latents_mean / std); returns its codec."""
  from shared.weights.wan_vae_family import save_wan_vae
  stats = latent_stats(cfg, task, params, cfg.data.stats_samples)
  config = dataclasses.replace(task.model.config, latents_mean=tuple(float(v) for v in stats.mean),
                               latents_std=tuple(float(v) for v in stats.std))
  model = wan_vae.AutoencoderKLWan(config, dtype=jnp.float32)
  save_wan_vae(model, jax.device_get(params), os.path.join(workdir, EXPORT_DIR))
  return av_codec.WanVideoCodec(model, jax.device_get(params))


def load_codec(workdir: str, **kw) -> av_codec.WanVideoCodec:
  """The video codec a train_codec `:video` run exported (DIR/video_vae)."""
  return av_codec.load_wan_video_codec(os.path.join(workdir, EXPORT_DIR), **kw)
