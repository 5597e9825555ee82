"""FlashLips tasks for the shared trainer, one per stage (config `model.stage`):

  vae       the tiny image VAE on SynthCue face crops (no pretrained SD VAE here): L1 reconstruction of the crop in
            [-1, 1] from a posterior sample + objective.kl_weight x KL, both summed over elements, weight = elements.
  editor    stage 1, the one-step editor on the frozen VAE: per (target, reference) pair,
              latent_l1 |ẑ - z|₁ + latent_l2 |ẑ - z|² (means over latent elements; z = the target's latent)
              + pixel_l1 |D(ẑ) - x|₁ (mean over pixels, through the frozen decoder)
              + lips_gt_weight |l[8:11] - lip_params|² (optional: the mouth code's first 3 dims onto SynthCue's truth)
            summed over pairs, weight = pairs. Trainable: lips encoder, reference backbone, UNet; frozen: vae.
  maskfree  the mask-free fine-tune: a frozen copy of the masked editor (teacher_*) makes mouth-altered pseudo ground
            truth x' (model.FlashLips.pseudo_targets, with the lips vector of the next pair in the batch); the student
            (reference, unet; no mask) learns x -> x' (lips l') and x' -> x (lips l) with the editor's losses, summed
            over both, weight = 2 x pairs. Trainable: reference, unet; frozen: vae, lips, teacher_*.
  pose      stage 2, audio -> lips pose: x0 = the frozen lips encoder's vectors of the clip's frames [B, F, 12]; the
            reference pose = x0 at a random valid frame; conditional flow matching (shared.diffusion:
            flow_matching_inputs, objective.sigma_sampling / flow_shift) on the velocity ε - x0, squared error averaged
            over the 12 dims, summed over valid frames, weight = valid frames. Trainable: pose/ only.

Generation (`Generator`): lips vectors by `sampling.steps` Euler steps (shared.diffusion.euler_sample) from N(0, I),
then each frame re-rendered by the one-step editor (reference = the clip's first frame) and decoded.
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from shared import train as train_lib
from shared.diffusion import euler_plan, euler_sample, flow_matching_inputs
from shared.errors import ConfigError
from shared.mesh import local_batch_size
from shared.models import autoencoder_kl as akl
from flashlips_jax import data as data_lib
from flashlips_jax.model import LIPS_DIM, FlashLips, box_mask, model_config, model_from_config, to_unit

log = logging.getLogger(__name__)


def check_config(cfg):
  stage = cfg.model.stage
  d, o = cfg.data, cfg.objective
  s = data_lib.latent_stride(cfg)
  if int(d.image_size) % s:
    raise ConfigError(f"data.image_size={d.image_size} must be a multiple of the VAE's stride {s}")
  if int(d.pairs_per_clip) < 1:
    raise ConfigError(f"data.pairs_per_clip={d.pairs_per_clip}: expected >= 1")
  if int(d.mouth_size) < 2 ** len(cfg.model.lips.widths):
    raise ConfigError(f"data.mouth_size={d.mouth_size} is smaller than the lips encoder's stride "
                      f"{2 ** len(cfg.model.lips.widths)}")
  for k in ("latent_l1", "latent_l2", "pixel_l1", "lips_gt_weight", "kl_weight"):
    if o[k] < 0:
      raise ConfigError(f"objective.{k}={o[k]}: expected >= 0")
  init = cfg.get("init") or {}

  def has(name):
    return bool(init.get(name) and init[name].get("path"))
  if stage in ("editor", "maskfree", "pose") and o.require_vae_init and not has("vae"):
    raise ConfigError(f"stage {stage!r} needs the trained image VAE: set --config.init.vae.path=REL/vae (python -m "
                      "flashlips_jax.export of a 'vae' workdir, or SDXL's vae/ folder), or "
                      "objective.require_vae_init=False")
  if stage in ("maskfree", "pose") and o.require_editor_init and not has("editor"):
    raise ConfigError(f"stage {stage!r} needs a trained editor: set --config.init.editor.path=REL/editor.safetensors"
                      " (python -m flashlips_jax.export of an 'editor' or 'maskfree' workdir; configs/flashlips/tiny.py"
                      ":STAGE,editor=REL), or objective.require_editor_init=False")
  if stage == "maskfree" and cfg.model.masked:
    raise ConfigError("stage 'maskfree' trains the mask-free editor: model.masked must be False")
  if stage == "pose" and o.require_editor_init and has("editor"):
    released = editor_release_masked(init["editor"]["path"])
    if released is not None and released != bool(cfg.model.masked):
      raise ConfigError(f"model.masked={bool(cfg.model.masked)} but the editor at init.editor.path="
                        f"{init['editor']['path']} is {'masked' if released else 'mask-free'}: set model.masked="
                        f"{released} (configs/flashlips/tiny.py:pose,editor=REL does)")
  if stage == "pose":
    p = cfg.model.pose
    if p.audio_dim != data_lib.audio_dim(d):
      raise ConfigError(f"model.pose.audio_dim={p.audio_dim} must be the speech features' size "
                        f"{data_lib.audio_dim(d)} (mel frames per video frame x 64)")
    if int(d.frames) > p.max_frames:
      raise ConfigError(f"data.frames={d.frames} exceeds model.pose.max_frames={p.max_frames}")
    if cfg.sampling.steps < 1 or cfg.sampling.shift <= 0 or o.flow_shift <= 0:
      raise ConfigError(f"sampling.steps={cfg.sampling.steps}, sampling.shift={cfg.sampling.shift}, "
                        f"objective.flow_shift={o.flow_shift}: expected >= 1 step and shifts > 0")
    if o.sigma_sampling not in ("uniform", "logit_normal"):
      raise ConfigError(f"objective.sigma_sampling={o.sigma_sampling!r}: expected 'uniform' or 'logit_normal'")


def _flat_pairs(batch):
  """[B, P, ...] pair arrays -> [B*P, ...]; the box repeated per pair."""
  t = jnp.asarray(batch["target"])
  b, p = t.shape[:2]
  f = lambda k: jnp.asarray(batch[k]).reshape((b * p,) + tuple(batch[k].shape[2:]))  # noqa: E731
  box = jnp.repeat(jnp.asarray(batch["box"]), p, axis=0)
  return f("target"), f("reference"), f("mouth"), box, f("lip_params")


# ----------------------------------------------------------------------------------------------- losses

def reconstruction(z_hat, z, x_hat, x, o):
  """Per-example editor losses [N] and their parts (latent L1, latent L2, pixel L1)."""
  ax = lambda a: tuple(range(1, a.ndim))  # noqa: E731
  l1 = jnp.mean(jnp.abs(z_hat - z), ax(z))
  l2 = jnp.mean(jnp.square(z_hat - z), ax(z))
  px = jnp.mean(jnp.abs(x_hat - x), ax(x))
  return float(o.latent_l1) * l1 + float(o.latent_l2) * l2 + float(o.pixel_l1) * px, (l1, l2, px)


def lips_gt_loss(lips, gt):
  """|l[8:11] - (opening, width, rounding)|² per example [N]."""
  e = lips.shape[-1] - 4
  return jnp.mean(jnp.square(lips[:, e:e + 3] - gt), -1)


def editor_loss_fn(model: FlashLips, cfg):
  o = cfg.objective
  size = int(cfg.data.image_size)

  def loss_fn(params, batch, rng):
    del rng
    v = {"params": params}
    tgt, ref, mouth, box, gt = _flat_pairs(batch)
    x, xr, m = to_unit(tgt), to_unit(ref), box_mask(box, size)
    z = jax.lax.stop_gradient(model.apply(v, x, method=FlashLips.encode))
    z_hat, x_hat, lips = model.apply(v, x, xr, mouth, m)
    per, (l1, l2, px) = reconstruction(z_hat, z, x_hat, x, o)
    aux = {"latent_l1": jnp.mean(l1), "latent_l2": jnp.mean(l2), "pixel_l1": jnp.mean(px),
           "mouth_l1": jnp.sum(jnp.abs(x_hat - x) * m) / jnp.maximum(jnp.sum(m) * 3, 1.0),
           "lips_std": jnp.mean(jnp.std(lips, 0))}
    if o.lips_gt_weight > 0:
      g = lips_gt_loss(lips, gt)
      per = per + float(o.lips_gt_weight) * g
      aux["lips_gt"] = jnp.mean(g)
    n = jnp.asarray(per.shape[0], jnp.float32)
    return jnp.sum(per), {"weight": n, **aux}

  return loss_fn


def maskfree_pairs(model: FlashLips, variables, x, xr, mouth, m):
  """The mask-free stage's training pairs from a batch of frames: -> (inputs [2N], references [2N], lips [2N],
  targets [2N]): x -> x' with l' (the next pair's lips vector) and x' -> x with l, x' the teacher's pseudo ground
  truth (no gradient)."""
  lips = model.apply(variables, mouth, method=FlashLips.lips_pose)
  other = jnp.roll(lips, 1, axis=0)
  x_alt = model.apply(variables, x, xr, m, other, method=FlashLips.pseudo_targets)
  ins = jnp.concatenate([x, x_alt])
  outs = jnp.concatenate([x_alt, x])
  lv = jnp.concatenate([other, lips])
  return (jax.lax.stop_gradient(ins), jnp.concatenate([xr, xr]), jax.lax.stop_gradient(lv),
          jax.lax.stop_gradient(outs))


def maskfree_loss_fn(model: FlashLips, cfg):
  o = cfg.objective
  size = int(cfg.data.image_size)

  def loss_fn(params, batch, rng):
    del rng
    v = {"params": params}
    tgt, ref, mouth, box, _ = _flat_pairs(batch)
    x, xr, m = to_unit(tgt), to_unit(ref), box_mask(box, size)
    ins, refs, lips, outs = maskfree_pairs(model, v, x, xr, mouth, m)
    z = jax.lax.stop_gradient(model.apply(v, outs, method=FlashLips.encode))
    z_in = model.apply(v, ins, method=FlashLips.encode)
    z_hat = model.apply(v, z_in, model.apply(v, refs, method=FlashLips.encode), lips, method=FlashLips.edit)
    x_hat = model.apply(v, z_hat, method=FlashLips.decode)
    per, (l1, l2, px) = reconstruction(z_hat, z, x_hat, outs, o)
    m2 = jnp.concatenate([m, m])
    outside = jnp.sum(jnp.abs(x_hat - outs) * (1 - m2)) / jnp.maximum(jnp.sum(1 - m2) * 3, 1.0)
    n = jnp.asarray(per.shape[0], jnp.float32)
    return jnp.sum(per), {"weight": n, "latent_l1": jnp.mean(l1), "latent_l2": jnp.mean(l2),
                          "pixel_l1": jnp.mean(px), "outside_l1": outside,
                          "pseudo_change": jnp.mean(jnp.abs(ins[:x.shape[0]] - outs[:x.shape[0]]))}

  return loss_fn


def pose_targets(model: FlashLips, variables, mouth):
  """mouth crops [B, F, m, m, 3] -> the frozen lips encoder's vectors [B, F, 12]."""
  b, f = mouth.shape[:2]
  lips = model.apply(variables, mouth.reshape((b * f,) + mouth.shape[2:]), method=FlashLips.lips_pose)
  return jax.lax.stop_gradient(lips.reshape(b, f, LIPS_DIM))


def reference_pose(rng, x0, mask):
  """x0 [B, F, 12] at one random valid frame per clip -> [B, 12]."""
  n = jnp.maximum(jnp.sum(mask.astype(jnp.int32), 1), 1)
  i = jnp.floor(jax.random.uniform(rng, n.shape) * n).astype(jnp.int32)
  return jnp.take_along_axis(x0, i[:, None, None], axis=1)[:, 0]


def pose_loss_fn(model: FlashLips, cfg):
  o = cfg.objective

  def loss_fn(params, batch, rng):
    r_ref, r_fm = jax.random.split(rng)
    v = {"params": params}
    mask = jnp.asarray(batch["frame_mask"])
    x0 = pose_targets(model, v, jnp.asarray(batch["mouth"]))
    ref = reference_pose(r_ref, x0, mask)
    fm = flow_matching_inputs(r_fm, x0, method=str(o.sigma_sampling), shift=float(o.flow_shift))
    b = x0.shape[0]
    pred = model.apply(v, fm["x_t"], fm["t"], jnp.asarray(batch["audio"]), ref, jnp.zeros((b,), jnp.int32), mask,
                       method=FlashLips.velocity)
    err = jnp.mean(jnp.square(pred - fm["target"]), -1)                  # [B, F]
    w = mask.astype(jnp.float32)
    n = jnp.sum(w)
    return jnp.sum(err * w), {"weight": n, "x0_std": jnp.std(x0)}

  return loss_fn


def vae_loss_fn(model, cfg):
  beta = float(cfg.objective.kl_weight)

  def loss_fn(params, batch, rng):
    t = jnp.asarray(batch["target"])
    x = to_unit(t.reshape((-1,) + t.shape[2:]))
    mean, logvar = model.apply({"params": params}, x, method="encode")
    rec = model.apply({"params": params}, akl.sample(rng, mean, logvar), method="decode")
    l1 = jnp.sum(jnp.abs(rec - x))
    kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    n = jnp.asarray(x.size, jnp.float32)
    return l1 + beta * kl, {"weight": n, "l1": l1 / n, "kl_per_latent": kl / mean.size, "latent_std": jnp.std(mean)}

  return loss_fn


# ----------------------------------------------------------------------------------------------- generation

_JITTED: dict = {}


def _cached(key, make):
  if key not in _JITTED:
    _JITTED[key] = jax.jit(make())
  return _JITTED[key]


def _sample_lips(model: FlashLips, steps: int, shift: float, variables, audio, ref, mask, rng):
  plan = euler_plan(steps, shift)
  b = audio.shape[0]
  style = jnp.zeros((b,), jnp.int32)

  def fn(x, t):
    return model.apply(variables, x, jnp.broadcast_to(t, (b,)), audio, ref, style, mask, method=FlashLips.velocity)

  x = jax.random.normal(rng, (b, audio.shape[1], LIPS_DIM), jnp.float32)
  return euler_sample(fn, x, plan)


def _render(model: FlashLips, size: int, paste: bool, variables, frames, reference, lips, box):
  """frames [N, S, S, 3] uint8, reference [N, S, S, 3] uint8, lips [N, 12], box [N, 4] -> edited frames [N, S, S, 3]
  uint8. paste: the masked editor's output is pasted into the input inside the mouth box (the mask-free editor's
  output is always used whole); paste=False gives the raw decoded output."""
  x, xr = to_unit(frames), to_unit(reference)
  m = box_mask(box, size)
  z_in = model.apply(variables, x, m, method=FlashLips.editor_input)
  z = model.apply(variables, z_in, model.apply(variables, xr, method=FlashLips.encode), lips, method=FlashLips.edit)
  y = jnp.clip(model.apply(variables, z, method=FlashLips.decode), -1.0, 1.0)
  if paste and model.config.masked:
    y = m * y + (1 - m) * x
  return jnp.clip(jnp.round((y + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


class Generator:
  """Jitted generation: `lips(variables, audio, ref, mask, seed)` -> [B, F, 12] (pose stage) and
  `render(variables, frames, reference, lips, box)` -> edited frames (editor of any stage)."""

  def __init__(self, model: FlashLips, cfg):
    self.model, self.cfg = model, cfg
    size = int(cfg.data.image_size)
    self._render = {p: _cached(("render", model, size, p), lambda p=p: functools.partial(_render, model, size, p))
                    for p in (True, False)}
    if model.config.stage == "pose":
      s = cfg.sampling
      self._lips = _cached(("lips", model, int(s.steps), float(s.shift)),
                           lambda: functools.partial(_sample_lips, model, int(s.steps), float(s.shift)))
    self._encode = _cached(("lips_enc", model), lambda: lambda v, m: model.apply(v, m, method=FlashLips.lips_pose))

  def lips(self, variables, audio, ref, mask, seed: int = 0):
    return self._lips(variables, jnp.asarray(audio), jnp.asarray(ref), jnp.asarray(mask), jax.random.key(seed))

  def encode_lips(self, variables, mouth):
    return self._encode(variables, jnp.asarray(mouth))

  def render(self, variables, frames, reference, lips, box, paste: bool = True):
    return self._render[bool(paste)](variables, jnp.asarray(frames), jnp.asarray(reference), jnp.asarray(lips),
                                     jnp.asarray(box))


# ----------------------------------------------------------------------------------------------- the task

FROZEN = {"editor": ("vae/",), "maskfree": ("vae/", "lips/", "teacher_"),
          "pose": ("vae/", "lips/", "reference/", "unet/")}


def editor_release_meta(path: str) -> dict:
  """The metadata of an editor release file (REL/editor.safetensors: "format", "masked", "config"); {} when the
  file is not there (the init entry reports a missing file itself)."""
  import os
  if not os.path.isfile(path):
    return {}
  from safetensors import safe_open
  with safe_open(path, "np") as f:
    return dict(f.metadata() or {})


def editor_release_masked(path: str) -> bool | None:
  """The "masked" flag of an editor release file, None when it has none."""
  import json
  meta = editor_release_meta(path)
  return bool(json.loads(meta["masked"])) if "masked" in meta else None


def make_task(cfg, model=None) -> train_lib.Task:
  check_config(cfg)
  stage = cfg.model.stage
  mc = model_config(cfg)
  model = model or model_from_config(mc)
  per_host = local_batch_size(cfg.trainer.batch_size)
  size = int(cfg.data.image_size)

  def make_iter():
    return data_lib.train_iterator(cfg, batch_size=per_host, seed=cfg.trainer.seed)

  if stage == "vae":
    def init_params(rng, batch):
      t = jnp.asarray(batch["target"])
      return model.init(rng, to_unit(t.reshape((-1,) + t.shape[2:])))["params"]

    task = train_lib.Task(init_params=init_params, loss_fn=vae_loss_fn(model, cfg), make_train_iter=make_iter,
                          check_config=functools.partial(check_config, cfg))
  else:
    def init_params(rng, batch):
      if stage == "pose":
        b, f = batch["mouth"].shape[:2]
        m = jnp.asarray(batch["mouth"])[:, 0]
        x = jnp.zeros((b, size, size, 3), jnp.float32)
        return model.init(rng, x, x, m, jnp.zeros((b, size, size, 1)), jnp.asarray(batch["audio"]),
                          jnp.asarray(batch["frame_mask"]), method=FlashLips.init_all)["params"]
      tgt, ref, mouth, box, _ = _flat_pairs(batch)
      return model.init(rng, to_unit(tgt), to_unit(ref), mouth, box_mask(box, size),
                        method=FlashLips.init_all)["params"]

    frozen = FROZEN[stage]

    def trainable(path):
      return not path.startswith(frozen)

    loss = {"editor": editor_loss_fn, "maskfree": maskfree_loss_fn, "pose": pose_loss_fn}[stage](model, cfg)
    task = train_lib.Task(init_params=init_params, loss_fn=loss, make_train_iter=make_iter, trainable=trainable,
                          check_config=functools.partial(check_config, cfg))
    task.generator = Generator(model, cfg)
  task.model, task.model_config = model, mc
  return task


def lips_probe(lips: np.ndarray, gt: np.ndarray) -> float:
  """R² of the best linear map (least squares, with bias) from lips vectors [N, 12] to ground-truth viseme
  parameters [N, 3], averaged over the 3 parameters: how much of the truth the learned vector carries."""
  a = np.concatenate([np.asarray(lips, np.float64), np.ones((len(lips), 1))], 1)
  y = np.asarray(gt, np.float64)
  w, *_ = np.linalg.lstsq(a, y, rcond=None)
  res = ((a @ w - y) ** 2).sum(0)
  tot = ((y - y.mean(0)) ** 2).sum(0)
  if not (tot > 1e-12).any():                           # no truth to compare with (real videos): not measured
    return float("nan")
  keep = tot > 1e-12
  return float(np.mean(1.0 - res[keep] / tot[keep]))
