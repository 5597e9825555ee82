"""`python -m trimodal_jax.evaluate --workdir DIR --task slt|vsr|asr|avsr|all [--snr DB] [--split test] [--n 64]
[--step S] [--bleurt DIR]`

Decodes the first n usable held-out clips of `split` per task (SynthCue `test` = held-out speakers; data.eval_examples
with that one task, batches of 16 through data.collate) with task.decoder (greedy SLT, beam 5 / T 0.3 speech) and
prints ONE JSON line (shared.cli.write_eval: DIR/eval/<step>.json) that is also written to
DIR/eval/<step>_<task>[_snr<DB>].json (two calls with other tasks / SNRs do not overwrite each other), plus
DIR/eval/<step>_<task>[_snr<DB>]_transcripts.txt (ref / hyp per clip). Keys, per task t:
  t/cer | t/wer     error rate, corpus-summed (S + D + I) / N: over characters (spaces stripped: `cer`) when the
                    references are Chinese (SynthCue), over words (`wer`) otherwise; t/unit says which
  t/bleu4           corpus BLEU-4 (sacrebleu, 0-100) over character tokens (Chinese) or 13a words
  t/rougeL          mean ROUGE-L F (0-1) over character tokens (Chinese) or words
  t/bleurt          mean BLEURT (--bleurt DIR: a local BLEURT-PyTorch checkpoint; shared.metrics.bleurt)
  t/n               clips scored
  slt/shared_char_acc, slt/shared_n   (SynthCue) over reference characters whose gloss shares its manual form
                    with another gloss (world.char_form; they differ only in mouthing: the paper's claim that the
                    lips disambiguate them), the fraction the hypothesis matches under a Levenshtein alignment
  slt/other_char_acc, slt/other_n     the same over the other characters (the contrast)
and the context: task, snr (null = clean), split, n (requested per task).
--snr DB: ASR / AVSR audio mixed with babble (data.babble_pool) at exactly DB dB SNR, the noise drawn from the
clip index (the same for every row and run); SLT / VSR are unaffected.

`make_hooks(cfg, task)` -> (eval_fn, sample_fn) for the trainer (train.py: cli.train_main(make_task, make_hooks)).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
from absl import flags

from shared import cli
from shared.errors import ConfigError
from shared.metrics import text as text_metrics

TASK_CHOICES = ("slt", "vsr", "asr", "avsr", "all")
BATCH = 16
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff]")


# ----------------------------------------------------------------------------- decoding

def eval_config(cfg, task: str):
  """cfg with tasks = {task: 1} (the batch then holds exactly that task's modalities, whatever the stage)."""
  out = cfg.copy_and_resolve_references()
  for t in out.tasks:
    out.tasks[t] = 1.0 if t == task else 0.0
  return out


def transcribe(task_obj, variables, cfg, task: str, split: str, n: int, *, snr: float | None = None,
               batch_size: int = BATCH) -> list[dict]:
  """Decodes the first n usable clips of `split` as examples of `task` -> [{"ref", "hyp"}]."""
  from trimodal_jax import data as data_lib
  ecfg = eval_config(cfg, task)
  tok = task_obj.tokenizer
  examples = data_lib.eval_examples(ecfg, tok, split, int(n), tasks=(task,), snr=snr)
  rows = []
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    batch = data_lib.collate([e for e, _ in chunk], cfg=ecfg, tok=tok)
    hyps = task_obj.decoder.decode(variables, batch, task)
    rows += [{"ref": ref, "hyp": hyp} for (_, ref), hyp in zip(chunk, hyps)]
  return rows


# ----------------------------------------------------------------------------- metrics

def is_chinese(texts) -> bool:
  return any(_CJK.search(t) for t in texts)


def char_alignment(ref: str, hyp: str) -> np.ndarray:
  """Levenshtein alignment of two strings -> hit [len(ref)] bool: reference character i is matched by an equal
  hypothesis character. Of the minimum-edit alignments (unit costs), the one with the most hits (DP on
  cost * K - hits, K = len(ref) + len(hyp) + 1); ties then prefer the diagonal."""
  r, h = list(ref), list(hyp)
  n, m = len(r), len(h)
  k = n + m + 1
  eq = np.array([[a == b for b in h] for a in r], bool).reshape(n, m)
  d = np.zeros((n + 1, m + 1), np.int64)
  d[:, 0] = np.arange(n + 1) * k
  d[0, :] = np.arange(m + 1) * k
  for i in range(1, n + 1):
    for j in range(1, m + 1):
      d[i, j] = min(d[i - 1, j - 1] + (-1 if eq[i - 1, j - 1] else k), d[i - 1, j] + k, d[i, j - 1] + k)
  hit = np.zeros(n, bool)
  i, j = n, m
  while i > 0 and j > 0:
    if d[i, j] == d[i - 1, j - 1] + (-1 if eq[i - 1, j - 1] else k):
      hit[i - 1] = eq[i - 1, j - 1]
      i, j = i - 1, j - 1
    elif d[i, j] == d[i - 1, j] + k:
      i -= 1
    else:
      j -= 1
  return hit


def shared_form_chars(data) -> frozenset:
  """Characters of the SynthCue world (cfg.data) whose gloss shares its manual form with another gloss."""
  from shared.data.synthcue import build_world
  w = build_world(int(data.seed), int(data.lexicon_size), int(data.max_homophones), int(data.n_speakers),
                  float(data.shared_sign_fraction))
  count = np.bincount(w.char_form)
  return frozenset(c for c, f in zip(w.chars, w.char_form) if count[f] > 1)


def shared_accuracy(rows: list[dict], shared: frozenset) -> dict:
  """{shared_char_acc, shared_n, other_char_acc, other_n} over the references' non-space characters."""
  hits = {True: 0, False: 0}
  total = {True: 0, False: 0}
  for row in rows:
    ref, hyp = re.sub(r"\s+", "", row["ref"]), re.sub(r"\s+", "", row["hyp"])
    for ch, ok in zip(ref, char_alignment(ref, hyp)):
      total[ch in shared] += 1
      hits[ch in shared] += int(ok)
  acc = lambda k: hits[k] / total[k] if total[k] else None   # noqa: E731
  return {"shared_char_acc": acc(True), "shared_n": total[True], "other_char_acc": acc(False),
          "other_n": total[False]}


def bleurt_scores(path: str, refs, hyps) -> float:
  """Mean BLEURT of (ref, hyp) pairs with a local BLEURT-PyTorch checkpoint (shared.metrics.bleurt)."""
  from shared.metrics.bleurt import BleurtScorer
  scores = BleurtScorer(path)(list(refs), list(hyps))
  return float(np.mean(scores)) if len(scores) else 0.0


def metrics_of(task: str, rows: list[dict], *, shared: frozenset | None = None, bleurt: str | None = None
               ) -> dict:
  """Per-task scores keyed "<task>/<metric>" (module docstring)."""
  refs, hyps = [r["ref"] for r in rows], [r["hyp"] for r in rows]
  zh = is_chinese(refs)
  out = {}
  if zh:
    out[f"{task}/cer"] = text_metrics.chinese_cer(refs, hyps)
    spaced = lambda xs: [" ".join(c for c in x if not c.isspace()) for x in xs]   # noqa: E731
    out[f"{task}/bleu4"] = text_metrics.bleu(spaced(refs), spaced(hyps), tokenize="none")
  else:
    out[f"{task}/wer"] = text_metrics.wer(refs, hyps)
    out[f"{task}/bleu4"] = text_metrics.bleu(refs, hyps)
  out[f"{task}/rougeL"] = text_metrics.rouge_l(refs, hyps, chinese=zh)
  out[f"{task}/unit"] = "char" if zh else "word"
  if bleurt:
    out[f"{task}/bleurt"] = bleurt_scores(bleurt, refs, hyps)
  out[f"{task}/n"] = len(rows)
  if task == "slt" and shared is not None:
    out.update({f"slt/{k}": v for k, v in shared_accuracy(rows, shared).items()})
  return out


def write_transcripts(rows_by_task: dict, path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for task, rows in rows_by_task.items():
      for r in rows:
        f.write(f"[{task}] ref: {r['ref']}\n[{task}] hyp: {r['hyp']}\n\n")


def _tasks(task: str) -> tuple[str, ...]:
  from trimodal_jax.model import TASKS
  if task == "all":
    return TASKS
  if task not in TASKS:
    raise ConfigError(f"--task {task!r}: expected one of {TASK_CHOICES}")
  return (task,)


def score(task_obj, variables, cfg, tasks, split: str, n: int, *, snr: float | None = None,
          bleurt: str | None = None) -> tuple[dict, dict]:
  """-> (metrics, {task: rows})."""
  shared = shared_form_chars(cfg.data) if cfg.data.source == "synthcue" else None
  metrics, rows = {}, {}
  for t in tasks:
    rows[t] = transcribe(task_obj, variables, cfg, t, split, n, snr=snr if t in ("asr", "avsr") else None)
    metrics.update(metrics_of(t, rows[t], shared=shared, bleurt=bleurt))
  return metrics, rows


def make_hooks(cfg, task):
  """(eval_fn, sample_fn) for the trainer: the stage's tasks on data.eval_samples held-out clips (split evenly
  between them, clean audio); transcripts of 8 clips per task."""
  from trimodal_jax import data as data_lib
  split = str(cfg.data.eval_split)
  tasks = data_lib.active_tasks(cfg)
  n = max(1, int(cfg.data.eval_samples) // len(tasks))

  def eval_fn(variables, step):
    del step
    got = score(task, variables, cfg, tasks, split, n)[0]
    if getattr(task, "val_token_acc", None) is not None:
      got["val_token_acc"] = task.val_token_acc(variables)
    return got

  def sample_fn(variables, step, out_dir):
    del step
    rows = {t: transcribe(task, variables, cfg, t, split, 8) for t in tasks}
    write_transcripts(rows, os.path.join(out_dir, "transcripts.txt"))

  return eval_fn, sample_fn


def out_name(step: int, task: str, snr: float | None) -> str:
  """<step>_<task>[_snr<DB>] (DB as given: 5, -5, 2.5)."""
  return f"{int(step)}_{task}" + ("" if snr is None else f"_snr{float(snr):g}")


def evaluate(workdir: str, *, task: str = "all", split: str = "test", n: int = 64, step: int | None = None,
             snr: float | None = None, bleurt: str | None = None) -> tuple[int, dict, dict]:
  """-> (step, metrics, {task: rows}); writes the transcripts. CheckpointError naming the directory / step when
  there is none."""
  tasks = _tasks(task)
  if int(n) < 1:
    raise ConfigError(f"--n {n}: expected >= 1")
  from shared.checkpoint import restore
  r = restore(workdir, step)
  from trimodal_jax.task import make_task   # (after restore: a bad --workdir fails in a second)
  task_obj = make_task(r.config)
  metrics, rows = score(task_obj, r.variables, r.config, tasks, split, n, snr=snr, bleurt=bleurt)
  write_transcripts(rows, os.path.join(workdir, "eval", out_name(r.step, task, snr) + "_transcripts.txt"))
  return r.step, metrics, rows


def run_eval(workdir: str, *, task: str = "all", split: str = "test", n: int = 64, step: int | None = None,
             snr: float | None = None, bleurt: str | None = None) -> dict:
  """`evaluate` + the JSON line (printed, DIR/eval/<step>.json by cli.write_eval, and
  DIR/eval/<step>_<task>[_snr<DB>].json) -> the record."""
  step, metrics, _ = evaluate(workdir, task=task, split=split, n=n, step=step, snr=snr, bleurt=bleurt)
  context = dict(task=task, snr=None if snr is None else float(snr), split=split, n=int(n))
  cli.write_eval(workdir, step, metrics, **context)
  record = {"step": int(step), **context, **metrics}
  with open(os.path.join(workdir, "eval", out_name(step, task, snr) + ".json"), "w") as out:
    out.write(json.dumps(record, allow_nan=False) + "\n")
  return record


def main():
  f = cli.FLAGS
  run_eval(f.workdir, task=f.task, split=f.split, n=f.n, step=f.step, snr=f.snr, bleurt=f.bleurt)


def define_flags():
  cli.define_eval_flags(default_n=64)
  flags.DEFINE_enum("task", "all", list(TASK_CHOICES), "Task to score (all: the four, n clips each).")
  flags.DEFINE_float("snr", None, "ASR / AVSR: babble noise at exactly this SNR (dB); default clean audio.")
  flags.DEFINE_string("bleurt", None, "A local BLEURT-PyTorch checkpoint directory: also report t/bleurt.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
