"""UniCUE's Tables 2 / 3 in miniature on SynthCue (held-out cuers): train, export and evaluate each row.

  PYTHONPATH=. python benchmarks/unicue_table.py --out W [--rows csr_s0,single_s0,...] [--taskset 0]
  PYTHONPATH=. python benchmarks/unicue_table.py --out W --report        # the markdown table from W/*/eval

Rows (same budget per row within a stage: CSR 2000 steps, the mel VAE 800, stage 2 1000; seed = trainer seed,
the corpus is fixed):
  csr_s0, csr_s1      CSR: lips + hand video and pose maps (UniCUE's stage 1); every CSR row is also scored
                      through the TTS stand-in (evaluate --tts: its transcripts spoken in the cuer's voice)
  csr_no_pose         CSR++: video stream only            csr_no_align   CSR‡: no semantic alignment pool
  csr_lips, csr_hand  the inputs keep one half of cued speech (data.cues): lips alone, hand alone
  vae                 the tiny mel VAE that every stage-2 row reads
  unicue_s0/_s1       UniCUE: stage 2 on the frozen processor of csr_s0 / csr_s1
  single_s0/_s1       single CSV2S: the processor trains from scratch inside stage 2
  unicue_no_pose      UniCUE++ (reads csr_no_pose)        unicue_no_align  UniCUE‡ (reads csr_no_align)
  unicue_no_adapter   UniCUE*: Z_mv straight into the UNet's cross-attention (reads csr_s0)
  unicue_aligned, single_aligned   not the paper's: the adapter output also enters the UNet input frame-aligned
                      (configs/unicue/tiny.py word `aligned`, model.concat_condition)
  oracle_aligned, oracle   a diagnostic: stage 2 conditioned on the true syllable of every frame (an embedding in
                      place of the processor, model.oracle_units), with / without the frame-aligned input: what the
                      generator learns in the budget from a perfect CSR representation; oracle_aligned_vpred:
                      the same trained on the v target (objective.prediction_type, ours)
  unicue_vpred_s0/_s1, single_vpred_s0/_s1   UniCUE / single CSV2S with the frame-aligned input and the v target
                      (words `aligned,vpred`), 2,000 stage-2 steps (ROW_STEPS); unicue_ft_vpred_s0: the same
                      UniCUE row with the stage-1 processor trained on in stage 2 (word `finetune`);
  unicue_ft_vpred_s1, unicue_ft_no_pose, unicue_ft_no_align, unicue_ft_no_adapter   Table 3 on that path: the
                      seed-1 twin and the three ablations (each reads its own CSR row; unicue_ft_no_adapter_s1: the
                      adapter ablation's seed 1, reads csr_s1), 2,000 stage-2 steps
A row runs its dependencies first if their releases are missing; finished rows (W/<row>/eval/*.json) are skipped,
interrupted ones resume from their checkpoints. Each step is a subprocess; --taskset N pins them to one core.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

STEPS = {"csr": 2000, "vae": 800, "v2s": 1000}
# row -> (config arg, stage, seed, csr row it reads)
ROWS = {
    "csr_s0": ("", "csr", 0, None), "csr_s1": ("", "csr", 1, None),
    "csr_no_pose": ("no_pose", "csr", 0, None), "csr_no_align": ("no_align", "csr", 0, None),
    "csr_lips": ("lips_only", "csr", 0, None), "csr_hand": ("hand_only", "csr", 0, None),
    "vae": ("vae", "vae", 0, None),
    "unicue_s0": ("v2s", "v2s", 0, "csr_s0"), "unicue_s1": ("v2s", "v2s", 1, "csr_s1"),
    "single_s0": ("v2s,single", "v2s", 0, None), "single_s1": ("v2s,single", "v2s", 1, None),
    "unicue_no_pose": ("v2s,no_pose", "v2s", 0, "csr_no_pose"),
    "unicue_no_align": ("v2s,no_align", "v2s", 0, "csr_no_align"),
    "unicue_no_adapter": ("v2s,no_adapter", "v2s", 0, "csr_s0"),
    "unicue_aligned": ("v2s,aligned", "v2s", 0, "csr_s0"),
    "single_aligned": ("v2s,single,aligned", "v2s", 0, None),
    "oracle_aligned": ("v2s,oracle,aligned", "v2s", 0, None), "oracle": ("v2s,oracle", "v2s", 0, None),
    "oracle_aligned_vpred": ("v2s,oracle,aligned,vpred", "v2s", 0, None),
    "unicue_vpred_s0": ("v2s,aligned,vpred", "v2s", 0, "csr_s0"),
    "unicue_vpred_s1": ("v2s,aligned,vpred", "v2s", 1, "csr_s1"),
    "single_vpred_s0": ("v2s,single,aligned,vpred", "v2s", 0, None),
    "single_vpred_s1": ("v2s,single,aligned,vpred", "v2s", 1, None),
    "unicue_ft_vpred_s0": ("v2s,aligned,vpred,finetune", "v2s", 0, "csr_s0"),
    "unicue_ft_vpred_s1": ("v2s,aligned,vpred,finetune", "v2s", 1, "csr_s1"),
    "unicue_ft_no_pose": ("v2s,aligned,vpred,finetune,no_pose", "v2s", 0, "csr_no_pose"),
    "unicue_ft_no_align": ("v2s,aligned,vpred,finetune,no_align", "v2s", 0, "csr_no_align"),
    "unicue_ft_no_adapter": ("v2s,aligned,vpred,finetune,no_adapter", "v2s", 0, "csr_s0"),
    "unicue_ft_no_adapter_s1": ("v2s,aligned,vpred,finetune,no_adapter", "v2s", 1, "csr_s1"),
}
# rows trained longer than their stage's budget (the v-prediction rows: the oracle showed content arriving by 2,000)
ROW_STEPS = {r: 2000 for r in ("unicue_vpred_s0", "unicue_vpred_s1", "single_vpred_s0", "single_vpred_s1",
                                "unicue_ft_vpred_s0", "unicue_ft_vpred_s1", "unicue_ft_no_pose", "unicue_ft_no_align",
                                "unicue_ft_no_adapter", "unicue_ft_no_adapter_s1")}
LABELS = {"csr_s0": "CSR (lips + hand), seed 0", "csr_s1": "CSR (lips + hand), seed 1",
          "csr_no_pose": "CSR++ (no pose stream)", "csr_no_align": "CSR‡ (no alignment pool)",
          "csr_lips": "lips alone", "csr_hand": "hand alone", "vae": "mel VAE round trip",
          "unicue_s0": "UniCUE, seed 0", "unicue_s1": "UniCUE, seed 1", "single_s0": "single CSV2S, seed 0",
          "single_s1": "single CSV2S, seed 1", "unicue_no_pose": "UniCUE++ (no pose stream)",
          "unicue_no_align": "UniCUE‡ (no alignment pool)", "unicue_no_adapter": "UniCUE* (no VPA adapter)",
          "unicue_aligned": "UniCUE + frame-aligned condition (ours)",
          "single_aligned": "single CSV2S + frame-aligned condition (ours)",
          "unicue_aligned_long": "UniCUE + frame-aligned condition (ours), 2,500 steps",
          "oracle_aligned": "oracle: true syllables, frame-aligned + cross-attention (diagnostic)",
          "oracle": "oracle: true syllables, cross-attention only (diagnostic)",
          "oracle_aligned_vpred": "oracle, frame-aligned + cross-attention, v-prediction (diagnostic)",
          "oracle_aligned_vpred_long": "oracle, frame-aligned + cross-attention, v-prediction, 2,000 steps",
          "unicue_vpred_s0": "UniCUE + frame-aligned, v-prediction (ours), seed 0",
          "unicue_vpred_s1": "UniCUE + frame-aligned, v-prediction (ours), seed 1",
          "single_vpred_s0": "single CSV2S + frame-aligned, v-prediction (ours), seed 0",
          "single_vpred_s1": "single CSV2S + frame-aligned, v-prediction (ours), seed 1",
          "unicue_ft_vpred_s0": "UniCUE, processor fine-tuned in stage 2, + frame-aligned, v-prediction (ours), seed 0",
          "unicue_ft_vpred_s1": "UniCUE, processor fine-tuned in stage 2, + frame-aligned, v-prediction (ours), seed 1",
          "unicue_ft_no_pose": "UniCUE++ (no pose stream), fine-tuned, frame-aligned, v-prediction",
          "unicue_ft_no_align": "UniCUE‡ (no alignment pool), fine-tuned, frame-aligned, v-prediction",
          "unicue_ft_no_adapter": "UniCUE* (no VPA adapter), fine-tuned, frame-aligned, v-prediction",
          "unicue_ft_no_adapter_s1": "UniCUE* (no VPA adapter), fine-tuned, frame-aligned, v-prediction, seed 1"}


def run(cmd: list[str], log: str, core: int | None):
  if core is not None:
    cmd = ["taskset", "-c", str(core)] + cmd
  print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd)}  > {log}", flush=True)
  with open(log, "a") as f:
    rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": "."})
  if rc:
    sys.exit(f"failed (rc {rc}): {' '.join(cmd)}; see {log}")


def evals(out: str, row: str) -> list[dict]:
  """The test-split evaluations of a row (DIR/eval/<step>.json), by step."""
  paths = [p for p in glob.glob(f"{out}/{row}/eval/*.json") if os.path.basename(p)[:-5].isdigit()]
  return [json.load(open(p)) for p in sorted(paths, key=lambda p: int(os.path.basename(p)[:-5]))]


def do_row(out: str, row: str, core: int | None):
  if evals(out, row):
    return
  arg, stage, seed, reads = ROWS[row]
  py = sys.executable
  if stage == "v2s":
    for dep in ("vae",) + ((reads,) if reads else ()):
      if not os.path.exists(f"{out}/{dep}_rel/release.json"):
        do_row(out, dep, core)
    paths = f"vae={out}/vae_rel" + (f",csr={out}/{reads}_rel" if reads else "")
    arg = f"{arg},{paths}"
  cfg = "configs/unicue/tiny.py" + (f":{arg}" if arg else "")
  wd, log = f"{out}/{row}", f"{out}/{row}.log"
  run([py, "-m", "unicue_jax.train", "--config", cfg, "--workdir", wd,
       f"--config.trainer.total_steps={ROW_STEPS.get(row, STEPS[stage])}", f"--config.trainer.seed={seed}"], log, core)
  if stage in ("csr", "vae"):
    run([py, "-m", "unicue_jax.export", "--workdir", wd, "--out", f"{out}/{row}_rel"], log, core)
  run([py, "-m", "unicue_jax.evaluate", "--workdir", wd, "--split", "test", "--n", "64"]
      + (["--tts"] if stage == "csr" else []), log, core)
  print(json.dumps({"row": row, **evals(out, row)[-1]}), flush=True)


def fmt(x, nd=3):
  return "" if x is None else f"{x:.{nd}f}"


def report(out: str) -> str:
  lines = ["| row | CSR CER | speech SER (chance / real) | sync (shuffled / real) | speaker sim (other / real) "
           "| ε-MSE own / shuffled / zero condition | steps |", "|---|---|---|---|---|---|---|"]
  extra = sorted(os.path.basename(os.path.dirname(os.path.dirname(p))) for p in glob.glob(f"{out}/*/eval/*.json")
                 if not os.path.islink(os.path.dirname(os.path.dirname(p))))
  for row in list(ROWS) + [r for r in dict.fromkeys(extra) if r not in ROWS]:
    ev = evals(out, row)
    if not ev:
      continue
    e = ev[-1]
    ser = f"{fmt(e.get('ser'))} ({fmt(e.get('ser_chance'))} / {fmt(e.get('ser_real'))})" if "ser" in e else ""
    sync = f"{fmt(e.get('sync'))} ({fmt(e.get('sync_shuffled'))} / {fmt(e.get('sync_real'))})" if "sync" in e else ""
    cer = fmt(e.get("cer")) if "cer" in e else (f"l1 {fmt(e.get('l1'))}" if "l1" in e else "")
    spk = f"{fmt(e.get('spk_sim'))} ({fmt(e.get('spk_sim_other'))} / {fmt(e.get('spk_sim_real'))})" if "spk_sim" in e else ""
    eps = (f"{fmt(e['eps_mse'], 4)} / {fmt(e.get('eps_mse_shuffled'), 4)} / {fmt(e.get('eps_mse_zero'), 4)}"
           if "eps_mse" in e else "")
    lines.append(f"| {LABELS.get(row, row)} | {cer} | {ser} | {sync} | {spk} | {eps} | {e.get('step')} |")
    if "tts_ser" in e:
      t = {k[4:]: v for k, v in e.items() if k.startswith("tts_")}
      lines.append(f"| {LABELS[row]} -> TTS stand-in | | {fmt(t['ser'])} ({fmt(t['ser_chance'])} / {fmt(t['ser_real'])}) "
                   f"| {fmt(t.get('sync'))} ({fmt(t.get('sync_shuffled'))} / {fmt(t.get('sync_real'))}) "
                   f"| {fmt(t.get('spk_sim'))} ({fmt(t.get('spk_sim_other'))} / {fmt(t.get('spk_sim_real'))}) | | |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True)
  ap.add_argument("--rows", default=",".join(ROWS))
  ap.add_argument("--taskset", type=int, default=None)
  ap.add_argument("--report", action="store_true")
  args = ap.parse_args()
  if args.report:
    print(report(args.out))
    return
  os.makedirs(args.out, exist_ok=True)
  for row in args.rows.split(","):
    if row not in ROWS:
      sys.exit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
    do_row(args.out, row, args.taskset)


if __name__ == "__main__":
  main()
