"""The tri-modal paper's findings in miniature on SynthCue (held-out speakers / signers): train and evaluate each row.

  PYTHONPATH=. JAX_PLATFORMS=cpu python benchmarks/trimodal_table.py --out W [--rows main_s1,nolip_s1,...]
  PYTHONPATH=. python benchmarks/trimodal_table.py --out W --report      # the markdown tables from W/*/eval
  ... --rows long,long_nolip --step 4000 --out W4                        # stop each row at checkpoint 4000
                                                                         # (same schedule) and evaluate that
  ... --rows long --seed 1 --out W                                       # another seed: W/long_seed1 (same
                                                                         # stand-ins W/pre_*, trainer.seed=1)

Rows (configs/trimodal/tiny.py, batch 8; the same budget per compared row):
 from scratch (every encoder and the LLM train; stage 1 = 1000 steps, stage 2 = 750, single stage = 1750):
  main_s1     stage 1 (VSR + SLT), SLT reads signs + lips                           -> finding (2)
  nolip_s1    stage 1, SLT reads the sign stream alone (model.slt_lip=False)        -> finding (2)
  main_s2     stage 2 (all four tasks, babble noise) from main_s1 (init.stage1)     -> findings (1), (3), (4)
  single      all four tasks with stage 2's ratios and noise from scratch, 1750 steps -> finding (4)
 the paper's regime (tiny.py ",frozen"): the stand-ins pretrained first (trimodal_jax/pretrain.py, exported to
 W/pre_<name>/export and read through the init entries), encoders frozen, LoRA on the stand-in LM:
  pre_s1 -> pre_s2   two-stage: stage 1 500 steps, stage 2 250 steps               -> findings (1), (3), (4)
  pre_single         single stage: stage 2's mix for 750 steps                     -> findings (1), (3), (4)
  pre_nolip          pre_single with SLT from the sign stream alone                 -> finding (2)
  long, long_nolip   as pre_single / pre_nolip with the whole LLM training, 8000 steps at lr 1e-3 held (the rows
                     that learn)
  long_s1 -> long_s2 two-stage at the same budget: stage 1 4000 steps, stage 2 4000 (vs long) -> finding (4)
Evaluation (python -m trimodal_jax.evaluate, split test = held-out speakers, N clips per task): SLT BLEU-4 /
ROUGE-L / CER and the characters whose gloss shares its manual form; VSR / ASR / AVSR CER clean, ASR / AVSR at
0 and -5 dB babble. Finished steps are skipped (a training run whose last checkpoint is the final step; an eval
file that exists); interrupted training resumes from its checkpoints. Each step is a subprocess.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

CONFIG = "configs/trimodal/tiny.py"
S1, S2 = 1000, 750          # from scratch: stage 1, stage 2 steps
P1, P2 = 500, 250           # on the frozen stand-ins
L = 8000                    # the long rows


def _schedule(total: int, warmup: int) -> list[str]:
  return [f"--config.trainer.total_steps={total}", f"--config.trainer.schedule.warmup_steps={warmup}",
          f"--config.trainer.schedule.decay_steps={total - warmup}", "--config.trainer.log_every=100",
          "--config.trainer.eval_every=250", "--config.trainer.checkpoint.every_steps=250"]


STANDINS = ("sign", "lip", "audio", "llm")


def _standin_flags(out: str) -> list[str]:
  return [f"--config.init.{n}.path={os.path.join(out, 'pre_' + n, 'export')}" for n in STANDINS]


def _long(total: int = L) -> list[str]:
  return [f"--config.trainer.total_steps={total}", "--config.trainer.schedule.warmup_steps=100",
          f"--config.trainer.schedule.hold_steps={total - 600}", "--config.trainer.schedule.decay_steps=500",
          "--config.trainer.log_every=250", "--config.trainer.eval_every=0", "--config.trainer.checkpoint.every_steps=1000",
          "--config.train.llm=all"]


# row -> (config arg, total steps, extra flags, row it starts from, uses the stand-ins)
ROWS = {
    # from scratch (every encoder and the LLM train)
    "main_s1": ("stage1", S1, _schedule(S1, 100), None, False),
    "nolip_s1": ("stage1", S1, _schedule(S1, 100) + ["--config.model.slt_lip=False"], None, False),
    "main_s2": ("stage2", S2, _schedule(S2, 25) + ["--config.trainer.eval_every=0"], "main_s1", False),
    "single": ("stage2", S1 + S2, _schedule(S1 + S2, 100), None, False),
    # the paper's regime: pretrained stand-ins (W/pre_<name>/export), encoders frozen, LoRA on the stand-in LM
    "pre_s1": ("stage1,frozen", P1, _schedule(P1, 50) + ["--config.trainer.eval_every=0"], None, True),
    "pre_s2": ("stage2,frozen", P2, _schedule(P2, 25) + ["--config.trainer.eval_every=0"], "pre_s1", True),
    "pre_single": ("stage2,frozen", P1 + P2, _schedule(P1 + P2, 25) + ["--config.trainer.eval_every=0"], None,
                   True),
    # frozen stand-ins, the whole tiny LLM training (LoRA r 4 alone learns too slowly here), 8000 steps at lr 1e-3
    # held (the tri-stage decay to 1 % would waste most of the run)
    "long": ("stage2,frozen", L, _long(), None, True),
    "long_nolip": ("stage2,frozen", L, _long() + ["--config.model.slt_lip=False"], None, True),
    # finding (4) at the learning budget: stage 1 (VSR + SLT) for half of it, then stage 2 (all four) for the rest
    "long_s1": ("stage1,frozen", L // 2, _long(L // 2), None, True),
    "long_s2": ("stage2,frozen", L // 2, _long(L // 2), "long_s1", True),
    "pre_nolip": ("stage2,frozen", P1 + P2, _schedule(P1 + P2, 25) + ["--config.trainer.eval_every=0",
                                                                       "--config.model.slt_lip=False"], None, True),
}
# row -> [(task, snr)] evaluated
EVALS = {
    "main_s1": [("slt", None), ("vsr", None)],
    "nolip_s1": [("slt", None), ("vsr", None)],
    "main_s2": [("slt", None), ("vsr", None), ("asr", None), ("avsr", None), ("asr", 0), ("avsr", 0),
                ("asr", -5), ("avsr", -5)],
    "single": [("slt", None), ("vsr", None), ("asr", None), ("avsr", None), ("asr", 0), ("avsr", 0),
               ("asr", -5), ("avsr", -5)],
}
EVALS["pre_s2"] = EVALS["pre_single"] = EVALS["single"]
EVALS["pre_s1"] = EVALS["main_s1"]
EVALS["pre_nolip"] = EVALS["long_nolip"] = [("slt", None)]
EVALS["long"] = EVALS["long_s2"] = EVALS["single"]
EVALS["long_s1"] = EVALS["main_s1"]
LABELS = {"main_s1": "scratch: stage 1, SLT from signs + lips", "nolip_s1": "scratch: stage 1, SLT from signs alone",
          "main_s2": "scratch: two-stage (stage 1 -> stage 2)",
          "single": "scratch: single stage (all tasks from the start)",
          "pre_s1": "stand-ins: stage 1", "pre_s2": "stand-ins: two-stage (500 -> 250)",
          "pre_single": "stand-ins: single stage, SLT from signs + lips (750)",
          "pre_nolip": "stand-ins: single stage, SLT from signs alone (750)",
          "long": "stand-ins, whole LLM trains: single stage (8000)",
          "long_nolip": "stand-ins, whole LLM trains: single stage, SLT from signs alone (8000)",
          "long_s1": "stand-ins, whole LLM trains: stage 1 (4000)",
          "long_s2": "stand-ins, whole LLM trains: two-stage (4000 -> 4000)"}


def _run(cmd: list[str], log: str, stop_at: str | None = None):
  """Run cmd (output to log); with stop_at, SIGTERM it once that path exists (the trainer then saves and exits)."""
  print("$", " ".join(cmd), flush=True)
  with open(log, "a") as f:
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    while p.poll() is None:
      if stop_at and os.path.isdir(stop_at):
        time.sleep(5)                       # the checkpoint directory appears before its files are complete
        p.send_signal(signal.SIGTERM)
        p.wait()
        return
      time.sleep(5)
  if p.returncode:
    sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}; see {log}")


def _finished(workdir: str, total: int) -> bool:
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(total)))


def pretrain(out: str, name: str):
  """A stand-in (trimodal_jax/pretrain.py) and its export W/pre_<name>/export, unless there."""
  wd = os.path.join(out, "pre_" + name)
  if os.path.exists(os.path.join(wd, "export", "standin.json")):
    return
  log = os.path.join(out, f"pre_{name}.log")
  _run([sys.executable, "-m", "trimodal_jax.pretrain", "--config", f"configs/trimodal/pretrain.py:{name}",
        "--workdir", wd], log)
  _run([sys.executable, "-m", "trimodal_jax.pretrain_export", "--workdir", wd, "--out", os.path.join(wd, "export")],
       log)


def _dir(row: str, seed: int) -> str:
  """The workdir name of `row` trained with trainer.seed = seed (seed 0 keeps the bare row name)."""
  return row if not seed else f"{row}_seed{seed}"


def train(out: str, row: str, step: int | None = None, seed: int = 0):
  """Train `row` (its parent first); step: stop once checkpoint `step` is written (same schedule, a slice of it);
  seed: trainer.seed (initialisation and data order) of the row and its parent; the stand-ins are shared."""
  stage, total, extra, parent, standins = ROWS[row]
  wd = os.path.join(out, _dir(row, seed))
  if _finished(wd, step or total):
    return
  cmd = [sys.executable, "-m", "trimodal_jax.train", "--config", f"{CONFIG}:{stage}", "--workdir", wd] + extra
  if seed:
    cmd.append(f"--config.trainer.seed={seed}")
  if standins:
    for name in STANDINS:
      pretrain(out, name)
    cmd += _standin_flags(out)
  if parent:
    train(out, parent, seed=seed)
    cmd.append(f"--config.init.stage1.path={os.path.join(out, _dir(parent, seed))}")
  _run(cmd, os.path.join(out, f"{_dir(row, seed)}.log"), os.path.join(wd, "checkpoints", str(step)) if step else None)


def _eval_name(task: str, snr) -> str:
  return f"{task}" + ("" if snr is None else f"_snr{snr}")


def evaluate(out: str, row: str, n: int, step: int | None = None, seed: int = 0):
  wd = os.path.join(out, _dir(row, seed))
  os.makedirs(os.path.join(wd, "table"), exist_ok=True)
  for task, snr in EVALS[row]:
    path = os.path.join(wd, "table", _eval_name(task, snr) + ".json")
    if os.path.exists(path):
      continue
    cmd = [sys.executable, "-m", "trimodal_jax.evaluate", "--workdir", wd, "--task", task, "--n", str(n)]
    if step:
      cmd += ["--step", str(step)]
    if snr is not None:
      cmd.append(f"--snr={snr}")
    print("$", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
      sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    line = [x for x in p.stdout.splitlines() if x.startswith("{")][-1]
    with open(path, "w") as f:
      f.write(line + "\n")
    print(line, flush=True)


def _load(out: str) -> dict:
  """(row, seed) -> {eval name: metrics}."""
  got = {}
  for path in glob.glob(os.path.join(out, "*", "table", "*.json")):
    m = re.fullmatch(r"(.+?)(?:_seed(\d+))?", path.split(os.sep)[-3])
    if m.group(1) not in ROWS:
      continue
    with open(path) as f:
      got.setdefault((m.group(1), int(m.group(2) or 0)), {})[os.path.basename(path)[:-5]] = json.loads(f.read())
  return got


def _fmt(x) -> str:
  return "–" if x is None else f"{x:.3f}"


def report(out: str) -> str:
  got = _load(out)
  order = ("main_s1", "nolip_s1", "main_s2", "single", "pre_s1", "pre_s2", "pre_single", "pre_nolip", "long",
           "long_nolip", "long_s1", "long_s2")
  keys = sorted(got, key=lambda k: (order.index(k[0]), k[1]))

  def val(key, name, metric):
    return got[key].get(name, {}).get(metric)

  def label(key):
    return LABELS[key[0]] + (f", seed {key[1]}" if key[1] else "")

  lines = ["Finding (2): SLT with vs without lips (stage 1, same budget)", "",
           "| row | BLEU-4 | ROUGE-L | CER | shared-form char acc | other char acc |", "|---|---|---|---|---|---|"]
  for k in keys:
    if "slt" in got[k]:
      lines.append(f"| {label(k)} | " + " | ".join(
          _fmt(val(k, "slt", f"slt/{m}")) for m in ("bleu4", "rougeL", "cer", "shared_char_acc", "other_char_acc"))
          + " |")
  lines += ["", "Findings (1), (3), (4): CER per task (held-out speakers); ASR / AVSR under babble noise", "",
            "| row | SLT BLEU-4 | VSR | ASR clean | AVSR clean | ASR 0 dB | AVSR 0 dB | ASR -5 dB | AVSR -5 dB |",
            "|---|---|---|---|---|---|---|---|---|"]
  for k in keys:
    if k[0] not in ("main_s2", "single", "pre_s2", "pre_single", "long", "long_s2") or "vsr" not in got[k]:
      continue
    cells = [_fmt(val(k, "slt", "slt/bleu4")), _fmt(val(k, "vsr", "vsr/cer"))]
    for snr in (None, 0, -5):
      for task in ("asr", "avsr"):
        cells.append(_fmt(val(k, _eval_name(task, snr), f"{task}/cer")))
    lines.append(f"| {label(k)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--rows", default=",".join(ROWS))
  ap.add_argument("--n", type=int, default=64, help="held-out clips per task")
  ap.add_argument("--report", action="store_true")
  ap.add_argument("--seed", type=int, default=0, help="trainer.seed of the rows (workdirs <row>_seed<N>)")
  ap.add_argument("--step", type=int, default=None,
                  help="train the named rows only until this checkpoint (same schedule) and evaluate it; use "
                       "its own --out")
  a = ap.parse_args()
  if not a.report:
    os.makedirs(a.out, exist_ok=True)
    for row in a.rows.split(","):
      if row not in ROWS:
        sys.exit(f"unknown row {row!r}; rows: {list(ROWS)}")
      train(a.out, row, a.step, a.seed)
      evaluate(a.out, row, a.n, a.step, a.seed)
  print(report(a.out))


if __name__ == "__main__":
  main()
