"""`python -m flashlips_jax.evaluate --workdir DIR [--split test] [--n 32] [--step S] [--seed 0]`

Scores a checkpoint of any stage on the first n clips of a split (SynthCue `test` = held-out speakers) and prints ONE
JSON line, also written to DIR/eval/<step>.json:

  vae       l1 (mean |x - x̂| of the face crop in [-1, 1], posterior mean), psnr (dB, 8-bit)
  editor /  one (target, reference) pair per clip, the lips vector from the target's own mouth crop (reconstruction):
  maskfree    psnr, psnr_mouth, psnr_outside   the raw editor output (no paste-back) vs the target, over the whole
                                               crop / inside / outside the mouth box
            and a cross-lips edit (the lips vector of the next clip's target):
              edit_psnr_outside   the edited frame vs the input frame outside the mouth box (identity / background
                                  preservation while the mouth is changed: the mask-free editor's claim)
              edit_mouth_change   mean |edited - input| inside the box (8-bit units: the edit happened)
            lips_probe_r2  R² of the best linear map from the lips vectors to SynthCue's (opening, width, rounding)
  pose      re-sync: clip i's video (first data.frames frames) driven by clip i+1's speech: the lips vectors sampled
            by the pose Transformer (sampling.steps Euler steps; reference pose = the lips vector of the video's first
            frame), each frame re-rendered by the editor (reference = the first frame; the masked editor's output is
            pasted back inside the mouth box, the mask-free editor's is used whole):
              sync_new       mean per-clip Pearson correlation of the edited mouth opening with the NEW speech's
                             energy (opening: 255 - the mean luminance of the 4 darkest pixels inside the mouth box;
                             energy: log mean mel power of the frame's 4 mel frames)
              sync_orig      the same edited clips against their ORIGINAL speech (should fall)
              sync_real      the real clips against their own speech (the ceiling); sync_input_new: the unedited
                             clips against the new speech (the floor: two unrelated clips already correlate, both
                             start and end in silence with the mouth closed)
              dsync_*        the same four on frame-to-frame changes (np.diff of opening and of energy): the
                             shared silence envelope removed, so unrelated clips sit near 0
              psnr_outside   the edited frames vs the input frames outside the mouth box (the masked editor's
                             output pasted back: exact there by construction); psnr_outside_raw: the editor's whole
                             output before any paste-back (what the mask-free editor is used as)
            --lips oracle drives the editor with clip i+1's own lips vectors (the lips encoder on its mouth crops)
            instead of the pose Transformer's: stage 2 replaced by the truth it is trained on (its upper bound).
            --editor REL swaps another editor release (REL/editor.safetensors, e.g. the masked editor under a pose
            model trained on the mask-free one) under the pose model; its lips encoder must equal the workdir's
            (the maskfree stage freezes it), else the pose vectors would mean something else: an error.
            --syncnet W (a local syncnet_v2.model / .safetensors): + lse_c_* / lse_d_* (shared.metrics.SyncScorer,
            face crops resized to 224) of the edited clips with the new (lse_*_new) and original (lse_*_orig) speech
            and of the real clips (lse_*_real). No weights ship (none can be downloaded here). No FID.
"""
from __future__ import annotations

import numpy as np

from shared import cli


def psnr(a, b, mask=None) -> float:
  """PSNR (dB, 8-bit) of uint8 images, over `mask` [.., H, W, 1] when given."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  err = np.square(a - b)
  if mask is not None:
    m = np.broadcast_to(np.asarray(mask, np.float64), err.shape)
    mse = (err * m).sum() / max(m.sum(), 1.0)
  else:
    mse = err.mean()
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def box_masks(boxes, size: int) -> np.ndarray:
  """[N, 4] (y0, y1, x0, x1) -> [N, size, size, 1] float32."""
  out = np.zeros((len(boxes), size, size, 1), np.float32)
  for i, (y0, y1, x0, x1) in enumerate(np.asarray(boxes)):
    out[i, y0:y1, x0:x1] = 1
  return out


def mouth_opening(frames, box, k: int = 4) -> np.ndarray:
  """frames [T, S, S, 3] uint8, box (y0, y1, x0, x1) -> [T]: 255 - mean luminance of the k darkest pixels in the box
  (SynthCue draws the open mouth as the darkest patch)."""
  y0, y1, x0, x1 = (int(v) for v in box)
  lum = np.asarray(frames, np.float32)[:, y0:y1, x0:x1] @ np.array([0.299, 0.587, 0.114], np.float32)
  return 255.0 - np.sort(lum.reshape(lum.shape[0], -1), axis=1)[:, :k].mean(1)


def speech_energy(audio, frames: int, data) -> np.ndarray:
  """16 kHz audio -> [frames] log mean mel power per video frame."""
  from flashlips_jax import data as data_lib
  f = data_lib.speech_features(np.asarray(audio, np.float32), frames, data)             # normalised log-mel
  mel = f.reshape(frames, data_lib.mel_per_frame(data), -1) * float(data.mel_std) + float(data.mel_mean)
  return np.log(np.exp(mel.astype(np.float64)).mean((1, 2)) + 1e-8)


def corr(a, b) -> float:
  n = min(len(a), len(b))
  a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
  a, b = a - a.mean(), b - b.mean()
  d = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / d) if d > 1e-8 else 0.0


# ----------------------------------------------------------------------------------------------- stages

def vae_metrics(task, variables, cfg, split: str, n: int) -> dict:
  import jax
  import jax.numpy as jnp
  from flashlips_jax import data as data_lib
  from flashlips_jax.model import to_uint8, to_unit
  from flashlips_jax.task import _cached
  model = task.model
  run = _cached(("vae_rt", model), lambda: lambda p, x: model.apply({"params": p}, to_unit(x)))
  l1, ps = [], []
  for batch, k in data_lib.eval_pairs(cfg, split, n, int(cfg.data.eval_batch_size)):
    x = batch["target"][:, 0]
    rec = run(variables["params"], jnp.asarray(x))
    l1.append(np.abs(np.asarray(rec) - np.asarray(to_unit(jnp.asarray(x))))[:k].mean())
    ps.append(psnr(np.asarray(jax.device_get(to_uint8(rec)))[:k], x[:k]))
  return {"l1": float(np.mean(l1)), "psnr": float(np.mean(ps)), "n": n}


def editor_metrics(task, variables, cfg, split: str, n: int) -> dict:
  from flashlips_jax import data as data_lib
  from flashlips_jax.task import lips_probe
  gen, size = task.generator, int(cfg.data.image_size)
  rows = {k: [] for k in ("tgt", "out", "edit", "box", "lips", "gt")}
  for batch, k in data_lib.eval_pairs(cfg, split, n, int(cfg.data.eval_batch_size)):
    x, xr, mouth, box = batch["target"][:, 0], batch["reference"][:, 0], batch["mouth"][:, 0], batch["box"]
    lips = np.asarray(gen.encode_lips(variables, mouth))
    out = np.asarray(gen.render(variables, x, xr, lips, box, paste=False))
    edit = np.asarray(gen.render(variables, x, xr, np.roll(lips, 1, 0), box, paste=False))
    for key, v in (("tgt", x), ("out", out), ("edit", edit), ("box", box), ("lips", lips),
                   ("gt", batch["lip_params"][:, 0])):
      rows[key].append(v[:k])
  r = {k: np.concatenate(v) for k, v in rows.items()}
  m = box_masks(r["box"], size)
  return {"psnr": psnr(r["out"], r["tgt"]), "psnr_mouth": psnr(r["out"], r["tgt"], m),
          "psnr_outside": psnr(r["out"], r["tgt"], 1 - m), "edit_psnr_outside": psnr(r["edit"], r["tgt"], 1 - m),
          "edit_mouth_change": float((np.abs(r["edit"].astype(np.float64) - r["tgt"]) * m).sum()
                                     / max(m.sum() * 3, 1.0)),
          "lips_probe_r2": lips_probe(r["lips"], r["gt"]), "masked": bool(task.model_config.masked), "n": n}


def resync_clips(task, variables, cfg, split: str, n: int, seed: int = 0, lips_source: str = "pose") -> list[dict]:
  """Clip i's video driven by clip i+1's speech -> per clip {frames, edited, raw, box, t, audio_new, audio_orig}
  (edited: what inference shows, raw: the editor's output before paste-back). lips_source: "pose" (sampled from
  the speech) | "oracle" (the lips encoder on clip i+1's own mouth crops)."""
  if lips_source not in ("pose", "oracle"):
    raise ValueError(f"lips source {lips_source!r}: expected 'pose' or 'oracle'")
  from flashlips_jax import data as data_lib
  src = data_lib.source(cfg.data, split)
  samples = [src[i] for i in range(n)]
  f = int(cfg.data.frames)
  stride = data_lib.latent_stride(cfg)
  gen = task.generator
  bs = int(cfg.data.eval_batch_size)
  rows = []
  for start in range(0, n, bs):
    idx = list(range(start, min(start + bs, n)))
    exs = [data_lib.prepare_clip(samples[i], data=cfg.data, stride=stride, video=True,
                                 audio=samples[(i + 1) % n]["audio"]) for i in idx]
    k = len(exs)
    b = data_lib.stack(exs + exs[-1:] * (bs - k))
    if lips_source == "oracle":
      new = data_lib.stack([data_lib.prepare_clip(samples[(i + 1) % n], data=cfg.data, stride=stride)
                            for i in idx + idx[-1:] * (bs - k)])["mouth"]                          # [B, F, m, m, 3]
      lips = np.asarray(gen.encode_lips(variables, new.reshape((-1,) + new.shape[2:]))).reshape(bs, f, -1)
    else:
      ref = np.asarray(gen.encode_lips(variables, b["mouth"][:, 0]))
      lips = np.asarray(gen.lips(variables, b["audio"], ref, b["frame_mask"], seed=seed + start))   # [B, F, 12]
    frames = b["frames"]                                                                          # [B, F, S, S, 3]
    s = frames.shape[2]
    flat = frames.reshape((-1, s, s, 3))
    refs = np.repeat(frames[:, :1], f, 1).reshape((-1, s, s, 3))
    boxes = np.repeat(b["box"], f, 0)
    raw = np.asarray(gen.render(variables, flat, refs, lips.reshape(-1, lips.shape[-1]), boxes, paste=False))
    if task.model_config.masked:                       # == render(paste=True): uint8 input outside, raw inside
      m = box_masks(boxes, s).astype(bool)
      edited = np.where(m, raw, flat)
    else:
      edited = raw
    raw, edited = raw.reshape(frames.shape), edited.reshape(frames.shape)
    for j, i in enumerate(idx):
      t = int(min(b["frame_mask"][j].sum(), len(samples[(i + 1) % n]["video"]), f))
      rows.append({"frames": frames[j, :t], "edited": edited[j, :t], "raw": raw[j, :t], "box": b["box"][j], "t": t,
                   "audio_new": samples[(i + 1) % n]["audio"], "audio_orig": samples[i]["audio"]})
  return rows


def pose_metrics(task, variables, cfg, split: str, n: int, seed: int = 0, lips_source: str = "pose",
                 syncnet: str = "") -> dict:
  rows = resync_clips(task, variables, cfg, split, n, seed, lips_source)
  size = int(cfg.data.image_size)
  out = {k: [] for k in ("sync_new", "sync_orig", "sync_real", "sync_input_new", "psnr_outside", "psnr_outside_raw")}
  if syncnet:
    from shared.metrics.sync import SyncScorer
    scorer = SyncScorer(syncnet)
    spf = 16000 // int(cfg.data.fps)
    for r in rows:
      t = r["t"]
      for key, frames, audio in (("new", r["edited"], r["audio_new"]), ("orig", r["edited"], r["audio_orig"]),
                                 ("real", r["frames"], r["audio_orig"])):
        got = scorer(frames[:t], np.asarray(audio, np.float32)[:t * spf])
        out.setdefault(f"lse_c_{key}", []).append(got["lse_c"])
        out.setdefault(f"lse_d_{key}", []).append(got["lse_d"])
  for r in rows:
    t = r["t"]
    e_new = speech_energy(r["audio_new"], int(cfg.data.frames), cfg.data)[:t]
    e_orig = speech_energy(r["audio_orig"], int(cfg.data.frames), cfg.data)[:t]
    op_edit, op_in = mouth_opening(r["edited"], r["box"]), mouth_opening(r["frames"], r["box"])
    for key, op, e in (("new", op_edit, e_new), ("orig", op_edit, e_orig), ("real", op_in, e_orig),
                       ("input_new", op_in, e_new)):
      out[f"sync_{key}"].append(corr(op, e))
      out.setdefault(f"dsync_{key}", []).append(corr(np.diff(op), np.diff(e)))
    m = 1 - box_masks(r["box"][None], size)
    out["psnr_outside"].append(psnr(r["edited"], r["frames"], m))
    out["psnr_outside_raw"].append(psnr(r["raw"], r["frames"], m))
  res = {k: float(np.mean(v)) for k, v in out.items()}
  res.update(masked=bool(task.model_config.masked), lips=lips_source, n=len(rows))
  return res


# ----------------------------------------------------------------------------------------------- hooks / CLI

def metrics_for(task, variables, cfg, split: str, n: int, *, seed: int = 0, lips_source: str = "pose",
                syncnet: str = "") -> dict:
  stage = cfg.model.stage
  if stage == "vae":
    return vae_metrics(task, variables, cfg, split, n)
  if stage == "pose":
    return pose_metrics(task, variables, cfg, split, n, seed, lips_source, syncnet)
  return editor_metrics(task, variables, cfg, split, n)


def swap_editor(params, cfg, release: str):
  """The pose workdir's params with the editor (lips / reference / unet) of `release` -> (params, masked).
  Raises CheckpointError when the release's lips encoder differs from the workdir's."""
  import json
  import os
  from shared.errors import CheckpointError, ConfigError
  from shared.weights.init import load_into
  from flashlips_jax.task import editor_release_meta
  if cfg.model.stage != "pose":
    raise ConfigError(f"--editor swaps the editor under a pose model; this workdir's stage is {cfg.model.stage!r}",
                      key="editor")
  path = os.path.join(release, "editor.safetensors")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no editor release here (python -m flashlips_jax.export of an editor, maskfree or"
                          " pose workdir writes it)")
  meta = editor_release_meta(path)
  if meta.get("format") != "flashlips_editor" or "masked" not in meta:
    raise CheckpointError(f"{path}: metadata format {meta.get('format')!r}, expected 'flashlips_editor' with 'masked'")
  new, report = load_into(params, path, prefix="", family="params", allow_missing=True)   # unexpected / mis-shaped raise
  editor_missing = [k for k in report.missing if k.key.removeprefix("params/").split("/")[0] in ("lips", "reference", "unet")]
  if editor_missing:
    raise CheckpointError(f"{path}: {len(editor_missing)} editor tensors missing, e.g. {editor_missing[0]}")
  flat_old = traverse_flat(params["lips"])
  flat_new = traverse_flat(new["lips"])
  worst = max(float(np.max(np.abs(np.asarray(flat_old[k]) - np.asarray(flat_new[k])))) for k in flat_old)
  if worst > 0:
    raise CheckpointError(f"{path}: its lips encoder differs from the pose model's (max |diff| {worst:.3g}): the pose"
                          " vectors would drive it in another space; swap only editors that share the lips encoder"
                          " (an editor and the maskfree fine-tune of it)")
  return new, bool(json.loads(meta["masked"]))


def traverse_flat(tree) -> dict:
  from flax import traverse_util
  return traverse_util.flatten_dict(tree, sep="/")


def evaluate(workdir: str, *, split: str = "test", n: int = 32, step: int | None = None, seed: int = 0,
             editor: str = "", lips_source: str = "pose", syncnet: str = ""):
  """-> (step, metrics). editor: another editor release to render with (pose workdirs); lips_source: pose | oracle;
  syncnet: a local SyncNet weight file (pose workdirs: + LSE-C / LSE-D)."""
  from shared.checkpoint import restore
  from flashlips_jax.task import make_task
  r = restore(workdir, step)
  cfg = r.config
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False     # weights come from the checkpoint
  params = r.params
  if lips_source != "pose" and cfg.model.stage != "pose":
    from shared.errors import ConfigError
    raise ConfigError(f"--lips {lips_source} is for pose workdirs (stage here: {cfg.model.stage!r})", key="lips")
  if syncnet and cfg.model.stage != "pose":
    from shared.errors import ConfigError
    raise ConfigError(f"--syncnet scores re-synced clips of pose workdirs (stage here: {cfg.model.stage!r})",
                      key="syncnet")
  if syncnet:
    from shared.metrics.sync import load_syncnet
    load_syncnet(syncnet)                                  # a bad file fails before any clip is rendered
  if editor:
    params, masked = swap_editor(params, cfg, editor)
    cfg.model.masked = masked
  task = make_task(cfg)
  metrics = metrics_for(task, {"params": params, **r.model_state}, cfg, split, n, seed=seed, lips_source=lips_source,
                        syncnet=syncnet)
  if editor:
    metrics["editor"] = editor
  return r.step, metrics


def main():
  f = cli.FLAGS
  step, metrics = evaluate(f.workdir, split=f.split, n=f.n, step=f.step, seed=f.seed, editor=f.editor or "",
                           lips_source=f.lips, syncnet=f.syncnet or "")
  name = "_".join(x for x in (f.name, "oracle" if f.lips == "oracle" else "", f"seed{f.seed}" if f.seed else "") if x)
  cli.write_eval(f.workdir, step, metrics, name=name, split=f.split, n_requested=f.n)


if __name__ == "__main__":
  from absl import flags
  cli.define_eval_flags(default_n=32)
  flags.DEFINE_string("editor", None, "Pose workdirs: render with this editor release's editor instead (REL from "
                      "python -m flashlips_jax.export of the editor / maskfree workdir).")
  flags.DEFINE_enum("lips", "pose", ["pose", "oracle"], "Pose workdirs: lips vectors from the pose model (pose) or "
                    "the new clip's own mouth crops (oracle).")
  flags.DEFINE_string("syncnet", None, "Pose workdirs: SyncNet weights (syncnet_v2.model or .safetensors, local) for "
                      "LSE-C / LSE-D of the edited clips (new / original speech) and the real clips.")
  flags.DEFINE_string("name", "", "Suffix of the eval file: DIR/eval/<step>_<name>.json (default <step>.json).")
  cli.run(main)
