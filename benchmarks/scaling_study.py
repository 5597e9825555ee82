"""The miniature scaling study of the README, one command (about 40-60 min on 2 CPU cores):

  python benchmarks/scaling_study.py [--workdir /tmp/scaling_study] [--report-only]

UniTalking's tiny family on SynthCue: budgets 2.5e11, 5e11, 1e12 FLOPs x widths 32, 64, 96, 128
(configs/unitalking/tiny.py, scale_config's rule), then the fit. Resumable: rerun the same command. Prints the
README table (one JSON line per cell too) and copies the plots to docs/img/scaling/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS, SIZES = "2.5e11,5e11,1e12", "32,64,96,128"


def run(args: list[str]) -> None:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  subprocess.run([sys.executable, "-m", "shared.scaling", *args], cwd=ROOT, env=env, check=True)


def table(workdir: str) -> str:
  rows = [json.loads(l) for l in open(os.path.join(workdir, "summary.jsonl"))]
  fit = json.load(open(os.path.join(workdir, "fit.json")))
  widths = sorted({r["width"] for r in rows})
  budgets = sorted({r["budget"] for r in rows})
  by = {(r["budget"], r["width"]): r for r in rows}
  out = ["| budget (FLOPs) | " + " | ".join(f"width {w}" for w in widths) + " | N_opt (parabola) |",
         "|---|" + "---|" * (len(widths) + 1)]
  for b in budgets:
    fb = next(x for x in fit["budgets"] if x["budget"] == b)
    cells = [f"{by[b, w]['val_loss']:.3f} ({by[b, w]['steps']} st)" if (b, w) in by else "-" for w in widths]
    flags = f" ({', '.join(fb['flags'])})" if fb["flags"] else ""
    out.append(f"| {b:.3g} | " + " | ".join(cells) + f" | {fb['n_opt']:.3g}{flags} |")
  params = {w: by[next(k for k in by if k[1] == w)]["params_nonembed"] for w in widths}
  out.append("")
  out.append("non-embedding parameters: " + ", ".join(f"width {w}: {params[w]:,}" for w in widths))
  o = fit["optimal_size"]
  iv = o.get("interval") or [float("nan")] * 2
  out.append(f"N_opt ~ C^{o['exponent']:.3f} (95 % bootstrap interval [{iv[0]:.3f}, {iv[1]:.3f}])")
  fr = fit.get("frontier")
  if fr:
    ivs = fr.get("intervals", {})
    out.append("frontier L(C) = E + A (C/C0)^-b: " + ", ".join(
        f"{k} = {fr[k]:.3g}" + (f" [{ivs[k][0]:.3g}, {ivs[k][1]:.3g}]" if ivs.get(k) else "") for k in ("E", "A", "b")))
  for w in fit.get("warnings", []):
    out.append(f"warning: {w}")
  return "\n".join(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="/tmp/scaling_study")
  p.add_argument("--report-only", action="store_true", help="fit and print an existing sweep")
  a = p.parse_args()
  if not a.report_only:
    run(["sweep", "--config", "configs/unitalking/tiny.py", "--budgets", BUDGETS, "--sizes", SIZES,
         "--workdir", a.workdir])
  run(["fit", a.workdir])
  img = os.path.join(ROOT, "docs", "img", "scaling")
  os.makedirs(img, exist_ok=True)
  for name in ("isoflop.png", "frontier.png", "optimal_size.png", "residuals.png"):
    shutil.copy(os.path.join(a.workdir, name), os.path.join(img, name))
  for line in open(os.path.join(a.workdir, "summary.jsonl")):
    print(line.strip())
  print(table(a.workdir))


if __name__ == "__main__":
  main()
