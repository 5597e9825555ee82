"""VALLR-Pin's table in miniature on SynthCue held-out speakers: char-only vs dual decoder vs dual + LLM refinement.

  PYTHONPATH=. python benchmarks/vsr_pin_table.py --out W            # resumable: finished runs are kept
  PYTHONPATH=. python benchmarks/vsr_pin_table.py --out W --report   # the table from W/table.jsonl only
  PYTHONPATH=. python benchmarks/vsr_pin_table.py --out W --big      # + the larger refiner stand-in's rows

Chain (configs/vsr_pin/tiny.py and refine_tiny.py; their default step counts unless --steps says otherwise):
  per seed s in --seeds:
    W/char_s<s>   stage I, the paper's char-only baseline (`tiny.py:char_only`, trainer.seed = s)
    W/dual_s<s>   stage I, characters + pinyin (`tiny.py`, trainer.seed = s)
  once (the stand-in for a pretrained Instruct LLM; the same base for every seed, as Qwen3 would be):
    W/lm          `refine_tiny.py:pretrain`: SynthCue sentences + generic correction examples (synthetic noise,
                  never a lip reader's errors) -> W/lm_base (a transformers Qwen3 directory)
  per seed:
    W/refine_s<s>/train.jsonl   the training split decoded by W/dual_s<s>'s early / middle / late checkpoints
                                (--records clips each: the paper's error-aware data)
    W/refine_s<s>/eval.jsonl    the validation split decoded by the late checkpoint (the LoRA run's held-out CER)
    W/lora_s<s>   `refine_tiny.py:lora` over W/lm_base on those records
Rows (--n clips of the test split = the held-out speakers, the newest checkpoint of each run, one decode per
stage-I model): CER (beam 5, attention N-best[0]), N-best oracle CER, pinyin ER, CTC-greedy CER; the refined CER
of the dual model's N-best + pinyin by W/lm (no error-aware tuning: the ablation) and by W/lora_s<s> (the paper's
refiner). One JSON line per (row, seed) appended to W/table.jsonl (a line already there is not recomputed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
STAGE1_FLAGS = ("--config.trainer.eval_every=1000", "--config.trainer.sample_every=1000")


def _run(args: list[str]):
  print(f"[{time.strftime('%H:%M:%S')}] {' '.join(args)}", flush=True)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  subprocess.run([sys.executable] + args, check=True, cwd=ROOT, env=env)


def default_steps() -> dict:
  from configs.vsr_pin import refine_tiny, tiny
  return {"stage1": tiny.get_config().trainer.total_steps,
          "pretrain": refine_tiny.get_config("pretrain").trainer.total_steps,
          "lora": refine_tiny.get_config("lora").trainer.total_steps}


def _finished(workdir: str, steps: int) -> bool:
  """The run's metrics.jsonl has a row at its final step (a killed run resumes from its checkpoint)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return False
  return max((json.loads(l).get("step", 0) for l in open(path) if l.strip()), default=0) >= steps


def _train(module: str, config: str, workdir: str, steps: int, extra=()):
  if not _finished(workdir, steps):
    _run(["-m", module, "--config", config, "--workdir", workdir, *extra, f"--config.trainer.total_steps={steps}"])


# refiner stand-ins: "" = refine_tiny.py as it is (3 layers, d 64, 0.24M), "_big" = the capacity check (--big)
REFINERS = {"": (), "_big": ("--config.model.hidden_size=128", "--config.model.intermediate_size=384",
                             "--config.model.num_layers=4", "--config.model.head_dim=32")}


def chain(out: str, seeds: list[int], steps: dict, records: int, sizes=("",)):
  for s in seeds:
    for name, cfg in (("char", "configs/vsr_pin/tiny.py:char_only"), ("dual", "configs/vsr_pin/tiny.py")):
      _train("vsr_pin_jax.train", cfg, os.path.join(out, f"{name}_s{s}"), steps["stage1"],
             (f"--config.trainer.seed={s}", *STAGE1_FLAGS))
  records_of = {}
  for s in seeds:   # the error-aware records: decoded once per seed, every refiner size trains on them
    dual, rdir = os.path.join(out, f"dual_s{s}"), os.path.join(out, f"refine_s{s}")
    train_rec, eval_rec = os.path.join(rdir, "train.jsonl"), os.path.join(rdir, "eval.jsonl")
    if not os.path.isfile(train_rec):
      _run(["-m", "vsr_pin_jax.build_refine_data", "--workdir", dual, "--steps", "early,middle,late",
            "--n", str(records), "--out", train_rec])
    if not os.path.isfile(eval_rec):
      _run(["-m", "vsr_pin_jax.build_refine_data", "--workdir", dual, "--steps", "late", "--split",
            "validation", "--n", "128", "--out", eval_rec])
    records_of[s] = (train_rec, eval_rec)
  for tag in sizes:
    model = REFINERS[tag]
    lm, base = os.path.join(out, f"lm{tag}"), os.path.join(out, f"lm{tag}_base")
    _train("vsr_pin_jax.train_refiner", "configs/vsr_pin/refine_tiny.py:pretrain", lm, steps["pretrain"], model)
    if not os.path.isfile(os.path.join(base, "config.json")):
      _run(["-m", "vsr_pin_jax.refiner", "--workdir", lm, "--out", base])
    for s in seeds:
      train_rec, eval_rec = records_of[s]
      _train("vsr_pin_jax.train_refiner", "configs/vsr_pin/refine_tiny.py:lora", os.path.join(out, f"lora{tag}_s{s}"),
             steps["lora"], (*model, f"--config.init.base.path={base}", f"--config.data.train_records={train_rec}",
                             f"--config.data.eval_records={eval_rec}", f"--config.trainer.seed={s}"))


def error_kinds(rows: list[dict], world) -> dict:
  """Substitutions of N-best[0] vs the truth (equal lengths) by kind: homophone (same syllable), another character of
  the same word class (what the sentence cannot decide: SynthCue draws each position uniformly from its class),
  a character of another class (what the sentence decides); utterances of another length counted apart."""
  syl = {c: int(world.char_syllable[i]) for i, c in enumerate(world.chars)}
  cls = {c: int(world.char_class[i]) for i, c in enumerate(world.chars)}
  out = {"homophone": 0, "same_class": 0, "other_class": 0, "length_mismatch": 0}
  for x in rows:
    t, h = x["truth"], x["nbest"][0]
    if len(t) != len(h):
      out["length_mismatch"] += 1
      continue
    for a, b in zip(t, h):
      if a != b:
        out["homophone" if syl.get(a) == syl.get(b) else
            "same_class" if cls.get(a) == cls.get(b) else "other_class"] += 1
  return out


def pinyin_rule(rows: list[dict], world) -> list[str]:
  """A rule that uses what the refiner sees: the first hypothesis whose syllables equal the predicted pinyin, else
  N-best[0] (how much the pinyin decoder adds to the N-best, without a language model)."""
  syl = {c: world.syllables[int(world.char_syllable[i])] for i, c in enumerate(world.chars)}
  out = []
  for x in rows:
    want = (x["pinyin"] or "").split()
    out.append(next((h for h in x["nbest"] if [syl.get(c, "?") for c in h] == want), x["nbest"][0]))
  return out


def evaluate_rows(out: str, seeds: list[int], n: int) -> list[dict]:
  from shared.checkpoint import Checkpointer, restore
  from shared.metrics.text import chinese_cer
  from vsr_pin_jax.build_refine_data import pick_steps
  from vsr_pin_jax.evaluate import metrics_of, transcribe
  from vsr_pin_jax.refiner import refine_workdir
  from vsr_pin_jax.task import make_task
  from shared.data.synthcue import synthcue_source
  path = os.path.join(out, "table.jsonl")
  done = {(r["row"], r["seed"]): r for r in map(json.loads, open(path))} if os.path.isfile(path) else {}

  def put(rec):
    print(json.dumps(rec), flush=True)
    with open(path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    done[(rec["row"], rec["seed"])] = rec

  for s in seeds:
    for name, run, at in (("char", "char", "late"), ("dual", "dual", "late"), ("dual @ middle", "dual", "middle")):
      refiners = [] if run != "dual" else [(f"{name} + refiner (no error-aware tuning)", "lm"),
                                             (f"{name} + refiner", f"lora_s{s}")]
      if run == "dual" and os.path.isdir(os.path.join(out, f"lora_big_s{s}")):
        refiners += [(f"{name} + larger refiner (no error-aware tuning)", "lm_big"),
                     (f"{name} + larger refiner", f"lora_big_s{s}")]
      refined_rows = [r for r, _ in refiners]
      if all((w, s) in done and done[(w, s)]["n"] == n for w in [name] + refined_rows) and "errors" in done[(name, s)]:
        continue
      refiners = [(r, d) for r, d in refiners if (r, s) not in done or done[(r, s)]["n"] != n]
      t0 = time.time()
      wd = os.path.join(out, f"{run}_s{s}")
      step = dict(pick_steps(Checkpointer(wd, keep=1, async_save=False, create=False).manager.all_steps(), at))[at]
      r = restore(wd, step)
      task = make_task(r.config)
      rows = transcribe(task, r.variables, r.config, "test", n)
      m = metrics_of(rows, task.model.config.pinyin)
      world = synthcue_source(r.config.data, "test", "speech", render_video=False, render_audio=False).world
      m["errors"] = error_kinds(rows, world)
      truths = [x["truth"] for x in rows]
      if run == "dual":
        m["cer_pinyin_rule"] = chinese_cer(truths, pinyin_rule(rows, world))
      if (name, s) not in done or "errors" not in done[(name, s)] or done[(name, s)]["n"] != n:
        put({"row": name, "seed": s, "step": r.step, "seconds": round(time.time() - t0, 1), **m})
      for row, refiner in refiners:
        t0 = time.time()
        refined = refine_workdir(os.path.join(out, refiner), rows)
        best = [x["nbest"][0] for x in rows]
        put({"row": row, "seed": s, "step": r.step, "refiner": refiner, "n": len(rows),
             "seconds": round(time.time() - t0, 1), "cer": chinese_cer(truths, refined), "cer_input": m["cer"],
             "oracle_cer": m["oracle_cer"],
             "fixed": sum(o == t != b for o, t, b in zip(refined, truths, best)),
             "broke": sum(b == t != o for o, t, b in zip(refined, truths, best)),
             "kept": sum(o == b for o, b in zip(refined, best))})
  return list(done.values())


def report(records: list[dict]) -> str:
  by = {(r["row"], r["seed"]): r for r in records}
  seeds = sorted({r["seed"] for r in records})
  f = lambda r, k: f"{r[k]:.3f}" if r is not None and k in r else "-"  # noqa: E731
  cols = " | ".join(f"CER s{s}" for s in seeds)
  lines = [f"| row | {cols} | N-best oracle CER | pinyin ER | CTC-greedy CER |",
           "|---|" + "---|" * (len(seeds) + 3)]
  for base in ("char", "dual", "dual @ middle"):   # the pinyin rule (pinyin_rule) as a row of its own
    for s in seeds:
      if (base, s) in by and "cer_pinyin_rule" in by[(base, s)]:
        by[(f"{base} + pinyin-consistent pick (no LM)", s)] = {"cer": by[(base, s)]["cer_pinyin_rule"]}
  for row in ("char", "dual", "dual + pinyin-consistent pick (no LM)", "dual + refiner (no error-aware tuning)",
              "dual + refiner", "dual + larger refiner (no error-aware tuning)", "dual + larger refiner",
              "dual @ middle", "dual @ middle + pinyin-consistent pick (no LM)",
              "dual @ middle + refiner (no error-aware tuning)", "dual @ middle + refiner",
              "dual @ middle + larger refiner (no error-aware tuning)", "dual @ middle + larger refiner"):
    rs = [by.get((row, s)) for s in seeds]
    if not any(rs):
      continue
    cers = " | ".join(f(r, "cer") for r in rs)
    extra = [" / ".join(f(r, k) for r in rs) for k in ("oracle_cer", "pinyin_er", "cer_ctc")]
    extra = ["" if set(e.split(" / ")) == {"-"} else e for e in extra]
    lines.append(f"| {row} | {cers} | " + " | ".join(extra) + " |")
  for s, base in ((s, b) for b in ("char", "dual", "dual @ middle") for s in seeds):
    d = by.get((base, s))
    if d and "errors" in d:
      lines.append(f"seed {s}: {base} (step {d['step']}) N-best[0] substitutions {d['errors']}")
  for s in seeds:
    for row in sorted({r["row"] for r in records if "fixed" in r}):
      r = by.get((row, s))
      if r and "fixed" in r:
        lines.append(f"seed {s}: {row}: kept N-best[0] {r['kept']}, fixed {r['fixed']}, broke {r['broke']} "
                     f"of {r['n']}")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", required=True)
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--steps", default="", help="stage1=N,pretrain=N,lora=N (defaults: the configs')")
  ap.add_argument("--records", type=int, default=2000, help="training clips decoded per stage-I checkpoint")
  ap.add_argument("--n", type=int, default=256, help="held-out clips per row")
  ap.add_argument("--big", action="store_true", help="also the capacity check: a 4-layer d-128 refiner stand-in "
                  "(REFINERS['_big']), pretrained and LoRA-tuned on the same records, as rows of its own")
  ap.add_argument("--report", action="store_true", help="print the table from OUT/table.jsonl only")
  a = ap.parse_args()
  path = os.path.join(a.out, "table.jsonl")
  if a.report:
    print(report([json.loads(l) for l in open(path)]))
    return
  steps = default_steps()
  for item in filter(None, a.steps.split(",")):
    k, v = item.split("=")
    if k not in ("stage1", "pretrain", "lora"):
      raise SystemExit(f"--steps: unknown stage {k!r} (stage1, pretrain, lora)")
    steps[k] = int(v)
  seeds = [int(s) for s in a.seeds.split(",")]
  os.makedirs(a.out, exist_ok=True)
  chain(a.out, seeds, steps, a.records, ("", "_big") if a.big else ("",))
  print(report(evaluate_rows(a.out, seeds, a.n)))


if __name__ == "__main__":
  main()
