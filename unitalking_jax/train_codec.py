"""`python -m unitalking_jax.train_codec --config configs/unitalking/codec_tiny.py --workdir DIR`

(`--config configs/unitalking/codec_tiny.py:video`, i.e. config key codec = "video", trains the tiny Wan-style
video VAE instead: unitalking_jax/train_video_codec.py; the rest of this docstring is the audio codec.)

Trains a SynthCue-sized MMAudio-style mel VAE (shared.models.mmaudio_vae) through shared.train: SynthCue
speech-mode utterances -> log-mel (shared.data.features, `model.mel` preset) -> random `segment_frames` crops;
loss = mean |x - x_hat| on per-bin normalised mels (posterior sample) + kl_weight * mean KL per latent element.
Per-bin mel statistics (the VAE's data_mean / data_std) are fitted on `stats_samples` training utterances.

eval_fn (held-out speakers, SynthCue `test` split, posterior means, real frames only):
  mel_l1         mean |log10 mel - log10 mel_hat|     mel_l1_db  the same in dB (20 log10 of magnitudes)
  mel_rel_l2     ||x - x_hat|| / ||x - bin mean||   (1 = predicting the per-bin training mean)
  kl             mean KL per latent element
sample_fn: DIR/samples/<step>/utt<i>_mel.png (original above, reconstruction below, one colour scale) and
utt<i>_orig.wav (the SynthCue audio), utt<i>_orig_gl.wav / utt<i>_recon_gl.wav (Griffin-Lim of both mels).
At the end: latent statistics over training utterances and DIR/codec/ (codec.json + mel_vae.safetensors),
loadable with shared.models.av_codec.load_mel_vae_audio_codec(DIR) (`load_codec`); DIR/eval_init.json and
DIR/eval_final.json hold the metrics of the initial and final parameters. Re-running on a finished (or
preempted) workdir resumes from its latest checkpoint and re-exports DIR/codec.

Measured (codec_tiny, 1.0M params, 1500 steps of 16 x 1.02 s crops, 12 min on the shared 2-core CPU box;
32 held-out utterances of unseen speakers): mean |d log10 mel| 0.708 (14.2 dB) at init -> 0.189 (3.8 dB)
at step 250 -> 0.142 (2.8 dB) at 1500; relative L2 1.33 -> 0.29; KL 3.9 per latent element.
"""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared import cli, config as config_lib, train as train_lib
from shared.data import features
from shared.data.pipeline import make_iterator
from shared.data.synthcue import SynthCue, synthcue_source
from shared.errors import ConfigError
from shared.models import av_codec, mmaudio_vae


def source(cfg, split: str) -> SynthCue:
  return synthcue_source(cfg.data, split, "speech", render_video=False, render_audio=True)


def mel_config(cfg) -> features.MelConfig:
  if cfg.model.mel not in features.PRESETS:
    raise ConfigError(f"config key model.mel = {cfg.model.mel!r}: expected one of {sorted(features.PRESETS)}")
  return features.PRESETS[cfg.model.mel]


def utterance_mel(audio: np.ndarray, mel: features.MelConfig, min_frames: int = 0) -> np.ndarray:
  """audio [S] -> log-mel [T, n_mels] (clipped to [-1, 1]; zero-padded to >= min_frames frames)."""
  x = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
  x = np.pad(x, (0, max(0, min_frames * mel.hop - x.shape[0])))
  return features.log_mel(x, mel)


def fit_mel_stats(cfg) -> tuple[np.ndarray, np.ndarray]:
  """Per-bin mean / std [n_mels] over `stats_samples` training utterances."""
  src, mel = source(cfg, "train"), mel_config(cfg)
  m = np.concatenate([utterance_mel(src[i]["audio"], mel) for i in range(min(cfg.data.stats_samples, len(src)))])
  return m.mean(0).astype(np.float32), np.maximum(m.std(0), 1e-3).astype(np.float32)


def vae_config(cfg, stats: tuple[np.ndarray, np.ndarray]) -> mmaudio_vae.MMAudioVAEConfig:
  m = cfg.model
  return mmaudio_vae.MMAudioVAEConfig(
      data_dim=mel_config(cfg).n_mels, embed_dim=m.embed_dim, hidden_dim=m.hidden_dim, ch_mult=tuple(m.ch_mult),
      num_res_blocks=m.num_res_blocks, attn_layers=tuple(m.attn_layers), down_layers=tuple(m.down_layers),
      num_heads=m.num_heads, data_mean=tuple(float(v) for v in stats[0]), data_std=tuple(float(v) for v in stats[1]))


def eval_set(cfg, split: str = "test", n: int | None = None) -> dict:
  """Held-out utterances: mel [N, eval_frames, n_mels] (silence-padded / cropped), mask [N, eval_frames]."""
  d, mel = cfg.data, mel_config(cfg)
  src = source(cfg, split)
  n = min(n or d.eval_samples, len(src))
  mels, masks, audio = [], [], []
  for i in range(n):
    a = src[i]["audio"]
    m = utterance_mel(a, mel, d.eval_frames)
    valid = min(1 + a.shape[0] // mel.hop, d.eval_frames)
    mels.append(m[:d.eval_frames])
    masks.append(np.arange(d.eval_frames) < valid)
    audio.append(a)
  return {"mel": np.stack(mels), "mask": np.stack(masks), "audio": audio}


def make_task(cfg) -> train_lib.Task:
  d, mel = cfg.data, mel_config(cfg)
  stats = fit_mel_stats(cfg)
  vcfg = vae_config(cfg, stats)
  if d.segment_frames % vcfg.temporal_downsample or d.eval_frames % vcfg.temporal_downsample:
    raise ConfigError(f"data.segment_frames / eval_frames must be multiples of {vcfg.temporal_downsample}")
  model = mmaudio_vae.MMAudioVAE(vcfg, dtype=config_lib.dtype(cfg.trainer.precision.compute_dtype))
  per_host = cfg.trainer.batch_size // jax.process_count()
  bin_mean, bin_std = (jnp.asarray(v) for v in vcfg.stats())

  def prepare(sample):
    m = utterance_mel(sample["audio"], mel, d.segment_frames)
    rng = np.random.default_rng([d.seed, 7, int(sample["index"])])
    start = int(rng.integers(0, m.shape[0] - d.segment_frames + 1))
    return {"mel": m[start:start + d.segment_frames]}

  def batch_fn(samples):
    return {"mel": np.stack([s["mel"] for s in samples]).astype(np.float32)}

  def init_params(rng, batch):
    return model.init(rng, jnp.asarray(batch["mel"]))["params"]

  def loss_fn(params, batch, rng):
    x = batch["mel"].astype(jnp.float32)
    recon, mean, logvar = model.apply({"params": params}, x, rng, unnormalize=False)
    target = (x - bin_mean) / bin_std
    l1 = jnp.mean(jnp.abs(recon.astype(jnp.float32) - target))
    kl = jnp.mean(mmaudio_vae.kl_divergence(mean, logvar))
    n = x.shape[0]   # weight = examples (each term is a batch mean)
    return (l1 + cfg.loss.kl_weight * kl) * n, {"weight": jnp.float32(n), "l1": l1, "kl": kl,
                                                "mel_l1": jnp.mean(jnp.abs(recon - target) * bin_std)}

  def make_iter():
    return make_iterator(source(cfg, "train"), batch_fn, batch_size=per_host, seed=cfg.trainer.seed,
                         map_fn=prepare, workers=d.workers)

  reconstruct = jax.jit(lambda p, x: model.apply({"params": p}, x))
  held_out: dict = {}

  def metrics(params, ev) -> dict:
    rec, mean, logvar = reconstruct(params, jnp.asarray(ev["mel"]))
    x, mask = ev["mel"].astype(np.float64), ev["mask"][..., None].astype(np.float64)
    diff = (np.asarray(rec, np.float64) - x) * mask
    ref = (x - np.asarray(bin_mean, np.float64)) * mask
    count = mask.sum() * x.shape[-1]
    l1 = float(np.abs(diff).sum() / count)
    scale = 20.0 if mel.log == "log10" else 20.0 / np.log(10.0)
    kl = float(np.mean(np.asarray(mmaudio_vae.kl_divergence(mean, logvar))))
    return {"mel_l1": l1, "mel_l1_db": scale * l1, "mel_rel_l2": float(np.sqrt((diff ** 2).sum() / (ref ** 2).sum())),
            "kl": kl}

  def eval_fn(variables, step):
    del step
    if "test" not in held_out:
      held_out["test"] = eval_set(cfg, "test")
    return metrics(variables["params"], held_out["test"])

  def sample_fn(variables, step, out_dir):
    from PIL import Image
    from shared.data.media import write_wav
    del step
    params = variables["params"]
    os.makedirs(out_dir, exist_ok=True)
    ev = eval_set(cfg, "test", cfg.sampling.num)
    rec = np.asarray(reconstruct(params, jnp.asarray(ev["mel"]))[0])
    for i in range(rec.shape[0]):
      t = int(ev["mask"][i].sum())
      orig, hat = ev["mel"][i, :t], rec[i, :t]
      lo, hi = float(orig.min()), float(orig.max())
      norm = lambda m: np.clip((m.T[::-1] - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)  # noqa: E731
      pic = np.concatenate([norm(orig), np.full((2, t), 255, np.uint8), norm(hat)], axis=0)
      Image.fromarray(np.repeat(np.repeat(pic, 3, 0), 3, 1)).save(os.path.join(out_dir, f"utt{i}_mel.png"))
      write_wav(os.path.join(out_dir, f"utt{i}_orig.wav"), ev["audio"][i], mel.sample_rate)
      for name, m in (("orig_gl", orig), ("recon_gl", hat)):
        a = features.mel_to_audio(m, mel, n_iter=cfg.sampling.griffin_lim_iters)
        peak = float(np.max(np.abs(a))) if a.size else 0.0
        write_wav(os.path.join(out_dir, f"utt{i}_{name}.wav"), a * (0.99 / peak) if peak > 0.99 else a, mel.sample_rate)

  task = train_lib.Task(init_params=init_params, loss_fn=loss_fn, make_train_iter=make_iter, eval_fn=eval_fn,
                        sample_fn=sample_fn, tokens_per_example=d.segment_frames)
  task.model, task.mel = model, mel
  task.metrics, task.eval_set = metrics, eval_set
  return task


def latent_stats(cfg, task, params, n: int = 64) -> av_codec.LatentStats:
  """Per-channel statistics of the posterior means over n training utterances (real frames only)."""
  ev = eval_set(cfg, "train", n)
  mean, _ = jax.jit(lambda p, x: task.model.apply({"params": p}, x, method=mmaudio_vae.MMAudioVAE.encode))(
      params, jnp.asarray(ev["mel"]))
  keep = ev["mask"][:, ::task.model.config.temporal_downsample]
  return av_codec.LatentStats.fit(np.asarray(mean)[keep])


def export_codec(cfg, task, params, workdir: str, extra: dict | None = None) -> av_codec.MelVAEAudioCodec:
  codec = av_codec.MelVAEAudioCodec(task.model.clone(dtype=jnp.float32), jax.device_get(params), task.mel,
                                    stats=latent_stats(cfg, task, params))
  av_codec.save_mel_vae_audio_codec(os.path.join(workdir, "codec"), codec, extra)
  return codec


def load_codec(workdir: str, **kw) -> av_codec.MelVAEAudioCodec:
  """The audio codec a train_codec run exported (DIR/codec)."""
  return av_codec.load_mel_vae_audio_codec(workdir, **kw)


def codec_kind(cfg) -> str:
  kind = cfg.get("codec", "audio")
  if kind not in ("audio", "video"):
    raise ConfigError(f"config key codec = {kind!r}: expected 'audio' (mel VAE) or 'video' (Wan VAE)")
  return kind


def main():
  from unitalking_jax import train_video_codec
  cfg = cli.train_config()
  video = codec_kind(cfg) == "video"   # user errors first: before data statistics or a distributed start
  workdir = cli.make_dir(cli.FLAGS.workdir, "--workdir")
  cli.start_distributed()
  task = train_video_codec.make_task(cfg) if video else make_task(cfg)
  lead = jax.process_index() == 0
  if lead and not os.path.exists(os.path.join(workdir, "eval_init.json")):
    batch = next(task.make_train_iter())
    init = nn.unbox(task.init_params(jax.random.key(cfg.trainer.seed), batch))  # the trainer's step-0 params
    m0 = task.eval_fn({"params": init}, 0)
    with open(os.path.join(workdir, "eval_init.json"), "w") as f:
      json.dump(m0, f, indent=1)
    print("initial held-out: " + ", ".join(f"{k} {v:.4f}" for k, v in m0.items()), flush=True)
  result = train_lib.train(cfg, task, workdir)
  if lead:
    params = jax.device_get(result.state.params)
    m = task.eval_fn({"params": params}, result.step)
    with open(os.path.join(workdir, "eval_final.json"), "w") as f:
      json.dump({"step": result.step, **m}, f, indent=1)
    if video:
      train_video_codec.export_codec(cfg, task, params, workdir)
      out = os.path.join(workdir, train_video_codec.EXPORT_DIR)
    else:
      export_codec(cfg, task, params, workdir, {"step": result.step, "eval": m})
      out = os.path.join(workdir, "codec")
    what = "clips" if video else "utterances"
    print(f"{result.status} at step {result.step}: held-out ({cfg.data.eval_samples} {what}) "
          + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) + f"; codec in {out}", flush=True)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
