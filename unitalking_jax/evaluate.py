"""`python -m unitalking_jax.evaluate --workdir DIR [--split test] [--n 32] [--step S] [--seed 0]`

Scores a UniTalking checkpoint on n clips of a split (held-out speakers for "test") and prints ONE JSON line,
also written to DIR/eval/<step>.json: per task (t2av, ti2av, tv2a, and "real" = the clips themselves through the
codecs, the ceiling) the sync score (corr of per-frame audio log-energy with the mouth opening measured on the
frames; matched, shuffled pairs, margin) and the template decoder's syllable error rate against the clip's text
and against the next clip's (chance). Flattened keys: "t2av/sync", "t2av/ser", ...
"""
from __future__ import annotations

from shared import cli
from shared.checkpoint import restore


def evaluate(workdir: str, *, split: str = "test", n: int = 32, step: int | None = None, seed: int = 0,
             text_scale: float | None = None) -> tuple[int, dict]:
  """-> (step, {"<task>/<metric>": value}). CheckpointError naming the directory / step when there is none."""
  r = restore(workdir, step)
  from unitalking_jax.model import model_from_config   # (after restore: a bad --workdir fails in a second)
  from unitalking_jax.samples import scores
  from unitalking_jax.task import make_task
  cfg = r.config
  if text_scale is not None:
    cfg.sampling.text_scale = text_scale
  task = make_task(cfg, model_from_config(cfg))
  got = scores(cfg, task.generate, r.params, n, seed=seed, split=split)
  flat = {f"{t}/{k}": float(v) for t, m in got.items() for k, v in m.items()}
  return r.step, flat


def main():
  f = cli.FLAGS
  step, metrics = evaluate(f.workdir, split=f.split, n=f.n, step=f.step, seed=f.seed)
  cli.write_eval(f.workdir, step, metrics, split=f.split, n=f.n, seed=f.seed)


if __name__ == "__main__":
  cli.define_eval_flags()
  cli.run(main)
