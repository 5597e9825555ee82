"""FlashLips' miniature table on SynthCue held-out speakers: the whole tiny chain, then every row scored the same way.

  PYTHONPATH=. python benchmarks/flashlips_table.py --out W            # resumable: finished stages are kept
  PYTHONPATH=. python benchmarks/flashlips_table.py --out W --report   # the tables from W/table.jsonl only
  ... --figure docs/flashlips_resync.png                                 # + the README's re-sync picture

Chain (configs/flashlips/tiny.py; `--steps vae=1500,editor=3000,maskfree=1000,pose=2000` are its defaults):
  W/vae -> W/vae_rel -> W/editor (masked, stage 1) -> W/editor_rel -> W/maskfree (mask-free fine-tune) ->
  W/maskfree_rel -> W/pose (stage 2, trained on the mask-free release's frozen lips encoder) -> W/pose_rel
Rows (flashlips_jax.evaluate, --n clips of the test split, i.e. the 4 held-out speakers):
  editors     the masked editor and the mask-free one: reconstruction PSNR (whole crop / mouth box / outside it), a
              cross-lips edit (PSNR outside the box vs the input; mean change inside it), lips_probe_r2
  re-sync     clip i's video driven by clip i+1's speech through the pose model, rendered by the masked editor (its
              output pasted back inside the mouth box, as inference does) and by the mask-free one (used whole), for
              each --seeds sampling seed; the same two editors driven by the new clip's own lips vectors (oracle:
              stage 2 replaced by its training target); the real clips (ceiling) and the unedited input vs the new
              speech (floor).
Each evaluation is one JSON line appended to W/table.jsonl (a row already there is not recomputed; a re-sync row
recorded before the Δ-sync measure existed is scored again, the later line wins).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = (("vae", "vae", None), ("editor", "editor", "vae"), ("maskfree", "maskfree", "editor"),
          ("pose", "pose", "maskfree"))
DEFAULT_STEPS = {"vae": 1500, "editor": 3000, "maskfree": 1000, "pose": 2000}


def _run(args: list[str]):
  print(f"[{time.strftime('%H:%M:%S')}] {' '.join(args)}", flush=True)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  subprocess.run([sys.executable] + args, check=True, cwd=ROOT, env=env)


def chain(out: str, steps: dict):
  """Trains and exports each stage unless its release is there."""
  for name, stage, parent in STAGES:
    wd, rel = os.path.join(out, name), os.path.join(out, f"{name}_rel")
    if os.path.isfile(os.path.join(rel, "release.json")):
      continue
    arg = stage
    if parent:
      key = "vae" if stage == "editor" else "editor"
      arg += f",{key}={os.path.join(out, parent + '_rel')}"
    _run(["-m", "flashlips_jax.train", "--config", f"configs/flashlips/tiny.py:{arg}", "--workdir", wd,
          f"--config.trainer.total_steps={steps[name]}"])
    _run(["-m", "flashlips_jax.export", "--workdir", wd, "--out", rel])


def rows_to_run(out: str, seeds: list[int]) -> list[tuple[str, str, dict]]:
  """(row name, workdir, evaluate kwargs)."""
  ed, mf = os.path.join(out, "editor_rel"), os.path.join(out, "maskfree_rel")
  rows = [("editor: masked", os.path.join(out, "editor"), {}),
          ("editor: mask-free", os.path.join(out, "maskfree"), {})]
  pose = os.path.join(out, "pose")
  for s in seeds:
    rows += [(f"re-sync: masked editor + pose, seed {s}", pose, dict(editor=ed, seed=s)),
             (f"re-sync: mask-free editor + pose, seed {s}", pose, dict(editor=mf, seed=s))]
  rows += [("re-sync: masked editor + oracle lips", pose, dict(editor=ed, lips_source="oracle")),
           ("re-sync: mask-free editor + oracle lips", pose, dict(editor=mf, lips_source="oracle"))]
  return rows


def evaluate_rows(out: str, n: int, seeds: list[int]) -> list[dict]:
  from flashlips_jax.evaluate import evaluate
  path = os.path.join(out, "table.jsonl")
  done = {json.loads(l)["row"]: json.loads(l) for l in open(path)} if os.path.isfile(path) else {}
  for row, wd, kw in rows_to_run(out, seeds):
    if row in done and done[row].get("n") == n and (not row.startswith("re-sync") or "dsync_new" in done[row]):
      continue
    t0 = time.time()
    step, m = evaluate(wd, n=n, **kw)
    rec = {"row": row, "workdir": wd, "step": step, "seconds": round(time.time() - t0, 1), **m}
    print(json.dumps(rec), flush=True)
    with open(path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    done[row] = rec
  return list(done.values())


def report(records: list[dict]) -> str:
  by = {r["row"]: r for r in records}
  lines = ["| editor (step) | PSNR | PSNR mouth | PSNR outside | edit: PSNR outside | edit: mouth change |"
           " lips probe R² |", "|---|---|---|---|---|---|---|"]
  for name in ("editor: masked", "editor: mask-free"):
    if name in by:
      r = by[name]
      lines.append(f"| {name.split(': ')[1]} ({r['step']}) | {r['psnr']:.2f} | {r['psnr_mouth']:.2f} | "
                   f"{r['psnr_outside']:.2f} | {r['edit_psnr_outside']:.2f} | {r['edit_mouth_change']:.1f} | "
                   f"{r['lips_probe_r2']:.3f} |")
  lines += ["", "| re-sync row | sync: new speech | sync: original speech | Δ-sync: new | Δ-sync: original |"
            " PSNR outside the mouth (as shown / editor output) |", "|---|---|---|---|---|---|"]
  pose = [r for r in records if r["row"].startswith("re-sync")]
  d = lambda r, k: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
  if pose:
    r0 = pose[0]
    lines.append(f"| real clips, own speech (ceiling) | {r0['sync_real']:.3f} | | {d(r0, 'dsync_real')} | | |")
    lines.append(f"| unedited input (floor) | {r0['sync_input_new']:.3f} | {r0['sync_real']:.3f} | "
                 f"{d(r0, 'dsync_input_new')} | {d(r0, 'dsync_real')} | |")
  for r in pose:
    lines.append(f"| {r['row'].split(': ', 1)[1]} | {r['sync_new']:.3f} | {r['sync_orig']:.3f} | "
                 f"{d(r, 'dsync_new')} | {d(r, 'dsync_orig')} | {r['psnr_outside']:.2f} / {r['psnr_outside_raw']:.2f} |")
  return "\n".join(lines)


def figure(out: str, path: str, clip: int = 1, n: int = 8):
  """The README picture: held-out clip `clip` re-synced to clip+1's speech, every 3rd of the first 36 frames; rows:
  input, masked editor + pose (pasted), mask-free editor + pose, the clip whose speech drives the edit."""
  import numpy as np
  from PIL import Image
  from shared.checkpoint import restore
  from flashlips_jax import data as data_lib
  from flashlips_jax import evaluate as ev
  from flashlips_jax.task import make_task
  r = restore(os.path.join(out, "pose"))
  cfg = r.config
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False
  rows = {}
  for name in ("editor", "maskfree"):
    params, cfg.model.masked = ev.swap_editor(r.params, cfg, os.path.join(out, f"{name}_rel"))
    rows[name] = ev.resync_clips(make_task(cfg), {"params": params, **r.model_state}, cfg, "test", n)[clip]
  new = data_lib.prepare_clip(data_lib.source(cfg.data, "test")[clip + 1], data=cfg.data,
                              stride=data_lib.latent_stride(cfg), video=True)
  t = rows["editor"]["t"]
  strip = lambda x: np.concatenate(list(x[:min(t, 36):3]), 1)  # noqa: E731
  img = np.concatenate([strip(rows["editor"]["frames"]), strip(rows["editor"]["edited"]),
                        strip(rows["maskfree"]["edited"]), strip(new["frames"][:t])], 0)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(path)
  return path


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", required=True)
  ap.add_argument("--steps", default="", help="stage=steps,... (defaults: the tiny config's)")
  ap.add_argument("--n", type=int, default=32, help="held-out clips per row")
  ap.add_argument("--seeds", default="0,1", help="pose sampling seeds")
  ap.add_argument("--report", action="store_true", help="print the tables from OUT/table.jsonl only")
  ap.add_argument("--figure", default="", help="also write the re-sync picture here (e.g. docs/flashlips_resync.png)")
  a = ap.parse_args()
  path = os.path.join(a.out, "table.jsonl")
  if a.report:
    print(report([json.loads(l) for l in open(path)]))
    return
  steps = dict(DEFAULT_STEPS)
  for item in filter(None, a.steps.split(",")):
    k, v = item.split("=")
    if k not in steps:
      raise SystemExit(f"--steps: unknown stage {k!r} (stages {list(steps)})")
    steps[k] = int(v)
  os.makedirs(a.out, exist_ok=True)
  chain(a.out, steps)
  print(report(evaluate_rows(a.out, a.n, [int(s) for s in a.seeds.split(",")])))
  if a.figure:
    print(figure(a.out, a.figure))


if __name__ == "__main__":
  main()
