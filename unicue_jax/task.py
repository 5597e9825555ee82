"""UniCUE tasks for the shared trainer: data -> batch, loss, decode / generate, one per stage (config
`model.stage`):

  csr  stage 1 (sec. 3.5): L = L_R + λ L_S (loss.align "cosine": eqs. 5-6 as written; "contrastive": CLIP-style
       InfoNCE over the batch, see model.alignment_loss). L_R: cross-entropy of the MBart decoder (teacher forced: input
       </s> y_1..y_n, target y_1..y_n </s>; optional label smoothing), summed over target tokens; L_S per utterance
       (model.alignment_loss over the masked-mean pools, eqs. 5-6). loss_sum = Σ CE + λ n_tokens mean_b L_S,
       weight = n_tokens: the trainer's division gives CE per token + λ L_S per utterance. λ = model.align_weight
       (0 = no_align: the text encoder is not run and its parameters are frozen). BatchNorm statistics of the
       processor's ResNet update in the train step (model_state). MBart's final_logits_bias stays frozen (a
       buffer in transformers).
  v2s  stage 2: L_G = E ||ε - M(Z_s^t, Z_mv, t)||² (eq. 3; objective.prediction_type "v_prediction", ours: the
       target is v, `prediction`): mel -> (mel - mean) / std -> frozen VAE posterior
       sample x latent_scale = Z_s; t ~ U{0..999}; Z_s^t = q_sample (AudioLDM's schedule: 1000 steps, √β linear
       0.0015 -> 0.0195, shared.diffusion.audioldm_schedule); mean squared error over latent elements per example,
       weight = examples. Trainable: adapter, UNet (and the processor in single_v2s); frozen: processor, VAE,
       latent_scale. post_init (fresh start): latent_scale = 1 / std of the training latents (LDM's
       scale_by_std; model.latent_scale > 0 fixes it) and the adapter's queries from the latent space.
  vae  the tiny mel VAE (no pretrained one exists here): L1 reconstruction of the normalised mel from a posterior
       sample + objective.kl_weight x KL(q(z|x) || N(0, I)), both summed over elements, weight = mel elements.

Decoding (`Recognizer`): processor + MBart decoder through its KV cache (shared.decoding: greedy when
decode.beam == 1, else beam search), jitted once per batch shape. Generation (`Generator`): DDIM
(sampling.steps, eta; AudioLDM's DDIM: leading spacing, steps_offset 1, set_alpha_to_one False) from N(0, I)
latents, decoded by the VAE to the log-mel (denormalised to AudioLDM's raw natural-log mel).
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from shared import train as train_lib
from shared.config import from_section
from shared.decoding import search
from shared.diffusion import audioldm_schedule, ddim_plan, ddim_sample, q_sample, training_target
from shared.errors import ConfigError
from shared.mesh import local_batch_size
from shared.models import autoencoder_kl as akl
from shared.models.mbart import MBart, MBartGenerator
from unicue_jax import data as data_lib
from unicue_jax import model as model_lib
from unicue_jax.model import UniCueConfig, UniCueCSR, UniCueV2S, alignment_loss, model_from_config

log = logging.getLogger(__name__)
PARTS = {"csr": ("visual", "tokens"), "v2s": ("visual", "mel"), "vae": ("mel",)}


def model_config(cfg, vocab=None) -> UniCueConfig:
  """The model a config builds; the MBart vocabulary size comes from the data's units (csr)."""
  if vocab is None:
    return model_lib.model_config(cfg)
  runtime = {"mbart": dict(vocab_size=len(vocab))} if cfg.model.stage == "csr" else {}
  return from_section(UniCueConfig, cfg.model, **runtime)


def check_config(cfg):
  stage = cfg.model.stage
  d = cfg.data
  if stage in ("v2s", "vae"):
    data_lib.mel_frames(d)
    m = data_lib.mel_frames(d)
    s = 2 ** (len(cfg.model.vae.block_out_channels) - 1)
    if m % s or 64 % s:
      raise ConfigError(f"data.frames={d.frames} gives {m} mel frames: must be a multiple of the VAE's stride {s}")
    if not 0.0 <= cfg.objective.kl_weight:
      raise ConfigError(f"objective.kl_weight={cfg.objective.kl_weight}: expected >= 0")
    if d.mel_std <= 0:
      raise ConfigError(f"data.mel_std={d.mel_std}: expected > 0")
  if stage == "v2s":
    a = cfg.model.adapter
    if a.enabled and a.queries != d.frames:
      raise ConfigError(f"model.adapter.queries={a.queries} must equal data.frames={d.frames} (one query per "
                        "visual token)")
    init = cfg.get("init") or {}
    if cfg.objective.require_vae_init and not (init.get("vae") and init.vae.get("path")):
      raise ConfigError("stage 2 needs the trained mel VAE: set --config.init.vae.path=REL/vae (python -m "
                        "unicue_jax.export of a 'vae' stage workdir), or objective.require_vae_init=False")
    if cfg.model.freeze_processor and cfg.objective.require_processor_init and not (
        init.get("processor") and init.processor.get("path")):
      raise ConfigError("stage 2 with a frozen processor needs the stage-1 processor: set --config.init.processor."
                        "path=REL/processor.safetensors and --config.init.processor_frontend.path=REL/processor/"
                        "frontend (python -m unicue_jax.export of a stage-1 workdir), or model.freeze_processor="
                        "False (single_v2s)")
    prediction(cfg)
    s = cfg.sampling
    if not 1 <= s.steps <= 1000 or s.eta < 0:
      raise ConfigError(f"sampling.steps={s.steps}, sampling.eta={s.eta}: expected 1..1000 steps and eta >= 0")
  if stage == "csr":
    if not 0.0 <= cfg.loss.label_smoothing < 1.0:
      raise ConfigError(f"loss.label_smoothing={cfg.loss.label_smoothing}: expected 0 <= ε < 1")
    if cfg.decode.beam < 1:
      raise ConfigError(f"decode.beam={cfg.decode.beam}: expected >= 1 (1 = greedy)")
    if cfg.model.align_weight < 0:
      raise ConfigError(f"model.align_weight={cfg.model.align_weight}: expected >= 0")
    if cfg.loss.get("align", "cosine") not in ("cosine", "contrastive") or cfg.loss.get("align_temperature", 0.07) <= 0:
      raise ConfigError(f"loss.align={cfg.loss.align!r}, loss.align_temperature={cfg.loss.align_temperature}: "
                        "expected 'cosine' (eqs. 5-6) or 'contrastive' (symmetric InfoNCE over the batch), T > 0")


# ----------------------------------------------------------------------------------------------- stage 1

def teacher_forcing(tokens, mask):
  """tokens [B, N] (padded), mask [B, N] -> (dec_in [B, N+1] = </s> y, labels [B, N+1] = y </s>, label mask
  [B, N+1]); labels double as the text encoder's input "y </s>" (pads <pad>)."""
  b, n = tokens.shape
  lengths = jnp.sum(mask.astype(jnp.int32), axis=1)
  y = jnp.where(mask, tokens, data_lib.PAD)
  pos = jnp.arange(n + 1)[None, :]
  labels = jnp.concatenate([y, jnp.full((b, 1), data_lib.PAD, tokens.dtype)], axis=1)
  labels = jnp.where(pos == lengths[:, None], data_lib.EOS, labels)
  lmask = pos <= lengths[:, None]
  dec_in = jnp.concatenate([jnp.full((b, 1), data_lib.EOS, tokens.dtype), y], axis=1)
  return dec_in, labels, lmask


def token_ce(logits, labels, mask, eps: float):
  """Summed cross-entropy [B] over the masked positions, label smoothing eps (uniform over the vocabulary)."""
  v = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, v, dtype=jnp.float32)
  target = optax.smooth_labels(onehot, eps) if eps > 0 else onehot
  tok = optax.softmax_cross_entropy(logits.astype(jnp.float32), target)
  return jnp.sum(tok * mask, axis=1)


def csr_loss_fn(model: UniCueCSR, cfg):
  lam, eps = float(cfg.model.align_weight), float(cfg.loss.label_smoothing)
  kind, temp = str(cfg.loss.get("align", "cosine")), float(cfg.loss.get("align_temperature", 0.07))

  def loss_fn(params, batch, rng, model_state):
    del rng
    dec_in, labels, lmask = teacher_forcing(batch["tokens"], batch["tokens_mask"])
    text = (labels, lmask) if lam > 0 else (None, None)
    out, new_state = model.apply({"params": params, **model_state}, batch["video"], batch["pose_maps"],
                                 batch["video_mask"], dec_in, lmask, *text, train=True, mutable=list(model_state))
    ce = token_ce(out["logits"], labels, lmask, eps)
    n_tok = jnp.sum(lmask.astype(jnp.float32))
    loss_sum = jnp.sum(ce)
    acc = jnp.sum((jnp.argmax(out["logits"], -1) == labels) * lmask) / n_tok
    aux = {"ce_per_token": loss_sum / n_tok, "token_acc": acc}
    if lam > 0:
      ls = alignment_loss(out["z_v"], out["z_p"], batch["video_mask"], out["z_t"], lmask, kind, temp)
      loss_sum = loss_sum + lam * n_tok * jnp.mean(ls)
      aux["align"] = jnp.mean(ls)
    return loss_sum, {"weight": n_tok, **aux}, new_state

  return loss_fn


_JITTED: dict = {}   # (kind, model, static settings) -> jitted function: every make_task of one model reuses it


def _cached(key, make):
  if key not in _JITTED:
    _JITTED[key] = jax.jit(make())
  return _JITTED[key]


class Recognizer:
  """Jitted CSR decoding: `recognize(variables, batch) -> [B] texts` (greedy or the best beam)."""

  def __init__(self, model: UniCueCSR, cfg, vocab):
    self.model, self.vocab, self.tokens = model, vocab, str(cfg.data.tokens)
    max_new, beam, lp = int(max(cfg.data.label_buckets)) + 1, int(cfg.decode.beam), float(cfg.decode.length_penalty)
    self._run = _cached(("recognize", model, max_new, beam, lp), lambda: functools.partial(
        _decode, model, max_new, beam, lp))

  def recognize(self, variables, batch) -> list[str]:
    ids = jax.device_get(self._run(variables, jnp.asarray(batch["video"]), jnp.asarray(batch["pose_maps"]),
                                   jnp.asarray(batch["video_mask"])))
    return [data_lib.decode_tokens(self.vocab, row, self.tokens) for row in np.asarray(ids)]


def _decode(model: UniCueCSR, max_new: int, beam: int, length_penalty: float, variables, video, pose_maps, mask):
  """-> token ids [B, max_new] (pad after </s>)."""
  _, _, z_mv = model.apply(variables, video, pose_maps, mask, method=UniCueCSR.visual)
  gen = MBartGenerator(MBart(model.config.mbart))
  p = variables["params"]["mbart"]
  logits, cache = gen.prefill(p, encoder_hidden_states=z_mv, attention_mask=mask, max_new_tokens=max_new)
  if beam == 1:
    return search.greedy(gen, p, logits, cache, max_new_tokens=max_new, eos_ids=(data_lib.EOS,), pad_id=data_lib.PAD)
  tokens, _ = search.beam_search(gen, p, logits, cache, num_beams=beam, max_new_tokens=max_new,
                                 eos_ids=(data_lib.EOS,), pad_id=data_lib.PAD, length_penalty=length_penalty)
  return tokens[:, 0]


# ----------------------------------------------------------------------------------------------- stage 2

def normalize_mel(mel, data):
  return (mel - float(data.mel_mean)) / float(data.mel_std)


def denormalize_mel(x, data):
  return x * float(data.mel_std) + float(data.mel_mean)


PREDICTION_TYPES = ("epsilon", "v_prediction")


def prediction(cfg) -> str:
  """objective.prediction_type: "epsilon" (AudioLDM's and the paper's) or "v_prediction" (ours: v = √ᾱ ε - √(1-ᾱ)
  x0, which weights the clean-signal error by 1 + SNR instead of SNR, so high-noise steps, where only the
  condition tells the content, count)."""
  p = cfg.objective.get("prediction_type", "epsilon")
  if p not in PREDICTION_TYPES:
    raise ConfigError(f"objective.prediction_type={p!r}: expected one of {PREDICTION_TYPES}")
  return p


def v2s_loss_fn(model: UniCueV2S, cfg):
  schedule = audioldm_schedule()
  n_steps = schedule.num_train_timesteps
  frozen_proc = model.config.freeze_processor
  prediction_type = prediction(cfg)

  def loss_fn(params, batch, rng, model_state):
    r_z, r_t, r_n = jax.random.split(rng, 3)
    variables = {"params": params, **model_state}
    mean, logvar = model.apply(variables, normalize_mel(batch["mel"], cfg.data), method=UniCueV2S.encode_mel)
    z0 = jax.lax.stop_gradient(akl.sample(r_z, mean, logvar) * params["latent_scale"])
    b = z0.shape[0]
    t = jax.random.randint(r_t, (b,), 0, n_steps, dtype=jnp.int32)
    noise = jax.random.normal(r_n, z0.shape, jnp.float32)
    zt = q_sample(schedule, z0, noise, t)
    kw = dict(train=True)
    if frozen_proc:
      pred, new_state = model.apply(variables, zt, t, batch["video"], batch["pose_maps"], batch["video_mask"],
                                    syllables=batch.get("syllables"), **kw), model_state
    else:
      pred, new_state = model.apply(variables, zt, t, batch["video"], batch["pose_maps"], batch["video_mask"],
                                    syllables=batch.get("syllables"), mutable=list(model_state), **kw)
    target = training_target(schedule, z0, noise, t, prediction_type)           # ε, or v with vpred
    per_ex = jnp.mean(jnp.square(pred - target), axis=(1, 2, 3))
    return jnp.sum(per_ex), {"weight": jnp.asarray(b, jnp.float32), "latent_std": jnp.std(z0)}, new_state

  return loss_fn


class Generator:
  """Jitted CSV2S generation: `generate(variables, batch, seed) -> mel [B, M, 64]` (AudioLDM's raw log-mel)."""

  def __init__(self, model: UniCueV2S, cfg):
    self.model, self.cfg = model, cfg
    s = cfg.sampling
    m = data_lib.mel_frames(cfg.data)
    f = 2 ** (len(model.config.vae.block_out_channels) - 1)
    self.latent = (m // f, 64 // f, model.config.vae.latent_channels)
    static = (int(s.steps), float(s.eta), self.latent, float(cfg.data.mel_mean), float(cfg.data.mel_std),
              prediction(cfg))
    self._run = _cached(("generate", model) + static, lambda: functools.partial(_generate, model, *static))

  def generate(self, variables, batch, seed: int = 0) -> np.ndarray:
    syl = batch.get("syllables")
    return np.asarray(jax.device_get(self._run(variables, jnp.asarray(batch["video"]),
                                               jnp.asarray(batch["pose_maps"]), jnp.asarray(batch["video_mask"]),
                                               jax.random.key(seed), None if syl is None else jnp.asarray(syl))))


def _generate(model: UniCueV2S, steps: int, eta: float, latent: tuple, mel_mean: float, mel_std: float,
              prediction_type: str, variables, video, pose_maps, mask, rng, syllables=None):
  """DDIM from N(0, I) latents [B, *latent] -> raw log-mel [B, M, 64]. syllables: the oracle's input."""
  schedule = audioldm_schedule()
  plan = ddim_plan(schedule, steps, "leading", steps_offset=1)
  ctx, labels = model.apply(variables, video, pose_maps, mask, syllables=syllables, method=UniCueV2S.condition)
  r0, r1 = jax.random.split(rng)
  x = jax.random.normal(r0, (video.shape[0],) + tuple(latent), jnp.float32)

  def fn(x, t):
    return model.apply(variables, x, t, ctx, labels, mask, method=UniCueV2S.denoise)

  z = ddim_sample(fn, x, schedule, plan, eta=eta, rng=r1 if eta > 0 else None, prediction_type=prediction_type)
  return model.apply(variables, z, method=UniCueV2S.decode_latents) * mel_std + mel_mean


def _resample_rows(x: np.ndarray, n: int) -> np.ndarray:
  """[T, F] -> [n, F] linear interpolation over normalised time (segment-centred)."""
  pos = (np.arange(n) + 0.5) * x.shape[0] / n - 0.5
  lo = np.clip(np.floor(pos).astype(int), 0, x.shape[0] - 1)
  hi = np.minimum(lo + 1, x.shape[0] - 1)
  w = np.clip(pos - lo, 0.0, 1.0)[:, None]
  return x[lo] * (1 - w) + x[hi] * w


def make_post_init(model: UniCueV2S, cfg):
  """Fresh starts: latent_scale (scale_by_std over objective.scale_clips training clips, unless
  model.latent_scale > 0) and the adapter's queries from the latent space (adapter.query_init "latent_mean")."""
  c = model.config

  def post_init(params):
    n = int(cfg.objective.scale_clips)
    src = data_lib.source(cfg.data, "train", video=False, audio=True)
    m = data_lib.mel_frames(cfg.data)
    mels = np.stack([data_lib.clip_mel(src[i]["audio"], m) for i in range(min(n, len(src)))])
    x = normalize_mel(jnp.asarray(mels), cfg.data)
    vae = akl.AutoencoderKL(c.vae)
    mean, _ = jax.jit(lambda p, x: vae.apply({"params": p}, x[..., None], method="encode"))(params["vae"], x)
    mean = np.asarray(jax.device_get(mean))
    scale = float(c.latent_scale) if c.latent_scale > 0 else float(1.0 / max(mean.std(), 1e-6))
    out = dict(params)
    out["latent_scale"] = jax.device_put(np.asarray(scale, np.float32), params["latent_scale"].sharding)
    log.info("latent_scale %.5f (%s over %d training clips)", scale,
             "given" if c.latent_scale > 0 else "1 / std of the VAE latents", len(mels))
    if c.adapter.enabled and c.adapter.query_init == "latent_mean":
      lat = mean * scale                                                   # [K, h, w, C]
      per_frame = lat.mean(0).reshape(lat.shape[1], -1)                   # [h, w * C]
      if per_frame.shape[1] != c.adapter.dim:
        raise ConfigError(f"adapter.query_init='latent_mean' needs model.adapter.dim = (mel bins / VAE stride) x "
                          f"latent_channels = {per_frame.shape[1]}, got {c.adapter.dim}")
      q = _resample_rows(per_frame, c.adapter.queries).astype(np.float32)
      old = params["adapter"]["queries"]
      out["adapter"] = {**params["adapter"], "queries": jax.device_put(q, old.sharding)}
    return out

  return post_init


# ----------------------------------------------------------------------------------------------- vae

def vae_loss_fn(model, cfg):
  beta = float(cfg.objective.kl_weight)

  def loss_fn(params, batch, rng):
    x = normalize_mel(batch["mel"], cfg.data)[..., None]
    mean, logvar = model.apply({"params": params}, x, method="encode")
    z = akl.sample(rng, mean, logvar)
    rec = model.apply({"params": params}, z, method="decode")
    l1 = jnp.sum(jnp.abs(rec - x))
    kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    n = jnp.asarray(x.size, jnp.float32)
    return l1 + beta * kl, {"weight": n, "l1": l1 / n, "kl_per_latent": kl / mean.size,
                            "latent_std": jnp.std(mean)}

  return loss_fn


# ----------------------------------------------------------------------------------------------- the task

def make_task(cfg, model=None) -> train_lib.Task:
  check_config(cfg)
  stage = cfg.model.stage
  parts = PARTS[stage] + (("syllables",) if stage == "v2s" and cfg.model.get("oracle_units", 0) else ())
  vocab = data_lib.vocab(cfg.data) if stage == "csr" else None
  mc = model_config(cfg, vocab)
  model = model or model_from_config(mc)
  per_host = local_batch_size(cfg.trainer.batch_size)

  def make_iter():
    return data_lib.train_iterator(cfg.data, vocab, parts=parts, batch_size=per_host, seed=cfg.trainer.seed)

  if stage == "csr":
    def init_params(rng, batch):
      dec_in, labels, lmask = teacher_forcing(jnp.asarray(batch["tokens"]), jnp.asarray(batch["tokens_mask"]))
      return model.init(rng, jnp.asarray(batch["video"]), jnp.asarray(batch["pose_maps"]),
                        jnp.asarray(batch["video_mask"]), dec_in, lmask, labels, lmask)

    no_text = mc.align_weight == 0

    def trainable(path):
      if path == "mbart/final_logits_bias":
        return False
      return not (no_text and path.startswith("mbart/encoder_"))

    task = train_lib.Task(init_params=init_params, loss_fn=csr_loss_fn(model, cfg), make_train_iter=make_iter,
                          mutable=("batch_stats",), trainable=trainable,
                          check_config=functools.partial(check_config, cfg))
    task.recognizer = Recognizer(model, cfg, vocab)
  elif stage == "v2s":
    def init_params(rng, batch):
      syl = batch.get("syllables")
      out = model.init(rng, jnp.asarray(batch["video"]), jnp.asarray(batch["pose_maps"]),
                       jnp.asarray(batch["video_mask"]), normalize_mel(jnp.asarray(batch["mel"]), cfg.data),
                       None if syl is None else jnp.asarray(syl), method=UniCueV2S.init_all)
      return {"batch_stats": {}, **out}          # the oracle has no processor, so no BatchNorm statistics

    frozen = ("vae/", "latent_scale") + (("processor/",) if mc.freeze_processor else ())

    def trainable(path):
      return not path.startswith(frozen)

    task = train_lib.Task(init_params=init_params, loss_fn=v2s_loss_fn(model, cfg), make_train_iter=make_iter,
                          mutable=("batch_stats",), trainable=trainable, post_init=make_post_init(model, cfg),
                          check_config=functools.partial(check_config, cfg))
    task.generator = Generator(model, cfg)
  else:
    def init_params(rng, batch):
      return model.init(rng, normalize_mel(jnp.asarray(batch["mel"]), cfg.data)[..., None])["params"]

    task = train_lib.Task(init_params=init_params, loss_fn=vae_loss_fn(model, cfg), make_train_iter=make_iter,
                          check_config=functools.partial(check_config, cfg))
  task.model, task.vocab, task.model_config, task.parts = model, vocab, mc, parts
  return task
