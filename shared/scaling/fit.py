"""Scaling-law fits of a sweep: isoFLOP parabolas, the optimal-size exponent, the loss frontier.

Input: SWEEP/summary.jsonl, one JSON object per finished run (cell) with at least `budget` (the cell's compute
budget C, FLOPs), `params_nonembed` / `params` (N) and `val_loss`; `cell`, `tokens`, `flops_total` are used when
present, other keys are ignored. Rows whose val_loss is null / NaN / <= 0 are skipped and listed in the output.

What is fitted (`fit_sweep(SWEEP)` writes all of it to SWEEP/fit.json and the plots of shared.scaling.plots):

1. IsoFLOP profiles (Hoffmann et al. 2022, arXiv 2203.15556, "approach 2"). For each budget C (rows grouped by
   `budget`; a budget needs >= 3 distinct sizes, else it is skipped with a FitWarning) a parabola of val_loss in
   x = log10 N (N = params_nonembed, or params with size_key="params") by numpy least squares (x centred first):
     L(x) = c2 x^2 + c1 x + c0,   x* = -c1 / (2 c2),   N_opt(C) = 10^x*,   L_opt(C) = L(x*),
     D_opt(C) = C / (k N_opt),   k = median over the budget's rows of flops_total / (N tokens)   (k ~ 6 for a
   transformer with N non-embedding parameters; D_opt only where rows carry tokens and flops_total).
   Flags are reported (fit.json, FitWarning, hollow markers in the plots), never hidden:
     "opens_downward": c2 <= 0, no minimum: the budget is left out of the exponent fit, and the frontier uses
       its best observed run instead of the vertex;
     "vertex_below_range" / "vertex_above_range": x* outside the sampled sizes, an extrapolation: used (flagged)
       unless exclude_out_of_range=True, which treats it like "opens_downward".
2. Optimal size: least-squares line log10 N_opt = a log10 C + log10 k_N over the budgets with a minimum, so
   N_opt = k_N C^a (and D_opt = k_D C^a_tokens the same way; a + a_tokens ~ 1 when k is constant).
3. Frontier: L(C) = E + A (C / C0)^(-b), C0 = the smallest budget, so A is the reducible loss at C0 (O(1): the
   fit is well conditioned whatever the FLOP scale), A_raw = A C0^b gives L = E + A_raw C^-b.
   Points (frontier_points=): "vertex" (default): L_opt per budget, falling back to the budget's best observed
   loss where its parabola has no usable minimum; "best": the best observed run per budget (the lower envelope of
   all points), at its flops_total.
   Fit: scipy.optimize.least_squares over theta = (E, log A, log b), bounds 0 <= E < min L, on log-loss
   residuals r_i = (log L_fit(C_i) - log L_i) / sigma, plain least squares (loss="linear", default) or Huber
   (loss="huber", f_scale=huber_scale in sigma units; as in approach 3). sigma is the relative noise of a frontier
   point, estimated from the parabola residuals: pooled RMS of (L - L_fit) / L_fit over all budgets (dof
   n - 3 each), divided by sqrt(mean points per budget), floor 1e-4; 1 % when no budget has a spare point.
   It weighs the data against the E prior; it does not change the "pinned" / "free" fits.
   The irreducible loss E (e_mode=):
     "regularised" (default): E free with a weak Gaussian prior, one extra residual (E - mu) / s with
       mu = e_prior_mean * min L (default 0: "toward 0") and s = e_prior_sd * min L (default 1.0). Against
       residuals in sigma units (~0.1-1 %) this prior is weak: it decides E only where the data leave it flat
       (2 budgets, or points on a straight log-log line) and keeps the fit defined there; with 3-5 budgets the
       result is close to the free fit (on a planted law, 3 budgets: E within ~0.01 of "free"), so the honest
       statement of how well E is known is its bootstrap interval and the flag below. A stronger prior
       (smaller e_prior_sd, or a mean from elsewhere) or "pinned" is the choice when extrapolating far.
     "pinned": E fixed to `E` (a loss value) or to e_frac * min L; only A and b are fitted.
     "free": no prior, only the bounds; flagged "E_at_lower_bound" / "E_at_upper_bound" when one binds, and
       "exactly_determined" / "underdetermined" with 3 / 2 points. Use it with >= 4 budgets.
   Any mode: "E_poorly_constrained" (and a FitWarning) when E's bootstrap interval is wider than 0.25 x min L.
4. Intervals: nonparametric bootstrap (n_boot=1000, seed=0): the rows of each budget are resampled with
   replacement (same count), and the whole pipeline is redone on each resample: parabolas, vertices and
   flags, the exponent line, sigma, frontier points and the frontier fit (started from the full-data fit and
   from E = 0.3 min L). Intervals are the 2.5 / 97.5 percentiles over the resamples where that quantity
   could be fitted; the number that could not (fewer than 2 budgets with a minimum; a failed frontier fit) is
   reported. The plots' bands are the same percentiles of the curves evaluated per resample.
   Resampling 5-7 runs against a 3-parameter parabola understates the spread (roughly by sqrt((n - 3) / n)):
   on the planted law of the tests (4 budgets x 7 sizes, 0.5 % noise, 20 seeds) the 95 % intervals held the
   true exponent 20/20 times, the true E, A, b 17-18/20 times.

What Marin does (marin scaling_laws isoflop_analysis): per (dataset, budget) a Huber-robust quadratic of the
eval metric in log10 tokens, its vertex D*, then a least-squares line log10 D* = alpha log10 C + log10 A, with
N* taken as C / (6 D*); no frontier fit and no intervals. Here the fitted variable is N (what the sweep's cells
choose; D follows from C), plain least squares for the parabola (5-7 points a budget are too few to tell an
outlier from curvature; a bad point shows up in residuals.png), and bootstrap intervals.
Approach 3 of Hoffmann et al. fits L(N, D) = E + A/N^alpha + B/D^beta directly; its compute frontier is
E + K C^(-alpha beta / (alpha + beta)) with N_opt ~ C^(beta / (alpha + beta)), exactly the two forms fitted here
(tests/scaling/test_fit.py plants such a law and recovers a, E, A, b). SPECS.md: E must be pinned or
regularised before extrapolating the frontier; with 3-5 budgets, read its interval before trusting it.

  result = fit_sweep("runs/sweep1")                 # -> dict, also runs/sweep1/fit.json + 4 PNGs
  result["optimal_size"]["exponent"], result["optimal_size"]["interval"]
  result["frontier"]["E"], result["frontier"]["intervals"]["E"]
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from shared.errors import ConfigError

SUMMARY = "summary.jsonl"
FIT_JSON = "fit.json"
PERCENTILES = (2.5, 97.5)
DEFAULT_SIGMA = 0.01
SIGMA_FLOOR = 1e-4
WIDE_E = 0.25   # flag "E_poorly_constrained" when E's interval is wider than this fraction of min L
DEFAULTS = dict(size_key="params_nonembed", exclude_out_of_range=False, frontier_points="vertex",
                e_mode="regularised", E=None, e_frac=None, e_prior_mean=0.0, e_prior_sd=1.0, loss="linear",
                huber_scale=1.5, n_boot=1000, seed=0)
CHOICES = dict(size_key=("params_nonembed", "params"), frontier_points=("vertex", "best"),
               e_mode=("regularised", "pinned", "free"), loss=("linear", "huber"))


class FitWarning(UserWarning):
  """A budget skipped or a fit flagged; the same text is kept in the result's `warnings`."""


@dataclass
class Budget:
  """One budget's usable runs, sorted by size. All arrays [n] float64 (n >= 3 distinct sizes).

  budget: C (FLOPs); cells: run names; n: parameters (size_key); x: log10 n; loss: val_loss;
  flops: flops_total (C where absent); tokens: training tokens (0 where absent).
  """
  budget: float
  cells: list
  n: np.ndarray
  x: np.ndarray
  loss: np.ndarray
  flops: np.ndarray
  tokens: np.ndarray


# ---------------------------------------------------------------- options and rows

def resolve_options(options: dict) -> dict:
  """DEFAULTS updated with `options`; ConfigError naming an unknown option or a bad value."""
  unknown = sorted(set(options) - set(DEFAULTS))
  if unknown:
    raise ConfigError(f"unknown fit option(s) {unknown}; known: {sorted(DEFAULTS)}")
  opts = {**DEFAULTS, **options}
  for key, allowed in CHOICES.items():
    if opts[key] not in allowed:
      raise ConfigError(f"fit option {key}={opts[key]!r}: expected one of {list(allowed)}")
  if opts["e_mode"] == "pinned" and opts["E"] is None and opts["e_frac"] is None:
    raise ConfigError("fit option e_mode='pinned' needs E= (a loss value) or e_frac= (a fraction of the smallest "
                      "frontier loss)")
  if int(opts["n_boot"]) < 0 or float(opts["e_prior_sd"]) <= 0 or float(opts["huber_scale"]) <= 0:
    raise ConfigError(f"fit options n_boot >= 0, e_prior_sd > 0, huber_scale > 0 expected, got n_boot="
                      f"{opts['n_boot']}, e_prior_sd={opts['e_prior_sd']}, huber_scale={opts['huber_scale']}")
  return opts


def read_summary(path: str) -> list:
  """Rows of a summary.jsonl (dicts, each with "_line": its 1-based line number); blank lines are ignored."""
  if not os.path.isfile(path):
    raise ConfigError(f"no sweep summary at {path}: expected one JSON object per finished run (has the sweep "
                      f"finished a run?)")
  rows = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ConfigError(f"{path} line {i}: not valid JSON ({e.msg}, column {e.colno})") from None
      if not isinstance(row, dict):
        raise ConfigError(f"{path} line {i}: expected a JSON object, got {type(row).__name__}")
      rows.append({**row, "_line": i})
  return rows


def _number(v) -> float | None:
  """float(v) for a real JSON number (not bool / str / null), else None."""
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return None
  return float(v)


def clean_rows(rows: list, size_key: str) -> tuple[list, list]:
  """(usable rows, skipped [{where, cell, reason}]); ConfigError for a row without a positive budget / size."""
  kept, skipped = [], []
  for i, row in enumerate(rows):
    where = f"line {row['_line']}" if "_line" in row else f"row {i}"
    cell = row.get("cell", "?")
    for key in ("budget", size_key):
      v = _number(row.get(key))
      if v is None or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"summary {where} (cell {cell}): key {key!r} must be a positive number, "
                          f"got {row.get(key)!r}")
    loss = row.get("val_loss")
    lv = _number(loss)
    if loss is not None and lv is None:
      raise ConfigError(f"summary {where} (cell {cell}): key 'val_loss' must be a number or null, got {loss!r}")
    if lv is None or not math.isfinite(lv) or lv <= 0:
      skipped.append({"where": where, "cell": cell, "reason": f"val_loss is {loss!r}"})
      continue
    kept.append(row)
  return kept, skipped


def group_budgets(rows: list, size_key: str) -> tuple[list, list]:
  """(budgets [Budget] by increasing C, warnings); budgets with < 3 distinct sizes are skipped with a warning.

  ConfigError when fewer than 2 budgets remain.
  """
  by = {}
  for row in rows:
    by.setdefault(float(row["budget"]), []).append(row)
  budgets, notes = [], []
  for c in sorted(by):
    rs = sorted(by[c], key=lambda r: float(r[size_key]))
    n = np.array([r[size_key] for r in rs], np.float64)
    if len(np.unique(n)) < 3:
      notes.append(_warn(f"budget {c:.4g} FLOPs has {len(np.unique(n))} distinct size(s) "
                         f"({sorted({r.get('cell', '?') for r in rs})}); a parabola needs 3: budget skipped"))
      continue
    get = lambda key, fill: np.array([_number(r.get(key)) or fill for r in rs], np.float64)  # noqa: E731
    budgets.append(Budget(budget=c, cells=[str(r.get("cell", "?")) for r in rs], n=n, x=np.log10(n),
                          loss=get("val_loss", np.nan), flops=get("flops_total", c), tokens=get("tokens", 0.0)))
  if len(budgets) < 2:
    raise ConfigError(f"{len(budgets)} budget(s) with >= 3 sizes ({[b.budget for b in budgets]}, all budgets: "
                      f"{sorted(by)}); the scaling fit needs at least 2")
  return budgets, notes


def _warn(message: str) -> str:
  warnings.warn(message, FitWarning, stacklevel=3)
  return message


# ---------------------------------------------------------------- isoFLOP parabolas and the exponent

def parabola(x: np.ndarray, y: np.ndarray) -> dict:
  """Least-squares L = c2 x^2 + c1 x + c0 on x [n], y [n] (x centred for the solve).

  -> {coef [c2, c1, c0], x_opt, l_opt (None without a minimum), opens_downward, residuals [n], dof}.
  """
  xc = float(x.mean())
  u = x - xc
  design = np.stack([u * u, u, np.ones_like(u)], axis=1)
  (p2, p1, p0), *_ = np.linalg.lstsq(design, y, rcond=None)
  resid = y - design @ np.array([p2, p1, p0])
  coef = [p2, p1 - 2 * p2 * xc, p2 * xc * xc - p1 * xc + p0]
  down = not p2 > 0
  x_opt = None if down else xc - p1 / (2 * p2)
  l_opt = None if down else p0 - p1 * p1 / (4 * p2)
  return dict(coef=[float(c) for c in coef], x_opt=x_opt, l_opt=l_opt, opens_downward=down, residuals=resid,
              dof=len(np.unique(x)) - 3)


def budget_vertex(b: Budget, opts: dict, idx: np.ndarray | None = None) -> dict:
  """The parabola of one budget (its rows, or the resample `idx` [n] of them) -> vertex, flags, D_opt."""
  x, y = (b.x, b.loss) if idx is None else (b.x[idx], b.loss[idx])
  if len(np.unique(x)) < 3:   # only in a resample
    p = dict(coef=None, x_opt=None, l_opt=None, opens_downward=True, residuals=np.zeros(0), dof=-1)
  else:
    p = parabola(x, y)
  flags = ["opens_downward"] if p["opens_downward"] else []
  if p["x_opt"] is not None and p["x_opt"] < x.min():
    flags.append("vertex_below_range")
  if p["x_opt"] is not None and p["x_opt"] > x.max():
    flags.append("vertex_above_range")
  usable = p["x_opt"] is not None and not (opts["exclude_out_of_range"] and flags)
  best = int(np.argmin(y))
  sel = np.arange(len(b.x)) if idx is None else idx
  k = _flops_per_param_token(b, sel)
  n_opt = None if p["x_opt"] is None else 10.0 ** p["x_opt"]
  d_opt = None if (n_opt is None or k is None) else b.budget / (k * n_opt)
  return dict(p, flags=flags, usable=usable, n_opt=n_opt, d_opt=d_opt, flops_per_param_token=k,
              best_loss=float(y[best]), best_flops=float(b.flops[sel][best]), n_points=len(y),
              fit_l=y - p["residuals"] if len(p["residuals"]) else y)


def _flops_per_param_token(b: Budget, sel: np.ndarray) -> float | None:
  """median flops_total / (N tokens) over the rows `sel` that carry tokens (None if none do)."""
  ok = sel[b.tokens[sel] > 0]
  if len(ok) == 0:
    return None
  return float(np.median(b.flops[ok] / (b.n[ok] * b.tokens[ok])))


def power_line(c: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
  """Least-squares log10 y = slope log10 c + intercept -> (slope, intercept), None with < 2 distinct c."""
  if len(np.unique(c)) < 2:
    return None
  slope, intercept = np.polyfit(np.log10(c), np.log10(y), 1)
  return float(slope), float(intercept)


def exponent_fit(budgets: list, verts: list) -> dict:
  """N_opt = 10^intercept C^exponent (and the same for D_opt) over the budgets with a usable vertex."""
  use = [i for i, v in enumerate(verts) if v["usable"]]
  c = np.array([budgets[i].budget for i in use])
  line = power_line(c, np.array([verts[i]["n_opt"] for i in use])) if use else None
  with_d = [i for i in use if verts[i]["d_opt"] is not None]
  dline = power_line(np.array([budgets[i].budget for i in with_d]),
                     np.array([verts[i]["d_opt"] for i in with_d])) if with_d else None
  return dict(exponent=None if line is None else line[0], log10_coef=None if line is None else line[1],
              tokens_exponent=None if dline is None else dline[0],
              tokens_log10_coef=None if dline is None else dline[1],
              budgets_used=[budgets[i].budget for i in use])


def vertex_sigma(verts: list) -> tuple[float, str]:
  """Relative noise of a frontier point from the parabola residuals -> (sigma, how it was obtained)."""
  num, dof, npts = 0.0, 0, []
  for v in verts:
    if v["coef"] is None:
      continue
    num += float(np.sum((v["residuals"] / v["fit_l"]) ** 2))
    dof += max(v["dof"], 0)
    npts.append(v["n_points"])
  if dof == 0:
    return DEFAULT_SIGMA, f"assumed {DEFAULT_SIGMA} (no budget has more than 3 sizes)"
  s = math.sqrt(num / dof) / math.sqrt(float(np.mean(npts)))
  return max(s, SIGMA_FLOOR), "pooled parabola residual RMS / sqrt(points per budget)"


def frontier_points(budgets: list, verts: list, mode: str) -> list:
  """[{budget, loss, source}] per budget: the vertex or, where unusable / mode "best", the best observed run."""
  pts = []
  for b, v in zip(budgets, verts):
    if mode == "vertex" and v["usable"]:
      pts.append(dict(budget=b.budget, loss=float(v["l_opt"]), source="vertex"))
    else:
      pts.append(dict(budget=b.budget if mode == "vertex" else v["best_flops"], loss=v["best_loss"],
                      source="best_observed"))
  return pts


# ---------------------------------------------------------------- frontier

def _pinned_e(l_min: float, opts: dict) -> float:
  e = float(opts["E"]) if opts["E"] is not None else float(opts["e_frac"]) * l_min
  if not 0 <= e < l_min:
    raise ConfigError(f"pinned E={e:.6g} must lie in [0, {l_min:.6g}) (below the smallest frontier loss)")
  return e


def frontier_fit(points: list, sigma: float = DEFAULT_SIGMA, starts: list | None = None,
                 spread: tuple = (0.3, 0.8), **options) -> dict:
  """Fit L(C) = E + A (C/C0)^(-b) to points [{budget: C, loss: L}] (>= 2 distinct C); see the module doc.

  options: e_mode, E, e_frac, e_prior_mean, e_prior_sd, loss, huber_scale (any fit option is accepted).
  Starts: E = f x min L for f in `spread` (A, b from a line through log(L - E)), plus the (E, A, b) triples in
  `starts`; the lowest cost wins.
  -> {form, E, A, A_raw, b, C0, e_mode, E_source, prior, loss, sigma, cost, flags, points}.
  """
  opts = resolve_options(options)
  c = np.array([p["budget"] for p in points], np.float64)
  y = np.array([p["loss"] for p in points], np.float64)
  if len(np.unique(c)) < 2 or not np.all(np.isfinite(y) & (y > 0)):
    raise ConfigError(f"frontier fit needs >= 2 distinct budgets with positive losses, got C={c.tolist()}, "
                      f"L={y.tolist()}")
  c0, l_min = float(c.min()), float(y.min())
  t = np.log(c / c0)
  mode = opts["e_mode"]
  e_fixed = _pinned_e(l_min, opts) if mode == "pinned" else None
  prior = None
  if mode == "regularised":
    prior = dict(mean=float(opts["e_prior_mean"]) * l_min, sd=float(opts["e_prior_sd"]) * l_min)

  def unpack(theta):
    return (e_fixed, theta[0], theta[1]) if mode == "pinned" else tuple(theta)

  def residuals(theta):
    e, log_a, log_b = unpack(theta)
    r = (np.log(e + np.exp(log_a - np.exp(log_b) * t)) - np.log(y)) / sigma
    return np.append(r, (e - prior["mean"]) / prior["sd"]) if prior else r

  def jacobian(theta):   # d r / d theta [n (+1), 3 or 2]
    e, log_a, log_b = unpack(theta)
    p = np.exp(log_a - np.exp(log_b) * t)
    m = (e + p) * sigma
    jac = np.stack([1 / m, p / m, -p * np.exp(log_b) * t / m], axis=1)
    if mode == "pinned":
      return jac[:, 1:]
    return np.concatenate([jac, [[1 / prior["sd"], 0.0, 0.0]]]) if prior else jac

  e_hi = l_min * (1 - 1e-9)
  lo = np.array([0.0, math.log(1e-9 * l_min), math.log(1e-4)])
  hi = np.array([e_hi, math.log(1e4 * l_min), math.log(10.0)])
  if mode == "pinned":
    lo, hi = lo[1:], hi[1:]
  inits = [_pinned_e(l_min, opts)] if mode == "pinned" else [f * l_min for f in spread]
  theta0s = [_start(t, y, e) for e in inits] + [(e, math.log(a), math.log(b)) for e, a, b in (starts or [])]
  best = None
  for th in theta0s:
    th = np.array(th[1:] if mode == "pinned" else th, np.float64)
    th = np.clip(th, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
    res = least_squares(residuals, th, jac=jacobian, bounds=(lo, hi), loss=opts["loss"],
                        f_scale=float(opts["huber_scale"]), x_scale="jac")
    if best is None or res.cost < best.cost:
      best = res
  e, log_a, log_b = unpack(best.x)
  a, b = math.exp(log_a), math.exp(log_b)
  flags = _frontier_flags(mode, e, e_hi, log_b, lo[-1], hi[-1], len(points))
  return dict(form="L(C) = E + A * (C / C0)^(-b)", E=float(e), A=a, A_raw=a * c0 ** b, b=b, C0=c0, e_mode=mode,
              E_source=_e_source(mode, opts, e), prior=prior, loss=opts["loss"], sigma=float(sigma),
              cost=float(best.cost), flags=flags, points=points)


def _start(t: np.ndarray, y: np.ndarray, e: float) -> tuple[float, float, float]:
  """(E, log A, log b) start: a line through log(L - E) vs log(C / C0)."""
  slope, intercept = np.polyfit(t, np.log(np.maximum(y - e, 1e-12 * y)), 1)
  return e, float(intercept), math.log(min(max(-slope, 1e-3), 5.0))


def _frontier_flags(mode, e, e_hi, log_b, log_b_lo, log_b_hi, n) -> list:
  flags = []
  if mode != "pinned" and e <= 1e-6 * e_hi:
    flags.append("E_at_lower_bound")
  if mode != "pinned" and e >= e_hi * (1 - 1e-6):
    flags.append("E_at_upper_bound")
  if log_b <= log_b_lo + 1e-6 or log_b >= log_b_hi - 1e-6:
    flags.append("b_at_bound")
  if mode == "free" and n <= 3:
    flags.append("exactly_determined" if n == 3 else "underdetermined")
  return flags


def _e_source(mode: str, opts: dict, e: float) -> str:
  if mode == "pinned":
    return f"pinned: E={opts['E']}" if opts["E"] is not None else f"pinned: e_frac={opts['e_frac']} x min L"
  if mode == "regularised":
    return (f"fitted with a Gaussian prior (mean {opts['e_prior_mean']} x min L, sd {opts['e_prior_sd']} x "
            f"min L) against residuals in units of sigma")
  return "fitted freely (bounds 0 <= E < min L only)"


# ---------------------------------------------------------------- the pipeline and its bootstrap

def _pipeline(budgets: list, opts: dict, idxs: list | None = None, starts: list | None = None,
              frontier: bool = True) -> tuple[list, dict, dict | None]:
  """verts, exponent fit, frontier fit (None when not asked / failed) on the rows or a resample `idxs`.

  A resample's frontier fit starts from the full-data fit (`starts`) and E = 0.3 min L; the full fit from
  E = 0.3 and 0.8 min L.
  """
  verts = [budget_vertex(b, opts, None if idxs is None else i)
           for b, i in zip(budgets, idxs or [None] * len(budgets))]
  exp = exponent_fit(budgets, verts)
  fr = None
  if frontier:
    sigma, how = vertex_sigma(verts)
    pts = frontier_points(budgets, verts, opts["frontier_points"])
    try:
      fr = frontier_fit(pts, sigma=sigma, starts=starts, spread=(0.3, 0.8) if starts is None else (0.3,), **opts)
      fr["sigma_source"] = how
    except (ValueError, FloatingPointError):   # only a resample can fail here: the full fit ran first
      if idxs is None:
        raise
  return verts, exp, fr


def bootstrap(budgets: list, opts: dict, main_frontier: dict | None) -> dict:
  """{name: [n_boot] array (NaN where not fitted)} for exponent, log10_coef, tokens_exponent, E, A, b."""
  n_boot = int(opts["n_boot"])
  rng = np.random.default_rng(int(opts["seed"]))
  names = ("exponent", "log10_coef", "tokens_exponent", "tokens_log10_coef", "E", "A", "b")
  out = {k: np.full(n_boot, np.nan) for k in names}
  starts = None if main_frontier is None else [(main_frontier["E"], main_frontier["A"], main_frontier["b"])]
  for i in range(n_boot):
    idxs = [rng.integers(0, len(b.x), len(b.x)) for b in budgets]
    _, exp, fr = _pipeline(budgets, opts, idxs, starts, frontier=main_frontier is not None)
    for k in names[:4]:
      if exp[k] is not None:
        out[k][i] = exp[k]
    if fr is not None:
      for k in names[4:]:
        out[k][i] = fr[k]
  return out


def interval(samples: np.ndarray) -> list | None:
  """[2.5, 97.5] percentiles of the finite samples, None if there are none."""
  s = samples[np.isfinite(samples)]
  return None if len(s) == 0 else [float(v) for v in np.percentile(s, PERCENTILES)]


def _band(grid: np.ndarray, curves: np.ndarray) -> dict:
  """Percentile band of curves [n_samples, n_grid] (NaN rows dropped) on grid [n_grid]."""
  curves = curves[np.all(np.isfinite(curves), axis=1)]
  if len(curves) == 0:
    return dict(budget=grid.tolist(), lo=None, hi=None)
  lo, hi = np.percentile(curves, PERCENTILES, axis=0)
  return dict(budget=grid.tolist(), lo=lo.tolist(), hi=hi.tolist())


# ---------------------------------------------------------------- public entry points

def isoflop_fit(rows: list, **options) -> dict:
  """IsoFLOP parabolas per budget + the optimal-size exponent with its bootstrap interval (no frontier).

  rows: summary dicts (see the module doc). options: size_key, exclude_out_of_range, n_boot, seed.
  -> {budgets: [...], optimal_size: {...}, rows: {...}, warnings: [...]} (the same keys as fit_rows).
  """
  return fit_rows(rows, _frontier=False, **options)


def fit_rows(rows: list, _frontier: bool = True, **options) -> dict:
  """The whole fit of summary rows (no files): isoflop parabolas, exponent, frontier, bootstrap intervals."""
  opts = resolve_options(options)
  kept, skipped = clean_rows(rows, opts["size_key"])
  budgets, notes = group_budgets(kept, opts["size_key"])
  budgets_skipped = list(notes)
  verts, exp, fr = _pipeline(budgets, opts, frontier=_frontier)
  notes += [_warn(f"budget {b.budget:.4g} FLOPs: parabola {', '.join(v['flags'])}"
                  + ("" if v["usable"] else ": not used for the exponent")) for b, v in zip(budgets, verts)
            if v["flags"]]
  if exp["exponent"] is None:
    notes.append(_warn(f"fewer than 2 budgets have a usable parabola minimum ({exp['budgets_used']}): "
                       f"no optimal-size exponent"))
  if fr is not None and fr["flags"]:
    notes.append(_warn(f"frontier fit flagged {fr['flags']} (e_mode={fr['e_mode']})"))
  boot = bootstrap(budgets, opts, fr) if opts["n_boot"] > 0 else None
  result = dict(
      options=opts, x_variable=f"log10({opts['size_key']})",
      rows=dict(total=len(rows), used=sum(len(b.x) for b in budgets), skipped=skipped,
                budgets_skipped=budgets_skipped),
      budgets=[_budget_json(b, v) for b, v in zip(budgets, verts)],
      optimal_size=_optimal_json(budgets, exp, boot),
      bootstrap=None if boot is None else dict(n=opts["n_boot"], seed=opts["seed"], percentiles=list(PERCENTILES),
                                                resampling="rows with replacement within each budget",
                                                n_failed={k: int(np.sum(~np.isfinite(v))) for k, v in boot.items()}),
      warnings=notes)
  if fr is not None:
    result["frontier"] = _frontier_json(budgets, fr, boot)
    iv, l_min = result["frontier"].get("intervals", {}).get("E"), min(p["loss"] for p in fr["points"])
    if iv is not None and iv[1] - iv[0] > WIDE_E * l_min:
      result["frontier"]["flags"] = fr["flags"] + ["E_poorly_constrained"]
      notes.append(_warn(f"frontier E interval [{iv[0]:.4g}, {iv[1]:.4g}] spans more than {WIDE_E} x the smallest "
                         f"frontier loss {l_min:.4g}: pin E (e_mode='pinned') or add budgets before extrapolating"))
  return _clean_json(result)


def fit_sweep(sweep_dir: str, plots: bool = True, **options) -> dict:
  """Fit SWEEP/summary.jsonl, write SWEEP/fit.json and (plots=True) the PNGs of shared.scaling.plots -> dict."""
  rows = read_summary(os.path.join(sweep_dir, SUMMARY))
  result = fit_rows(rows, **options)
  result["sweep"] = os.path.abspath(sweep_dir)
  if plots:
    from shared.scaling import plots as plotting
    result["plots"] = [os.path.basename(p) for p in plotting.write_all(result, sweep_dir)]
  path = os.path.join(sweep_dir, FIT_JSON)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1, allow_nan=False)
  os.replace(path + ".tmp", path)
  return result


# ---------------------------------------------------------------- JSON

def _budget_json(b: Budget, v: dict) -> dict:
  return dict(budget=b.budget, cells=b.cells, params=b.n.tolist(), val_loss=b.loss.tolist(),
              flops_total=b.flops.tolist(), tokens=b.tokens.tolist(), n_points=len(b.x),
              parabola=dict(coef=v["coef"], residuals=v["residuals"].tolist(),
                            rms_residual=float(np.sqrt(np.mean(v["residuals"] ** 2)))),
              log10_n_opt=v["x_opt"], n_opt=v["n_opt"], l_opt=v["l_opt"], d_opt=v["d_opt"],
              flops_per_param_token=v["flops_per_param_token"], flags=v["flags"], used_for_exponent=v["usable"],
              best_observed=dict(val_loss=v["best_loss"], flops_total=v["best_flops"],
                                 cell=b.cells[int(np.argmin(b.loss))]))


def _optimal_json(budgets: list, exp: dict, boot: dict | None) -> dict:
  out = dict(form="N_opt = 10^log10_coef * C^exponent", **exp)
  cs = np.array([b.budget for b in budgets])
  grid = np.geomspace(cs.min() / 2, cs.max() * 2, 40)
  if boot is not None:
    out["interval"] = interval(boot["exponent"])
    out["tokens_interval"] = interval(boot["tokens_exponent"])
    curves = 10.0 ** (boot["log10_coef"][:, None] + boot["exponent"][:, None] * np.log10(grid)[None])
    out["band"] = _band(grid, curves)
  return out


def _frontier_json(budgets: list, fr: dict, boot: dict | None) -> dict:
  out = dict(fr)
  cs = np.array([b.budget for b in budgets])
  grid = np.geomspace(cs.min() / 2, cs.max() * 4, 60)
  if boot is not None:
    out["intervals"] = {k: interval(boot[k]) for k in ("E", "A", "b")}
    e, a, b = (boot[k][:, None] for k in ("E", "A", "b"))
    out["band"] = _band(grid, e + a * (grid[None] / fr["C0"]) ** (-b))
  return out


def _clean_json(obj):
  """NaN / inf -> None, numpy scalars -> Python, recursively (fit.json is strict JSON)."""
  if isinstance(obj, dict):
    return {k: _clean_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean_json(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _clean_json(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  return obj
