"""`python -m unicue_jax.evaluate --workdir DIR [--split test] [--n 64] [--step S] [--seed 0] [--stoi]`

Scores a checkpoint of any stage on the first n usable clips of a split (SynthCue `test` = held-out cuers) and
prints ONE JSON line, also written to DIR/eval/<step>.json (a split other than test: <step>_<split>.json; +
<step>_<split>_*.txt with the per-clip outputs):

  csr  cer (data.tokens "chars": character error rate, spaces stripped, corpus-summed; the paper's "WER" on
       Chinese) or ser ("syllables": syllable error rate) of the decoded transcripts (greedy / beam: config decode)
  vae  l1 (mean |x - x̂| of the normalised mel, posterior mean), l1_log_mel (the same in natural-log mel units)
  v2s  the generated speech (DDIM, config sampling; noise seed --seed), decoded by the VAE to the log-mel:
       ser          syllable error rate of the template recogniser (shared/metrics/template_asr.py) on the
                    generated log-mel against the clip's syllables; templates fitted on `sampling.template_clips`
                    TRAINING clips passed through the same VAE round trip (training cuers only)
       ser_chance   the same hypotheses against the next clip's syllables (a recogniser of unrelated speech)
       ser_real     the real clips' VAE round trip read by the same templates (the ceiling the VAE allows)
       sync         mean per-clip Pearson correlation of the generated speech energy (per video frame: log of the
                    summed mel energy over its 4 mel frames) with the mouth opening (SynthCue's truth), over the
                    clip's frames; sync_shuffled: generated clip i against clip i+1's mouth; sync_real: the real
                    audio's energy against its own mouth
       spk_sim      cosine similarity of a generated clip's voice embedding (mean mel cepstrum of the louder frames)
                    with its cuer's centroid over the cuer's other real clips (shared/metrics/voice.py); spk_sim_other:
                    with the other cuers' centroids; spk_sim_real: the real clips' own (SynthCue test cuers, 64
                    clips: ~0.17 vs ~-0.26 other; a formant voice of another speaker ~-0.1)
       stoi         (--stoi; needs pystoi) STOI of Griffin-Lim audio from the generated mel against the real
                    audio, and stoi_real: Griffin-Lim of the real mel (no trained vocoder exists here)
       eps_mse      ε-prediction MSE of held-out latents at t = 100/300/500/700 with the clip's own condition;
                    eps_mse_shuffled / eps_mse_zero: with the next clip's / a zero condition (`condition_use`:
                    equal values mean the UNet ignores the video)
  --tts (csr) the CSR -> TTS stand-in (shared/data/synthcue_tts.py: the decoded transcript spoken in the cuer's
       voice over the clip's length, not seeing the video) scored like v2s without the VAE: tts_ser, tts_ser_chance,
       tts_ser_real (the real clips, same templates), tts_sync, tts_sync_shuffled, tts_sync_real
       No SyncNet (LSE-C / LSE-D) or DNSMOS: their weights are not available offline.
"""
from __future__ import annotations

import os

import numpy as np
from absl import flags

from shared import cli
from shared.errors import ConfigError
from shared.metrics.text import chinese_cer, wer


# ----------------------------------------------------------------------------------------------- csr

def transcribe(task, variables, cfg, split: str, n: int) -> list[dict]:
  """Decodes the first n usable clips of `split` -> [{"truth", "hyp", "speaker"}]."""
  from unicue_jax import data as data_lib
  rows = []
  bs = int(cfg.data.eval_batch_size)
  for batch, infos in data_lib.eval_batches(cfg.data, task.vocab, split, n, bs, task.parts):
    hyps = task.recognizer.recognize(variables, batch)
    for i, inf in enumerate(infos):
      truth = inf["text"] if cfg.data.tokens == "chars" else inf["pinyin"]
      rows.append({**inf, "truth": truth, "hyp": hyps[i]})
  return rows


def csr_metrics(rows: list[dict], tokens: str) -> dict:
  refs, hyps = [r["truth"] for r in rows], [r["hyp"] for r in rows]
  if tokens == "chars":
    return {"cer": chinese_cer(refs, hyps), "n": len(rows)}
  return {"ser": wer(refs, [h or "-" for h in hyps]), "n": len(rows)}


def write_transcripts(rows: list[dict], path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(f"truth: {r['truth']}\nhyp:   {r['hyp']}\n\n")


# ----------------------------------------------------------------------------------------------- vae

def vae_metrics(task, variables, cfg, split: str, n: int) -> dict:
  import jax.numpy as jnp
  from unicue_jax import data as data_lib
  from unicue_jax.task import _cached, normalize_mel
  model = task.model
  run = _cached(("vae", model), lambda: lambda p, x: model.apply({"params": p}, x))
  errs = []
  for batch, infos in data_lib.eval_batches(cfg.data, None, split, n, int(cfg.data.eval_batch_size), ("mel",)):
    x = normalize_mel(jnp.asarray(batch["mel"]), cfg.data)[..., None]
    rec = np.asarray(run(variables["params"], x))
    errs.append(np.abs(rec - np.asarray(x))[:len(infos)].mean(axis=(1, 2, 3)))
  l1 = float(np.concatenate(errs).mean())
  return {"l1": l1, "l1_log_mel": l1 * float(cfg.data.mel_std), "n": int(sum(len(e) for e in errs))}


# ----------------------------------------------------------------------------------------------- v2s

def vae_round_trip(task, variables, cfg, mels: np.ndarray) -> np.ndarray:
  """Raw log-mels [K, M, 64] -> through the model's VAE (posterior mean) -> raw log-mels [K, M, 64]."""
  import jax.numpy as jnp
  from unicue_jax.model import UniCueV2S
  from unicue_jax.task import denormalize_mel, normalize_mel
  from unicue_jax.task import _cached
  model = task.model

  def rt(v, x):
    mean, _ = model.apply(v, x, method=UniCueV2S.encode_mel)
    return model.apply(v, mean * v["params"]["latent_scale"], method=UniCueV2S.decode_latents)
  round_trip = _cached(("round_trip", model), lambda: rt)
  bs = int(cfg.data.eval_batch_size)
  out = []
  for i in range(0, len(mels), bs):
    chunk = mels[i:i + bs]
    k = len(chunk)
    if k < bs:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - k, 0)])
    x = normalize_mel(jnp.asarray(chunk), cfg.data)
    out.append(np.asarray(denormalize_mel(round_trip(variables, x), cfg.data))[:k])
  return np.concatenate(out)


def fit_templates(task, variables, cfg, *, round_trip: bool = True):
  """Template recogniser from `sampling.template_clips` training clips through the VAE round trip (round_trip
  False: their log-mels as they are, for speech that no VAE made)."""
  from shared.metrics import template_asr
  from unicue_jax import data as data_lib
  src = data_lib.source(cfg.data, "train", video=False, audio=True)
  m = data_lib.mel_frames(cfg.data)
  per = m // int(cfg.data.frames)
  clips = [src[i] for i in range(min(int(cfg.sampling.template_clips), len(src)))]
  if "syllable_frames" not in (clips[0] if clips else {}):
    from shared.errors import DataError
    raise DataError("the template recogniser is fitted on SynthCue clips (syllable boundaries); data.source "
                    f"{cfg.data.source!r} has none", key="data.source")
  clips = [s for s in clips if len(s["audio"]) <= int(cfg.data.frames) * 16000 // int(cfg.data.fps)]
  mels = np.stack([data_lib.clip_mel(s["audio"], m) for s in clips])
  if round_trip:
    mels = vae_round_trip(task, variables, cfg, mels)
  return template_asr.fit(((mel, s["pinyin"].split(), np.asarray(s["syllable_frames"]) * per, int(s["speaker"]))
                           for mel, s in zip(mels, clips)), src.world.syllables)


def frame_energy(mel: np.ndarray, per: int, t: int) -> np.ndarray:
  """log-mel [M, 64] -> per video frame log energy [t] (mean over its `per` mel frames of log Σ exp(mel))."""
  e = np.log(np.exp(mel.astype(np.float64)).sum(-1) + 1e-12)
  return e[:t * per].reshape(t, per).mean(-1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
  n = min(len(a), len(b))
  a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
  d = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / d) if d > 0 else 0.0


def generate_clips(task, variables, cfg, split: str, n: int, seed: int = 0) -> list[dict]:
  """-> per clip {"gen" [M, 64], "real" [M, 64] raw log-mels, **info}."""
  from unicue_jax import data as data_lib
  rows = []
  bs = int(cfg.data.eval_batch_size)
  for b, (batch, infos) in enumerate(data_lib.eval_batches(cfg.data, None, split, n, bs, task.parts)):
    gen = task.generator.generate(variables, batch, seed=seed + b)
    for i, inf in enumerate(infos):
      rows.append({**inf, "gen": gen[i], "real": np.asarray(batch["mel"][i])})
  return rows


def tts_clips(cfg, rows: list[dict], seed: int = 0) -> list[dict]:
  """CSR -> TTS stand-in (shared/data/synthcue_tts.py): each clip's decoded transcript spoken in its cuer's voice
  over the clip's length, without the video -> rows with "gen" / "real" raw log-mels [M, 64] (Table 2's
  recognise-then-speak baselines)."""
  from shared.data.synthcue_tts import chars_to_syllables, speak
  from unicue_jax import data as data_lib
  if cfg.data.source != "synthcue":
    raise ConfigError("the TTS stand-in speaks in SynthCue voices: data.source must be 'synthcue'")
  world = data_lib.source(cfg.data, "train", video=False).world
  m = data_lib.mel_frames(cfg.data)
  out = []
  for i, r in enumerate(rows):
    syl = chars_to_syllables(world, r["hyp"]) if cfg.data.tokens == "chars" else r["hyp"].split()
    syl = [x for x in syl if x in world.syllables]
    n_frames = int(len(r["audio"]) * int(cfg.data.fps) // 16000)
    audio = speak(world, r["speaker"], syl, n_frames, fps=int(cfg.data.fps), seed=seed + i)
    out.append({**r, "gen": data_lib.clip_mel(audio, m), "real": data_lib.clip_mel(r["audio"], m)})
  return out


def v2s_metrics(task, variables, cfg, rows: list[dict], *, with_stoi: bool = False, vae: bool = True) -> dict:
  """Generated-speech metrics of the module docstring; vae=False: the speech and the templates skip the VAE
  round trip (the TTS stand-in)."""
  from shared.metrics import template_asr
  from unicue_jax import data as data_lib
  templates = fit_templates(task, variables, cfg, round_trip=vae)
  refs = [r["pinyin"] for r in rows]
  gen = template_asr.score([r["gen"] for r in rows], refs, templates)
  reals = np.stack([r["real"] for r in rows])
  real = template_asr.score(list(vae_round_trip(task, variables, cfg, reals) if vae else reals), refs, templates)
  out = {"ser": gen["ser"], "ser_chance": gen["ser_chance"], "ser_real": real["ser"], "n": len(rows)}
  per = data_lib.mel_frames(cfg.data) // int(cfg.data.frames)
  if all("mouth_open" in r for r in rows):
    def energy(r, key):
      t = min(len(r["mouth_open"]), int(cfg.data.frames))
      return frame_energy(r[key], per, t)
    mouths = [np.asarray(r["mouth_open"], np.float64) for r in rows]
    out["sync"] = float(np.mean([_corr(energy(r, "gen"), m) for r, m in zip(rows, mouths)]))
    out["sync_shuffled"] = float(np.mean([_corr(energy(r, "gen"), m) for r, m in zip(rows, mouths[1:] + mouths[:1])]))
    out["sync_real"] = float(np.mean([_corr(energy(r, "real"), m) for r, m in zip(rows, mouths)]))
  from shared.metrics.voice import speaker_similarity
  reals, spk = [r["real"] for r in rows], [r["speaker"] for r in rows]
  out.update(speaker_similarity([r["gen"] for r in rows], reals, spk))
  if "spk_sim" in out:
    out["spk_sim_real"] = speaker_similarity(reals, reals, spk)["spk_sim"]
  if with_stoi:
    from shared.data import features
    from shared.metrics.audio import stoi
    sr = 16000

    def score(r, key):
      audio = features.mel_to_audio(r[key], features.AUDIOLDM)
      ref = np.asarray(r["audio"], np.float32)
      k = min(len(audio), len(ref))
      return stoi(ref[:k], audio[:k], sr)
    out["stoi"] = float(np.mean([score(r, "gen") for r in rows]))
    out["stoi_real"] = float(np.mean([score(r, "real") for r in rows]))
  for r, h in zip(rows, gen["hyps"]):
    r["hyp"] = h
  return out


def write_v2s_rows(rows: list[dict], path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(f"truth: {r['pinyin']}   ({r['text']})\nheard: {r.get('hyp', '')}\n\n")


def write_mel_png(path: str, mels: list[np.ndarray]):
  """Log-mels [M, 64] stacked side by side (low frequencies at the bottom) as one grey PNG."""
  from PIL import Image
  img = np.concatenate([np.asarray(m).T[::-1] for m in mels], axis=1)
  lo, hi = -11.5, max(float(img.max()), -6.0)
  Image.fromarray((255 * np.clip((img - lo) / (hi - lo), 0, 1)).astype(np.uint8)).save(path)


# ----------------------------------------------------------------------------------------------- hooks / CLI

def metrics_for(task, variables, cfg, split: str, n: int, *, seed: int = 0, with_stoi: bool = False,
                tts: bool = False):
  """-> (metrics, rows) for the config's stage. tts (csr): also the CSR -> TTS stand-in's speech metrics,
  prefixed "tts_"."""
  stage = cfg.model.stage
  if stage == "csr":
    rows = transcribe(task, variables, cfg, split, n)
    metrics = csr_metrics(rows, cfg.data.tokens)
    if tts:
      spoken = tts_clips(cfg, rows, seed)
      metrics.update({f"tts_{k}": v for k, v in v2s_metrics(task, variables, cfg, spoken, with_stoi=with_stoi,
                                                            vae=False).items() if k != "n"})
    return metrics, rows
  if tts:
    raise ConfigError(f"--tts scores a CSR (stage csr) workdir; this one is stage {stage!r}")
  if stage == "vae":
    return vae_metrics(task, variables, cfg, split, n), []
  rows = generate_clips(task, variables, cfg, split, n, seed)
  metrics = v2s_metrics(task, variables, cfg, rows, with_stoi=with_stoi)
  metrics.update(condition_use(task, variables, cfg, split, n, seed))
  return metrics, rows


def condition_use(task, variables, cfg, split: str, n: int, seed: int = 0,
                  timesteps: tuple[int, ...] = (100, 300, 500, 700)) -> dict:
  """Does the UNet use its visual condition? The ε-prediction MSE on held-out clips (latents of their real mel,
  fixed noise, the given timesteps, averaged) with each clip's own condition (eps_mse), with the next clip's
  (eps_mse_shuffled) and with a zero condition (eps_mse_zero). Equal values: the model ignores the video."""
  import jax
  import jax.numpy as jnp
  from shared.diffusion import audioldm_schedule, predicted_eps, q_sample
  from unicue_jax import data as data_lib
  from unicue_jax.model import UniCueV2S
  from unicue_jax.task import _cached, normalize_mel, prediction
  model, schedule, ptype = task.model, audioldm_schedule(), prediction(cfg)

  def mses(v, mel, video, pose_maps, mask, noise, syllables):
    mean, _ = model.apply(v, normalize_mel(mel, cfg.data), method=UniCueV2S.encode_mel)
    z0 = mean * v["params"]["latent_scale"]
    ctx, labels = model.apply(v, video, pose_maps, mask, syllables=syllables, method=UniCueV2S.condition)
    conds = {"": (ctx, labels, mask), "_shuffled": jax.tree.map(lambda a: jnp.roll(a, 1, 0), (ctx, labels, mask)),
             "_zero": (jnp.zeros_like(ctx), None if labels is None else jnp.zeros_like(labels), mask)}
    out = {}
    for name, (c, lab, m) in conds.items():
      errs = []
      for i, t in enumerate(timesteps):
        tt = jnp.full((z0.shape[0],), t, jnp.int32)
        zt = q_sample(schedule, z0, noise[i], tt)
        eps = predicted_eps(schedule, model.apply(v, zt, tt, c, lab, m, method=UniCueV2S.denoise), zt, tt, ptype)
        errs.append(jnp.mean(jnp.square(eps - noise[i]), axis=(1, 2, 3)))
      out[name] = jnp.mean(jnp.stack(errs), 0)                                     # [B]
    return out
  run = _cached(("condition_use", model, timesteps, ptype), lambda: jax.jit(mses))
  sums, count = {}, 0
  rng = np.random.default_rng(seed)
  for batch, infos in data_lib.eval_batches(cfg.data, None, split, n, int(cfg.data.eval_batch_size), task.parts):
    mel = jnp.asarray(batch["mel"])
    f = 2 ** (len(model.config.vae.block_out_channels) - 1)
    shape = (len(timesteps), mel.shape[0], mel.shape[1] // f, 64 // f, model.config.vae.latent_channels)
    noise = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    syl = batch.get("syllables")
    out = run(variables, mel, jnp.asarray(batch["video"]), jnp.asarray(batch["pose_maps"]),
              jnp.asarray(batch["video_mask"]), noise, None if syl is None else jnp.asarray(syl))
    k = len(infos)
    for name, v in out.items():
      sums[name] = sums.get(name, 0.0) + float(np.asarray(v)[:k].sum())
    count += k
  return {f"eps_mse{name}": v / max(count, 1) for name, v in sums.items()}


def make_hooks(cfg, task):
  """(eval_fn, sample_fn) for the trainer: held-out metrics; transcripts / generated mels + wavs of 8 clips."""
  split, n = cfg.data.eval_split, int(cfg.data.eval_samples)
  stage = cfg.model.stage

  def eval_fn(variables, step):
    del step
    n_eval = n if stage != "v2s" else min(n, int(cfg.sampling.score_clips))
    return metrics_for(task, variables, cfg, split, n_eval)[0]

  def sample_fn(variables, step, out_dir):
    del step
    if stage == "csr":
      write_transcripts(transcribe(task, variables, cfg, split, 16), os.path.join(out_dir, "transcripts.txt"))
    elif stage == "v2s":
      rows = generate_clips(task, variables, cfg, split, 8)
      write_outputs(rows, out_dir)

  return eval_fn, sample_fn


def write_outputs(rows: list[dict], out_dir: str):
  """mels.png (generated | real per clip) and Griffin-Lim wavs of the generated mels (no trained vocoder)."""
  from shared.data import features
  from shared.data.media import write_wav
  os.makedirs(out_dir, exist_ok=True)
  write_mel_png(os.path.join(out_dir, "mels.png"), [m for r in rows for m in (r["gen"], r["real"])])
  for i, r in enumerate(rows):
    write_wav(os.path.join(out_dir, f"gen_{i:02d}.wav"), features.mel_to_audio(r["gen"], features.AUDIOLDM), 16000)


def evaluate(workdir: str, *, split: str = "test", n: int = 64, step: int | None = None, seed: int = 0,
             with_stoi: bool = False, tts: bool = False) -> tuple[int, dict]:
  """-> (step, metrics). CheckpointError naming the directory / step when there is none."""
  from shared.checkpoint import restore
  r = restore(workdir, step)
  from unicue_jax.task import make_task
  task = make_task(r.config)
  metrics, rows = metrics_for(task, r.variables, r.config, split, n, seed=seed, with_stoi=with_stoi, tts=tts)
  stage = r.config.model.stage
  if stage == "csr":
    write_transcripts(rows, os.path.join(workdir, "eval", f"{r.step}_{split}_transcripts.txt"))
  elif stage == "v2s":
    write_v2s_rows(rows, os.path.join(workdir, "eval", f"{r.step}_{split}_heard.txt"))
  return r.step, metrics


def main():
  f = cli.FLAGS
  step, metrics = evaluate(f.workdir, split=f.split, n=f.n, step=f.step, seed=f.seed, with_stoi=f.stoi, tts=f.tts)
  # the test split keeps DIR/eval/<step>.json; another split goes to <step>_<split>.json, so it overwrites nothing
  cli.write_eval(f.workdir, step, metrics, name="" if f.split == "test" else f.split, split=f.split,
                 n_requested=f.n)


if __name__ == "__main__":
  cli.define_eval_flags(default_n=64)
  flags.DEFINE_boolean("stoi", False, "Stage 2: also STOI of Griffin-Lim audio against the real audio (pystoi).")
  flags.DEFINE_boolean("tts", False, "Stage csr: also the CSR -> TTS stand-in (transcripts spoken in the cuer's "
                       "SynthCue voice without the video): tts_ser, tts_sync, ...")
  cli.run(main)
