"""`python -m vsr_pin_jax.infer --workdir DIR [--step S] [--refiner RW] clip.mp4 [clip2.mp4 ...]`

Lip-reads mouth-ROI clips (grey or colour mp4 of the mouth region at 25 fps, as CNVSRC / auto_avsr prepare them;
frames at least data.crop pixels on each side, centre-cropped like evaluation) and prints, per clip, one JSON
line: {"path", "text" (best hypothesis), "pinyin", "nbest": [[text, score], ...], "ctc", and with --refiner
"refined"}.
"""
from __future__ import annotations

import json

from absl import flags

from shared import cli


def infer(workdir: str, paths: list[str], *, step: int | None = None, refiner: str | None = None) -> list[dict]:
  from shared.checkpoint import restore
  from shared.data.media import read_mp4
  from shared.errors import DataError
  from vsr_pin_jax import data as data_lib
  from vsr_pin_jax.task import make_task
  if not paths:
    raise DataError("no clip given: python -m vsr_pin_jax.infer --workdir DIR clip.mp4 ...")
  r = restore(workdir, step)
  cfg = r.config
  task = make_task(cfg)
  examples = []
  for path in paths:
    m = read_mp4(path, gray=True, with_audio=False)
    ex = data_lib.prepare({"lip": m.frames, "text": "?", "pinyin": "", "path": path}, None, data=cfg.data,
                          vocab=task.vocab)
    if ex is None:
      raise DataError(f"clip has {m.frames.shape[0]} frames, more than the largest frame bucket "
                      f"{max(cfg.data.frame_buckets)} (data.frame_buckets)", path=path)
    examples.append(ex)
  out = []
  collate = data_lib.batch_fn(cfg.data)
  for start in range(0, len(examples), 16):
    hyp = task.recognizer.recognize(r.variables, collate(examples[start:start + 16]))
    for i in range(len(hyp.nbest)):
      out.append({"path": paths[start + i], "text": hyp.nbest[i][0], "pinyin": hyp.pinyin[i],
                  "nbest": [[h, float(s)] for h, s in zip(hyp.nbest[i], hyp.scores[i])], "ctc": hyp.ctc[i]})
  if refiner:
    from vsr_pin_jax import refiner as refiner_lib
    for row, text in zip(out, refiner_lib.refine_workdir(refiner, out)):
      row["refined"] = text
  return out


def define_flags():
  flags.DEFINE_string("workdir", None, "Stage-I training workdir.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_string("refiner", None, "A refiner workdir: also print the refined sentence.")


def main():
  f = cli.FLAGS
  for row in infer(f.workdir, cli.ARGV[1:], step=f.step,
                   refiner=f.refiner):
    print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
