"""`python -m vsr_pin_jax.build_refine_data --workdir W --steps early,middle,late --out F.jsonl [--split train] [--n N]`

The paper's error-aware instruction data (§ II-C 2): the training set decoded by several stage-I checkpoints,
whose different error rates make the refiner see errors of every size. One JSON record per clip and checkpoint
(the format vsr_pin_jax/refine_data.py reads):
  {"id": "<split>/<clip>@<step>", "pinyin": predicted toneless pinyin, "nbest": [N-best characters, best
   first], "nbest_scores": [...], "truth": characters, "cer": CER of nbest[0], "stage": "early"|"middle"|"late"
   (or "step<N>"), "step": N}
--steps: names (early = the oldest kept checkpoint, late = the newest, middle = the one in between) or step
numbers, comma separated. Keep enough checkpoints for this (trainer.checkpoint.keep). Prints a summary line
(records and mean CER per checkpoint).
"""
from __future__ import annotations

import json
import os

from absl import flags

from shared import cli
from shared.errors import ConfigError


def pick_steps(available: list[int], spec: str) -> list[tuple[str, int]]:
  """'early,middle,late' / '500,1500' -> [(stage name, step)], from the workdir's checkpoint steps."""
  available = sorted(available)
  if not available:
    raise ConfigError("the workdir has no checkpoints to decode with")
  named = {"early": available[0], "late": available[-1], "middle": available[(len(available) - 1) // 2]}
  out = []
  for item in (s.strip() for s in spec.split(",") if s.strip()):
    if item in named:
      out.append((item, named[item]))
    elif item.isdigit() and int(item) in available:
      out.append((f"step{item}", int(item)))
    else:
      raise ConfigError(f"--steps item {item!r}: expected early / middle / late or one of the checkpoint steps "
                        f"{available}")
  if len({s for _, s in out}) < len(out):
    raise ConfigError(f"--steps {spec!r} names the same checkpoint twice ({out}); keep more checkpoints "
                      f"(trainer.checkpoint.keep) or name steps explicitly")
  return out


def build(workdir: str, steps: str, out: str, *, split: str = "train", n: int = 1000) -> dict:
  from shared.checkpoint import Checkpointer, restore
  from shared.metrics.text import chinese_cer
  from vsr_pin_jax.evaluate import transcribe
  from vsr_pin_jax.task import make_task
  ckpt = Checkpointer(workdir, keep=1, async_save=False, create=False)
  chosen = pick_steps(list(ckpt.manager.all_steps()), steps)
  summary, task = {}, None
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".tmp", "w", encoding="utf-8") as f:
    for stage, step in chosen:
      r = restore(workdir, step)
      task = task or make_task(r.config)
      rows = transcribe(task, r.variables, r.config, split, n)
      cers = []
      for i, row in enumerate(rows):
        cer = chinese_cer([row["truth"]], [row["nbest"][0]]) if row["truth"] else 0.0
        cers.append(cer)
        rec = {"id": f"{split}/{i}@{step}", "pinyin": row["pinyin"], "nbest": row["nbest"],
               "nbest_scores": row["nbest_scores"], "truth": row["truth"], "cer": cer, "stage": stage,
               "step": int(step)}
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
      summary[stage] = {"step": int(step), "records": len(rows), "mean_cer": sum(cers) / max(len(cers), 1)}
  os.replace(out + ".tmp", out)
  return summary


def define_flags():
  flags.DEFINE_string("workdir", None, "Stage-I training workdir.")
  flags.DEFINE_string("steps", "early,middle,late", "Checkpoints: early,middle,late or step numbers.")
  flags.DEFINE_string("out", None, "Output .jsonl file.")
  flags.DEFINE_string("split", "train", "Data split to decode.")
  flags.DEFINE_integer("n", 1000, "Clips to decode per checkpoint.")


def main():
  f = cli.FLAGS
  summary = build(f.workdir, f.steps, f.out, split=f.split, n=f.n)
  print(json.dumps({"out": f.out, **summary}), flush=True)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir", "out"])
  cli.run(main)
