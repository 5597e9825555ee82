"""`python -m vsr_pin_jax.evaluate --workdir DIR [--split test] [--n 128] [--step S] [--refiner R]`

Scores a stage-I checkpoint on n clips of a split (SynthCue `test` = held-out speakers) and prints ONE JSON
line, also written to DIR/eval/<step>.json:
  cer            character error rate of the best beam hypothesis ((S + D + I) / N, corpus-summed, spaces
                 stripped: SPECS § Metrics)
  cer_ctc        CER of CTC greedy decoding (encoder + CTC head alone)
  oracle_cer     N-best oracle CER (per utterance the hypothesis closest to the truth)
  pinyin_er      pinyin (syllable) error rate of the pinyin decoder's greedy output (dual-decoder model)
  cer_refined    with --refiner R (a refiner workdir, vsr_pin_jax/refiner.py): CER after LLM refinement of
                 (pinyin, N-best), next to cer for the same clips
"""
from __future__ import annotations

import os

from absl import flags

from shared import cli
from shared.metrics.text import chinese_cer, wer


def transcribe(task, variables, cfg, split: str, n: int) -> list[dict]:
  """Decodes the first n usable clips of `split` -> one record per clip: truth, truth_pinyin, nbest, scores,
  pinyin, ctc."""
  from vsr_pin_jax import data as data_lib
  bs = int(cfg.data.get("eval_batch_size", 32))
  rows = []
  for batch, truths in data_lib.eval_batches(cfg.data, task.vocab, split, n, bs):
    hyp = task.recognizer.recognize(variables, batch)
    for i, (text, pinyin) in enumerate(truths):
      rows.append({"truth": text, "truth_pinyin": pinyin, "nbest": hyp.nbest[i],
                   "nbest_scores": [float(s) for s in hyp.scores[i]], "pinyin": hyp.pinyin[i], "ctc": hyp.ctc[i]})
  return rows


def metrics_of(rows: list[dict], pinyin: bool) -> dict:
  refs = [r["truth"] for r in rows]
  out = {"cer": chinese_cer(refs, [r["nbest"][0] for r in rows]),
         "cer_ctc": chinese_cer(refs, [r["ctc"] for r in rows]),
         "oracle_cer": chinese_cer(refs, [min(r["nbest"], key=lambda h, t=r["truth"]: chinese_cer([t], [h]))
                                          for r in rows]),
         "n": len(rows)}
  if pinyin:
    out["pinyin_er"] = wer([r["truth_pinyin"] for r in rows], [r["pinyin"] or "-" for r in rows])
  return out


def write_transcripts(rows: list[dict], path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(f"truth:  {r['truth']}   ({r['truth_pinyin']})\n")
      for k, (h, s) in enumerate(zip(r["nbest"], r["nbest_scores"])):
        f.write(f"  {k + 1}. {h}   {s:.3f}\n")
      f.write(f"pinyin: {r['pinyin']}\nctc:    {r['ctc']}\n\n")


def make_hooks(cfg, task):
  """(eval_fn, sample_fn) for the trainer: held-out metrics, transcripts of 16 clips."""
  split, n = cfg.data.eval_split, int(cfg.data.eval_samples)

  def eval_fn(variables, step):
    del step
    return metrics_of(transcribe(task, variables, cfg, split, n), task.model.config.pinyin)

  def sample_fn(variables, step, out_dir):
    del step
    write_transcripts(transcribe(task, variables, cfg, split, 16), os.path.join(out_dir, "transcripts.txt"))

  return eval_fn, sample_fn


def evaluate(workdir: str, *, split: str = "test", n: int = 128, step: int | None = None,
             refiner: str | None = None) -> tuple[int, dict]:
  """-> (step, metrics). CheckpointError naming the directory / step when there is none."""
  from shared.checkpoint import restore
  r = restore(workdir, step)
  from vsr_pin_jax.task import make_task   # (after restore: a bad --workdir fails in a second)
  task = make_task(r.config)
  rows = transcribe(task, r.variables, r.config, split, n)
  out = metrics_of(rows, task.model.config.pinyin)
  if refiner:
    from vsr_pin_jax import refiner as refiner_lib
    refined = refiner_lib.refine_workdir(refiner, rows)
    out["cer_refined"] = chinese_cer([x["truth"] for x in rows], refined)
  write_transcripts(rows, os.path.join(workdir, "eval", f"{r.step}_{split}_transcripts.txt"))
  return r.step, out


def main():
  f = cli.FLAGS
  step, metrics = evaluate(f.workdir, split=f.split, n=f.n, step=f.step, refiner=f.refiner)
  cli.write_eval(f.workdir, step, metrics, split=f.split, n=f.n, refiner=f.refiner or "")


if __name__ == "__main__":
  cli.define_eval_flags(default_n=128)
  flags.DEFINE_string("refiner", None, "A refiner workdir (python -m vsr_pin_jax.train_refiner): also report "
                      "the CER after LLM refinement.")
  cli.run(main)
