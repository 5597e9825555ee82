"""UniTalking's training task for shared.train: model from config, multi-task flow-matching loss, generation.

Tasks, drawn per example by `cfg.objective.tasks` ratios inside the jitted loss (one run alternates them):
  t2av   text -> video + audio              (nothing clean)
  tv2a   text + video -> audio              (every video token clean, σ = 0; video queries may not attend
                                             to audio keys: the per-example dense form of the TV2A mask)
  ti2av  text + first frame -> video + audio (first latent frame clean)
  tr2av  text + reference audio -> video + audio (the reference K/V gets real tokens; zeros otherwise)
Objective: linear-path flow matching (shared.diffusion), σ ~ shifted uniform/logit-normal, one σ per example
shared by both streams (a share `objective.p_independent_sigma` of examples draws the video σ independently),
clean tokens at σ = 0 and out of the loss; loss = video MSE + audio_weight * audio MSE.
Text: pinyin ids [B, S] (learned table) or, data.text = "umt5", frozen UMT5 features [B, S, text_dim] from the
data pipeline (unitalking_jax/text_encoder.py), with batch["text_mask"] [B, S]; model.mask_text=False drops
the mask from the cross-attention (Wan's DiT attends to the zero rows too).
CFG condition dropout: text (ids / features -> 0, mask -> position 0 only; the same null at sampling) with p_drop_text, reference with p_drop_ref, all with p_drop_all.
Stage 1 (`cfg.stage.number == 1`): the audio stream alone on text -> audio (TTS; tr2av ratio keeps
reference conditioning), every parameter outside `cfg.stage.trainable` prefixes frozen via Task.trainable.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shared import mesh as mesh_lib
from shared import train as train_lib
from shared.data.pipeline import make_iterator
from shared.diffusion import dropout_masks, flow_matching_loss, flow_sampler, guided, interpolate, sample_sigma
from shared.errors import ConfigError
from unitalking_jax import data as data_lib
from unitalking_jax import init_from
from unitalking_jax.model import UniTalking, frame_to_token, model_from_config

TASKS = ("t2av", "tv2a", "ti2av", "tr2av")
NUM_TRAIN_TIMESTEPS = 1000


def text_mask(text):
  """ids [B, S] -> bool [B, S]: real tokens, plus position 0 always (a dropped text attends its pad)."""
  return (text != 0) | (jnp.arange(text.shape[1]) == 0)[None]


def batch_text(batch):
  """-> (text ids [B, S] | features [B, S, E], mask [B, S] bool): batch["text_mask"], else from the ids."""
  text = batch["text"]
  if "text_mask" in batch:
    return text, jnp.asarray(batch["text_mask"], bool)
  if text.ndim != 2:
    raise ConfigError(f"text features of shape {text.shape} need batch['text_mask'] [B, S]")
  return text, text_mask(text)


def null_text(text, mask, drop=None):
  """CFG null where drop [B] (all if None): ids / features -> 0, mask -> position 0 only."""
  b = text.shape[0]
  drop = jnp.ones((b,), bool) if drop is None else drop
  first = jnp.broadcast_to((jnp.arange(mask.shape[1]) == 0)[None], mask.shape)
  return (jnp.where(drop.reshape((b,) + (1,) * (text.ndim - 1)), jnp.zeros_like(text), text),
          jnp.where(drop[:, None], first, mask))


def draw_sigmas(rng, clean, o):
  """clean [B, T] bool (latent frames given as conditions), o = cfg.objective -> (audio σ [B], video σ [B, T]).

  One shifted σ per example shared by both streams; a share `o.p_independent_sigma` of the examples draws the
  video σ on its own (so each stream also learns to read the other at a different noise level: audio from a
  half-formed mouth, the mouth from formed speech); clean frames get σ = 0."""
  k_sig, k_own, k_pick = jax.random.split(rng, 3)
  b = clean.shape[0]
  sigma = sample_sigma(k_sig, (b,), method=o.sampling, shift=o.timestep_shift)
  sigma_v = sigma
  p_ind = float(o.get("p_independent_sigma", 0.0))
  if p_ind > 0:
    own = sample_sigma(k_own, (b,), method=o.sampling, shift=o.timestep_shift)
    sigma_v = jnp.where(jax.random.uniform(k_pick, (b,)) < p_ind, own, sigma)
  return sigma, jnp.where(clean, 0.0, sigma_v[:, None])


def make_loss(cfg, model: UniTalking):
  o = cfg.objective
  ratios = np.array([float(o.tasks[t]) for t in TASKS], np.float64)
  if ratios.min() < 0 or ratios.sum() <= 0:
    raise ConfigError(f"objective.tasks {dict(o.tasks)}: ratios must be >= 0 with a positive sum")
  logits = jnp.asarray(np.log(np.maximum(ratios / ratios.sum(), 1e-30)), jnp.float32)
  audio_only = cfg.stage.number == 1
  net = model.clone(audio_only=True) if audio_only else model

  def loss_fn(params, batch, rng):
    video, audio = batch["video"], batch["audio"]
    b, t = video.shape[:2]
    k_task, k_sig, k_nv, k_na, k_drop = jax.random.split(rng, 5)
    task = jax.random.categorical(k_task, logits, shape=(b,))
    is_tv2a, is_ti2av, is_tr2av = task == 1, task == 2, task == 3
    if audio_only:
      is_tv2a = is_ti2av = jnp.zeros((b,), bool)
    clean = is_tv2a[:, None] | (is_ti2av[:, None] & (jnp.arange(t) == 0)[None])   # [B, T] latent frames
    sigma, sig_v = draw_sigmas(k_sig, clean, o)
    noise_v = jax.random.normal(k_nv, video.shape, jnp.float32)
    noise_a = jax.random.normal(k_na, audio.shape, jnp.float32)
    xv = interpolate(video, noise_v, sig_v)
    xa = interpolate(audio, noise_a, sigma)
    drop = dropout_masks(k_drop, b, {"text": o.p_drop_text, "ref": o.p_drop_ref}, o.p_drop_all)
    text, tmask = null_text(*batch_text(batch), drop["text"])
    ref = jnp.where((is_tr2av & ~drop["ref"])[:, None, None], batch["ref"], 0.0)
    t_a = sigma * NUM_TRAIN_TIMESTEPS
    if audio_only:
      _, pa = net.apply({"params": params}, None, xa, None, t_a, text, tmask, ref)
      la = flow_matching_loss(pa, audio, noise_a)
      return la * b, {"weight": jnp.float32(b), "loss_audio": la}
    t_v = frame_to_token(sig_v * NUM_TRAIN_TIMESTEPS, model.config, video.shape[2], video.shape[3])
    pv, pa = net.apply({"params": params}, xv, xa, t_v, t_a, text, tmask, ref, tv2a_flags=is_tv2a)
    lv = flow_matching_loss(pv, video, noise_v, (~clean).astype(jnp.float32))
    la = flow_matching_loss(pa, audio, noise_a)
    # weight = examples: each term is a batch mean (the video one over the noisy frames), times B
    return (lv + o.audio_weight * la) * b, {"weight": jnp.float32(b), "loss_video": lv, "loss_audio": la,
                                      "frac_tv2a": jnp.mean(is_tv2a), "frac_ti2av": jnp.mean(is_ti2av)}

  return loss_fn


def make_generate(cfg, model: UniTalking, task: str):
  """A jitted (params, batch, rng) -> (video latents [B, T, h, w, C], audio latents [B, Ta, Ca]) for `task`.

  batch: "text" [B, S] ids | [B, S, E] features (+ "text_mask" [B, S]), "video" (given video for tv2a / first frame for ti2av; shapes set the output),
  "audio" (shape only), "ref" [B, R, ref_dim] (tr2av). CFG: [null, text] (+ [text + ref] for tr2av) with
  cfg.sampling.text_scale / ref_scale."""
  if task not in TASKS:
    raise ConfigError(f"task {task!r}: expected one of {TASKS}")
  s = cfg.sampling
  sample = flow_sampler(s.sampler, s.steps, s.shift)
  net = model.clone(tv2a=(task == "tv2a"))

  def run(params, batch, rng):
    video, audio = batch["video"], batch["audio"]
    text, tmask = batch_text(batch)
    b, t, h, w, _ = video.shape
    nv = int(np.prod(video.shape[1:]))
    clean_frame = jnp.broadcast_to(jnp.arange(t) < (t if task == "tv2a" else (1 if task == "ti2av" else 0)), (b, t))
    clean_tok = frame_to_token(clean_frame.astype(jnp.float32), model.config, h, w) > 0
    ref = batch["ref"] if task == "tr2av" else jnp.zeros_like(batch["ref"])
    null, null_mask = null_text(text, tmask)
    conds = [dict(text=null, mask=null_mask, ref=jnp.zeros_like(ref)),
             dict(text=text, mask=tmask, ref=jnp.zeros_like(ref))]
    scales = [s.text_scale]
    if task == "tr2av":
      conds.append(dict(text=text, mask=tmask, ref=ref))
      scales.append(s.ref_scale)

    def fn(x, tt, cond):
      n = x.shape[0]
      xv = x[:, :nv].reshape((n,) + video.shape[1:])
      xa = x[:, nv:].reshape((n,) + audio.shape[1:])
      ct = jnp.concatenate([clean_tok] * (n // b), axis=0)
      t_v = jnp.where(ct, 0.0, tt)
      pv, pa = net.apply({"params": params}, xv, xa, t_v, jnp.full((n,), tt), cond["text"],
                         cond["mask"], cond["ref"])
      return jnp.concatenate([pv.reshape(n, -1), pa.reshape(n, -1)], axis=1)

    fixed = jnp.concatenate([jnp.repeat(clean_frame, nv // t, axis=1), jnp.zeros((b, audio[0].size), bool)], 1)
    value = jnp.concatenate([video.reshape(b, -1), jnp.zeros((b, audio[0].size))], 1).astype(jnp.float32)
    x0 = jax.random.normal(rng, value.shape, jnp.float32)
    out = sample(guided(fn, conds, scales), x0, fixed_mask=fixed if task in ("tv2a", "ti2av") else None,
                 fixed_value=value)
    return out[:, :nv].reshape(video.shape), out[:, nv:].reshape(audio.shape)

  return jax.jit(run)


SAMPLERS = ("euler", "unipc")


def check_config(cfg) -> None:
  """Every objective / stage / sampling setting, checked when the task is made (before any data or checkpoint):
  ConfigError naming the key. (A bad sampling setting used to surface only at the first sample, after minutes.)"""
  def need(ok, key, value, expected):
    if not ok:
      raise ConfigError(f"config key {key} = {value!r}: expected {expected}")
  s, o = cfg.sampling, cfg.objective
  need(s.sampler in SAMPLERS, "sampling.sampler", s.sampler, f"one of {SAMPLERS}")
  need(isinstance(s.steps, int) and s.steps >= 1, "sampling.steps", s.steps, "an integer >= 1")
  need(s.shift > 0, "sampling.shift", s.shift, "> 0")
  for k in ("text_scale", "ref_scale"):
    need(s[k] >= 0, f"sampling.{k}", s[k], ">= 0 (1 = no guidance)")
  need(isinstance(s.num, int) and s.num >= 0, "sampling.num", s.num, "an integer >= 0")
  need(int(s.get("score_clips", s.num)) >= 1 or not cfg.trainer.sample_every, "sampling.score_clips",
       s.get("score_clips"), ">= 1 when trainer.sample_every > 0")
  need(isinstance(s.griffin_lim_iters, int) and s.griffin_lim_iters >= 1, "sampling.griffin_lim_iters",
       s.griffin_lim_iters, "an integer >= 1")
  need(o.timestep_shift > 0, "objective.timestep_shift", o.timestep_shift, "> 0")
  need(o.audio_weight >= 0, "objective.audio_weight", o.audio_weight, ">= 0")
  for k in ("p_drop_text", "p_drop_ref", "p_drop_all", "p_independent_sigma"):
    need(0.0 <= float(o.get(k, 0.0)) <= 1.0, f"objective.{k}", o.get(k), "a probability in [0, 1]")
  need(set(o.tasks.keys()) == set(TASKS), "objective.tasks", dict(o.tasks), f"ratios for exactly {TASKS}")
  need(cfg.stage.number in (1, 2), "stage.number", cfg.stage.number, "1 (audio stream alone) or 2 (joint)")
  need(cfg.init_audio in init_from.AUDIO_MODES, "init_audio", cfg.init_audio, f"one of {init_from.AUDIO_MODES}")
  need(cfg.init_audio != "copy_video" or bool(cfg.init.video.path), "init_audio", cfg.init_audio,
       "'random' without init.video.path ('copy_video' needs a Wan checkpoint directory there)")
  stage1 = cfg.init.get("stage1")
  need(not (stage1 is not None and stage1.path and cfg.init_audio == "copy_video"), "init_audio", cfg.init_audio,
       "'random' with init.stage1.path ('copy_video' would overwrite the stage-1 audio stream with the video's)")
  data_lib.text_kind(cfg)   # data.text agrees with model.text_vocab
  data_lib.codec_kind(cfg)  # data.video_codec / data.audio_codec


def make_val_loss(cfg, model: UniTalking):
  """Task.val_loss_fn: the joint T2AV flow-matching loss (video MSE + audio_weight x audio MSE, text kept, no
  reference, no dropout) on the first `validation.clips` clips of split `validation.split` ("validation":
  unseen clips of the training speakers, the in-distribution loss scaling laws are fitted to; "test": the
  held-out speakers), at `validation.sigmas` fixed noise levels (the midpoints of (0, 1)) with fixed noise:
  the same inputs in every evaluation of every run (shared/scaling/validation.py). Prepared on first use."""
  v = cfg.get("validation") or {}
  clips, levels, seed = int(v.get("clips", 32)), int(v.get("sigmas", 8)), int(v.get("seed", 0))
  split = str(v.get("split", "validation"))
  aw = float(cfg.objective.audio_weight)
  held = []

  def loss_at(params, batch, sigma, key):
    video, audio = batch["video"], batch["audio"]
    b = video.shape[0]
    k_v, k_a = jax.random.split(key)
    noise_v = jax.random.normal(k_v, video.shape, jnp.float32)
    noise_a = jax.random.normal(k_a, audio.shape, jnp.float32)
    sig_v = jnp.broadcast_to(sigma[:, None], video.shape[:2])
    xv, xa = interpolate(video, noise_v, sig_v), interpolate(audio, noise_a, sigma)
    text, tmask = batch_text(batch)
    t_v = frame_to_token(sig_v * NUM_TRAIN_TIMESTEPS, model.config, video.shape[2], video.shape[3])
    pv, pa = model.apply({"params": params}, xv, xa, t_v, sigma * NUM_TRAIN_TIMESTEPS, text, tmask,
                         jnp.zeros_like(batch["ref"]))
    loss = flow_matching_loss(pv, video, noise_v) + aw * flow_matching_loss(pa, audio, noise_a)
    return loss * b, jnp.float32(b)

  def val_loss(variables) -> float:
    from shared.scaling.validation import fixed_batches, grid_loss, sigma_grid
    if not held:
      src = data_lib.source(cfg, split)
      examples = [data_lib.prepare(src[i], cfg, seed) for i in range(min(clips, len(src)))]
      batches = fixed_batches(examples, data_lib.collate, 8)
      held.extend({k: x for k, x in b.items() if k != "mouth_open"} for b in batches)
    return grid_loss(loss_at, variables["params"], held, sigma_grid(levels), seed)

  return val_loss


def scale_config(cfg, width: int):
  """The sweep's size rule (shared/scaling): a model of `width` channels, heads of 32 (width / 32 of them),
  feed-forward 2 x width in both streams, depth width / 32 (a fixed aspect ratio, as in Kaplan et al.'s
  sweeps; the tiny config is width 128 = 4 layers), learning rate scaled as (the config's width) / width (the
  μP-style width rule for Adam on hidden matrices, applied to all). Changes cfg in place and returns it."""
  from shared.errors import ConfigError
  if width % 32 or width < 32:
    raise ConfigError(f"unitalking sweep size {width}: the width must be a positive multiple of 32 (heads of 32)")
  c = cfg
  base = c.model.video.num_attention_heads * c.model.video.attention_head_dim
  c.model.video.update(dict(num_attention_heads=width // 32, attention_head_dim=32, ffn_dim=2 * width,
                            num_layers=max(1, width // 32)))
  c.model.audio_ffn_dim = 2 * width
  c.trainer.optimizer.learning_rate = float(c.trainer.optimizer.learning_rate) * base / width
  return c


def make_task(cfg, model: UniTalking | None = None) -> train_lib.Task:
  """The trainer's Task; task.model, task.generate(params, batch, task_name, seed) for sampling / evaluation.
  Media (clips, sync plots) are written by unitalking_jax/samples.py, not here."""
  model = model if model is not None else model_from_config(cfg)
  mc = model.config
  prefixes = tuple(cfg.stage.trainable)
  gen = {}
  check_config(cfg)

  def init_params(rng, batch):
    b = batch["video"].shape[0]
    t_v = jnp.zeros((b, batch["video"].shape[1] * (batch["video"].shape[2] // mc.video.patch_size[1])
                     * (batch["video"].shape[3] // mc.video.patch_size[2]) // mc.video.patch_size[0]))
    return model.init(rng, jnp.asarray(batch["video"]), jnp.asarray(batch["audio"]), t_v, jnp.zeros((b,)),
                      jnp.asarray(batch["text"]), None, jnp.asarray(batch["ref"]))["params"]

  def make_iter():
    if cfg.data.get("latents", ""):   # prepared shards (unitalking_jax/prepare.py): no codec in the loop
      from unitalking_jax.latents import LatentSource
      return make_iterator(LatentSource(cfg.data.latents, cfg), data_lib.collate, seed=cfg.trainer.seed,
                           batch_size=mesh_lib.local_batch_size(cfg.trainer.batch_size), workers=cfg.data.workers)
    src = data_lib.source(cfg, "train")
    return make_iterator(src, data_lib.collate, batch_size=mesh_lib.local_batch_size(cfg.trainer.batch_size),
                         seed=cfg.trainer.seed, map_fn=lambda s: data_lib.prepare(s, cfg, cfg.trainer.seed),
                         workers=cfg.data.workers)

  def generate(params, batch, task: str, seed: int = 0):
    if task not in gen:
      gen[task] = make_generate(cfg, model, task)
    b = {k: jnp.asarray(v) for k, v in batch.items() if k != "mouth_open"}
    return gen[task](params, b, jax.random.key(seed))

  post_init = None
  if cfg.init_audio == "copy_video":
    post_init = lambda p: init_from.copy_video_to_audio(p)[0]
  task = train_lib.Task(init_params=init_params, loss_fn=make_loss(cfg, model), make_train_iter=make_iter,
                        trainable=(lambda p: any(p.startswith(x) for x in prefixes)), post_init=post_init)
  task.model, task.generate = model, generate
  task.val_loss_fn = make_val_loss(cfg, model)
  task.tokens_per_example = tokens_per_example(cfg, model)
  return task


def tokens_per_example(cfg, model: UniTalking) -> int:
  """Transformer tokens of one training example: video latent patches + audio tokens (throughput, sweeps)."""
  spec = batch_spec(cfg)
  _, t, h, w, _ = spec["video"].shape
  p = model.config.video.patch_size
  return int((t // p[0]) * (h // p[1]) * (w // p[2]) + spec["audio"].shape[1] // model.config.audio_patch)


def batch_spec(cfg) -> dict:
  """The GLOBAL training batch of cfg.trainer.batch_size as jax.ShapeDtypeStruct, exactly as the data pipeline
  (data_lib.prepare + collate) yields it; for ahead-of-time compiles (shared/scaling/aot.py), no data built.
  Latent shapes from data_lib.latent_layout (the codec's: pca or the trained VAEs), L = data.text_len:
    video [B, t, h, w, video_pca] f32, audio [B, Ta, audio_pca] f32, text [B, L] int32 (pinyin) |
    [B, L, model.video.text_dim] f32 (umt5), text_mask [B, L] bool, ref [B, R, ref] f32, mouth_open [B, T] f32."""
  d, b = cfg.data, int(cfg.trainer.batch_size)
  lay = data_lib.latent_layout(cfg)
  s = int(d.text_len)
  text = (b, s) if data_lib.text_kind(cfg) == "pinyin" else (b, s, int(cfg.model.video.text_dim))
  spec = lambda shape, dt: jax.ShapeDtypeStruct(shape, jnp.dtype(dt))  # noqa: E731
  return {"video": spec((b,) + lay["video"], jnp.float32),
          "audio": spec((b,) + lay["audio"], jnp.float32),
          "text": spec(text, jnp.int32 if len(text) == 2 else jnp.float32),
          "text_mask": spec((b, s), jnp.bool_),
          "ref": spec((b,) + lay["ref"], jnp.float32),
          "mouth_open": spec((b, lay["frames"]), jnp.float32)}
