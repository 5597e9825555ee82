"""PNG plots of a scaling fit (the dict of shared.scaling.fit.fit_rows / SWEEP/fit.json).

  isoflop.png        val loss vs parameters per budget (log x): points, fitted parabolas, vertices
  frontier.png       frontier loss vs compute (log-log): points, E + A (C/C0)^-b, bootstrap band, E dashed
  optimal_size.png   N_opt vs compute (log-log): vertices, the fitted power law and its bootstrap band
  residuals.png      loss - parabola per run vs parameters, one colour per budget

Vertices flagged by the fit (no minimum, outside the sampled sizes, not used) are drawn hollow. Figures are built
with matplotlib.figure.Figure (Agg canvas, no pyplot, no display, no global backend switch), so plotting is safe
in a headless job and alongside other matplotlib users. Everything is read from the fit dict: the plots of an
old sweep can be redrawn from its fit.json alone (`write_all(json.load(open(".../fit.json")), out_dir)`).
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

FILES = ("isoflop.png", "frontier.png", "optimal_size.png", "residuals.png")


def write_all(fit: dict, out_dir: str) -> list:
  """The four PNGs of `fit` into out_dir -> their paths (in FILES order)."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, draw in zip(FILES, (isoflop, frontier, optimal_size, residuals)):
    fig = Figure(figsize=(7.0, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    draw(fit, fig.add_subplot(1, 1, 1))
    fig.tight_layout()
    paths.append(os.path.join(out_dir, name))
    fig.savefig(paths[-1])
  return paths


def _colours(fit: dict) -> list:
  n = len(fit["budgets"])
  cmap = colormaps["viridis"]
  return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def _size_label(fit: dict) -> str:
  return f"model size N ({fit['options']['size_key']}, parameters)"


def _fmt(v, spec=".3g") -> str:
  return "n/a" if v is None else format(v, spec)


def _interval(iv) -> str:
  return "" if not iv else f" [{iv[0]:.3g}, {iv[1]:.3g}]"


def isoflop(fit: dict, ax) -> None:
  """Points, parabolas (over the sampled sizes, extended to an outside vertex) and vertices per budget."""
  for b, col in zip(fit["budgets"], _colours(fit)):
    n = np.asarray(b["params"])
    ax.scatter(n, b["val_loss"], color=col, s=18, label=f"C = {b['budget']:.3g} FLOPs")
    if b["parabola"]["coef"] is None:
      continue
    lo, hi = np.log10(n.min()) - 0.05, np.log10(n.max()) + 0.05
    if b["log10_n_opt"] is not None:
      lo, hi = min(lo, b["log10_n_opt"] - 0.05), max(hi, b["log10_n_opt"] + 0.05)
    x = np.linspace(lo, hi, 100)
    ax.plot(10 ** x, np.polyval(b["parabola"]["coef"], x), color=col, lw=1.2)
    if b["n_opt"] is not None:
      hollow = bool(b["flags"])
      ax.scatter([b["n_opt"]], [b["l_opt"]], marker="*", s=140, edgecolors=col, linewidths=1.2,
                 facecolors="none" if hollow else col, zorder=3)
  ax.set_xscale("log")
  ax.set_xlabel(_size_label(fit))
  ax.set_ylabel("validation loss")
  ax.set_title("IsoFLOP profiles (stars: parabola vertices; hollow: flagged)")
  ax.legend(fontsize=8)


def frontier(fit: dict, ax) -> None:
  """Frontier points, the fitted E + A (C/C0)^-b with its band, E as a dashed line."""
  fr = fit.get("frontier")
  if fr is None:
    ax.text(0.5, 0.5, "no frontier fit", ha="center", transform=ax.transAxes)
    return
  for p, col in zip(fr["points"], _colours(fit)):
    vertex = p["source"] == "vertex"
    ax.scatter([p["budget"]], [p["loss"]], s=40, edgecolors=col, facecolors=col if vertex else "none", zorder=3)
  band = fr.get("band") or {}
  c = np.asarray(band.get("budget") or np.geomspace(fr["C0"], max(p["budget"] for p in fr["points"]) * 4, 60))
  ax.plot(c, fr["E"] + fr["A"] * (c / fr["C0"]) ** (-fr["b"]), color="k", lw=1.2,
          label=f"E + A (C/C0)^-b: E={fr['E']:.3g}, A={fr['A']:.3g}, b={fr['b']:.3g}")
  if band.get("lo") is not None:
    ax.fill_between(c, band["lo"], band["hi"], color="0.6", alpha=0.35, label="bootstrap 2.5-97.5 %")
  if fr["E"] > 0:
    ax.axhline(fr["E"], color="k", ls="--", lw=1.0, label=f"E = {fr['E']:.3g} ({fr['e_mode']})")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.yaxis.set_major_formatter(ScalarFormatter())
  ax.yaxis.set_minor_formatter(ScalarFormatter())
  ax.set_xlabel("compute C (FLOPs)")
  ax.set_ylabel("frontier validation loss (log scale)")
  ax.set_title(f"Loss frontier ({fit['options']['frontier_points']} points; hollow: best observed run)")
  ax.legend(fontsize=8)


def optimal_size(fit: dict, ax) -> None:
  """N_opt per budget (hollow where not used) and the fitted N_opt = k C^a with its band."""
  opt = fit["optimal_size"]
  for b, col in zip(fit["budgets"], _colours(fit)):
    if b["n_opt"] is not None:
      used = b["used_for_exponent"] and not b["flags"]
      ax.scatter([b["budget"]], [b["n_opt"]], s=40, edgecolors=col, facecolors=col if used else "none", zorder=3)
  if opt["exponent"] is not None:
    band = opt.get("band") or {}
    c = np.asarray(band.get("budget") or [b["budget"] for b in fit["budgets"]])
    ax.plot(c, 10 ** (opt["log10_coef"] + opt["exponent"] * np.log10(c)), color="k", lw=1.2,
            label=f"N_opt ∝ C^a, a = {opt['exponent']:.3f}{_interval(opt.get('interval'))}")
    if band.get("lo") is not None:
      ax.fill_between(c, band["lo"], band["hi"], color="0.6", alpha=0.35, label="bootstrap 2.5-97.5 %")
    ax.legend(fontsize=8)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("compute C (FLOPs)")
  ax.set_ylabel(f"optimal size N_opt ({fit['options']['size_key']}, parameters)")
  ax.set_title("Compute-optimal model size (hollow: flagged or unused vertex)")


def residuals(fit: dict, ax) -> None:
  """val_loss - parabola for every run, per budget."""
  for b, col in zip(fit["budgets"], _colours(fit)):
    r = b["parabola"]["residuals"]
    if r:
      ax.plot(b["params"], r, "o-", color=col, ms=4, lw=0.8,
              label=f"C = {b['budget']:.3g} FLOPs (rms {_fmt(b['parabola']['rms_residual'])})")
  ax.axhline(0.0, color="k", lw=0.8)
  ax.set_xscale("log")
  ax.set_xlabel(_size_label(fit))
  ax.set_ylabel("val loss - parabola fit (loss units)")
  ax.set_title("IsoFLOP parabola residuals")
  ax.legend(fontsize=8)
