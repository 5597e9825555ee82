"""shared.scaling.fit / plots: planted scaling laws are recovered within their bootstrap intervals; fit.json + PNGs.

The planted law is Chinchilla's approach-3 fit, L(N, D) = E + A/N^alpha + B/D^beta with D = C / (6N)
(E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28). Its compute-optimal size is N_opt = G (C/6)^a with
a = beta / (alpha + beta), G = (alpha A / (beta B))^(1 / (alpha + beta)), and its frontier is
L(C) = E + K C^-b with b = alpha beta / (alpha + beta), K = (A G^-alpha + B G^beta) 6^b: the analytic oracle
(checked against a brute-force minimum over N below).
"""
import json
import math
import os

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.scaling import fit as F

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
A_TRUE = BETA / (ALPHA + BETA)                     # optimal-size exponent
B_TRUE = ALPHA * BETA / (ALPHA + BETA)             # frontier exponent
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
K = (A * G ** -ALPHA + B * G ** BETA) * 6 ** B_TRUE
BUDGETS = (1e18, 1e19, 1e20, 1e21)


def law(n, c):
  return E + A / n ** ALPHA + B / (c / (6 * n)) ** BETA


def n_opt(c):
  return G * (c / 6) ** A_TRUE


def planted_rows(budgets=BUDGETS, offsets=np.linspace(-0.8, 0.8, 7), noise=0.0, seed=0, ladder=None):
  """Summary rows: sizes at log10 offsets around the true optimum, or the 7 rungs of a global log10 ladder
  (step `ladder`) nearest to it; multiplicative Gaussian noise."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in budgets:
    if ladder is None:
      xs = math.log10(n_opt(c)) + np.asarray(offsets)
    else:
      xs = round(math.log10(n_opt(c)) / ladder) * ladder + ladder * np.arange(-3, 4)
    for j, x in enumerate(xs):
      n = 10.0 ** x
      loss = law(n, c) * (1 + noise * rng.standard_normal())
      rows.append(dict(cell=f"C{c:.0e}_s{j}", budget=c, size=f"s{j}", params=int(n * 1.2), params_nonembed=int(n),
                       flops_per_step=c / 1000, steps=1000, flops_total=c * 1.001, examples=1000,
                       tokens=int(c / (6 * n)), val_loss=loss, wall_s=1.0, mfu=None))
  return rows


def write_sweep(d, rows, extra_lines=()):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "summary.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
    for line in extra_lines:
      f.write(line + "\n")
  return str(d)


def test_oracle_matches_brute_force_minimum():
  for c in (1e18, 1e21):
    n = np.geomspace(n_opt(c) / 30, n_opt(c) * 30, 400001)
    loss = law(n, c)
    assert abs(math.log10(n[np.argmin(loss)] / n_opt(c))) < 1e-4
    assert loss.min() == pytest.approx(E + K * c ** -B_TRUE, rel=1e-9)


def test_noiseless_recovery():
  # sizes at the same offsets around each optimum: every isoFLOP curve has the same shape in log N, so the
  # parabola's vertex bias is the same for every budget and the exponent is exact
  r = F.fit_rows(planted_rows(), n_boot=0)
  assert abs(r["optimal_size"]["exponent"] - A_TRUE) < 1e-6
  assert abs(r["optimal_size"]["tokens_exponent"] - (1 - A_TRUE)) < 1e-6
  for b in r["budgets"]:
    assert b["flags"] == [] and b["used_for_exponent"]
    assert abs(b["log10_n_opt"] - math.log10(n_opt(b["budget"]))) < 0.02   # parabola vs the true curve: small bias
    assert b["flops_per_param_token"] == pytest.approx(6.0, rel=1e-2)
  # a shared size ladder (the realistic grid): off-centre by up to half a rung, differently per budget
  for step in (0.2, 0.3):
    r = F.fit_rows(planted_rows(ladder=step), n_boot=0)
    assert abs(r["optimal_size"]["exponent"] - A_TRUE) < 1e-2
    fr = r["frontier"]
    assert abs(fr["E"] - E) < 0.03 and abs(fr["b"] - B_TRUE) < 3e-3
    assert fr["A"] == pytest.approx(K * fr["C0"] ** -B_TRUE, rel=0.01)


def test_noisy_recovery_within_bootstrap_intervals():
  r = F.fit_rows(planted_rows(noise=0.005, seed=0), n_boot=200, seed=0)
  opt, fr = r["optimal_size"], r["frontier"]
  lo, hi = opt["interval"]
  assert lo <= A_TRUE <= hi and hi - lo < 0.2, opt
  assert lo <= opt["exponent"] <= hi
  truth = dict(E=E, A=K * fr["C0"] ** -B_TRUE, b=B_TRUE)
  max_width = dict(E=0.5, A=0.5, b=0.08)
  for k, v in truth.items():
    lo, hi = fr["intervals"][k]
    assert lo <= v <= hi, (k, v, fr["intervals"][k])
    assert lo <= fr[k] <= hi and hi - lo < max_width[k], (k, fr["intervals"][k])
  assert fr["A_raw"] == pytest.approx(fr["A"] * fr["C0"] ** fr["b"])
  assert r["bootstrap"]["n_failed"]["exponent"] == 0 and r["bootstrap"]["n_failed"]["E"] == 0
  assert fr["e_mode"] == "regularised" and fr["flags"] == []
  # same seed, same intervals
  r2 = F.isoflop_fit(planted_rows(noise=0.005, seed=0), n_boot=200, seed=0)
  assert r2["optimal_size"]["interval"] == opt["interval"] and "frontier" not in r2


def test_frontier_modes_on_exact_points():
  pts = [dict(budget=c, loss=E + K * c ** -B_TRUE) for c in BUDGETS]
  a_true = K * BUDGETS[0] ** -B_TRUE
  for opts in (dict(e_mode="free"), dict(e_mode="regularised"), dict(e_mode="pinned", E=E)):
    fr = F.frontier_fit(pts, sigma=1e-3, **opts)
    assert fr["E"] == pytest.approx(E, abs=1e-6 if opts["e_mode"] != "regularised" else 1e-3), opts
    assert fr["A"] == pytest.approx(a_true, rel=1e-3) and fr["b"] == pytest.approx(B_TRUE, rel=1e-3), opts
  # pinned at the wrong E: A, b absorb it (the fit says what it pinned)
  fr = F.frontier_fit(pts, e_mode="pinned", e_frac=0.5)
  assert fr["E"] == pytest.approx(0.5 * pts[-1]["loss"]) and "e_frac=0.5" in fr["E_source"]
  assert fr["b"] < B_TRUE
  # a strong prior toward 0 pulls E down; the default weak one does not
  assert F.frontier_fit(pts, sigma=1e-3, e_prior_sd=0.01)["E"] < 1.0
  # Huber loss on log residuals: same answer on exact data
  assert F.frontier_fit(pts, e_mode="free", loss="huber")["E"] == pytest.approx(E, abs=1e-5)
  # 3 points, free: exactly determined, flagged
  assert "exactly_determined" in F.frontier_fit(pts[:3], e_mode="free")["flags"]
  with pytest.raises(ConfigError, match="pinned"):
    F.frontier_fit(pts, e_mode="pinned")
  with pytest.raises(ConfigError, match="below the smallest"):
    F.frontier_fit(pts, e_mode="pinned", E=5.0)
  with pytest.raises(ConfigError, match="e_mode"):
    F.frontier_fit(pts, e_mode="fixed")


def test_parabola_and_flags():
  x = np.array([7.0, 7.5, 8.0, 8.5, 9.0])
  p = F.parabola(x, 0.3 * (x - 8.2) ** 2 + 2.0)
  assert np.allclose(p["coef"], [0.3, -0.3 * 2 * 8.2, 0.3 * 8.2 ** 2 + 2.0])
  assert p["x_opt"] == pytest.approx(8.2) and p["l_opt"] == pytest.approx(2.0) and not p["opens_downward"]
  assert np.max(np.abs(p["residuals"])) < 1e-12
  assert F.parabola(x, -(x - 8) ** 2)["opens_downward"]
  # budget 1e20: sizes all below the optimum (vertex above range); budget 1e21: concave losses (no minimum)
  rows = planted_rows(budgets=BUDGETS[:3]) + planted_rows(budgets=BUDGETS[3:])
  for r in rows:
    if r["budget"] == 1e20:
      r["params_nonembed"] = int(r["params_nonembed"] / 10 ** 1.2)
      r["val_loss"] = law(r["params_nonembed"], 1e20)
    if r["budget"] == 1e21:
      x = math.log10(r["params_nonembed"] / n_opt(1e21))
      r["val_loss"] = 2.5 - 0.1 * x * x
  with pytest.warns(F.FitWarning) as caught:
    res = F.fit_rows(rows, n_boot=20)
  text = " ".join(str(w.message) for w in caught)
  assert "vertex_above_range" in text and "opens_downward" in text
  by = {b["budget"]: b for b in res["budgets"]}
  assert by[1e20]["flags"] == ["vertex_above_range"] and by[1e20]["used_for_exponent"]
  assert by[1e21]["flags"] == ["opens_downward"] and not by[1e21]["used_for_exponent"]
  assert by[1e21]["n_opt"] is None and res["optimal_size"]["budgets_used"] == [1e18, 1e19, 1e20]
  src = {p["budget"]: p["source"] for p in res["frontier"]["points"]}
  assert src[1e21] == "best_observed" and src[1e20] == "vertex"
  assert res["frontier"]["points"][-1]["loss"] == pytest.approx(min(by[1e21]["val_loss"]))
  # exclude_out_of_range: the extrapolated vertex is left out too
  with pytest.warns(F.FitWarning):
    res = F.fit_rows(rows, n_boot=0, exclude_out_of_range=True)
  assert res["optimal_size"]["budgets_used"] == [1e18, 1e19]


def test_fit_sweep_writes_json_and_pngs(tmp_path):
  import matplotlib.image
  rows = planted_rows(budgets=(1e12, 1e13, 1e14), noise=0.005, seed=1)
  rows[2]["val_loss"] = None
  rows[5]["val_loss"] = float("nan")
  d = write_sweep(tmp_path / "sweep", rows)
  with pytest.warns(F.FitWarning, match="E interval"):   # 3 budgets where E is ~15 % of the loss: unidentifiable
    res = F.fit_sweep(d, n_boot=50)
  assert "E_poorly_constrained" in res["frontier"]["flags"]
  with open(os.path.join(d, "fit.json")) as f:
    on_disk = json.load(f)
  assert on_disk["optimal_size"]["exponent"] == pytest.approx(res["optimal_size"]["exponent"])
  for key in ("options", "rows", "budgets", "optimal_size", "frontier", "bootstrap", "warnings", "plots"):
    assert key in on_disk, key
  assert on_disk["rows"]["total"] == 21 and on_disk["rows"]["used"] == 19
  assert [s["where"] for s in on_disk["rows"]["skipped"]] == ["line 3", "line 6"]
  b0 = on_disk["budgets"][0]
  assert len(b0["parabola"]["coef"]) == 3 and b0["n_opt"] > 0 and b0["l_opt"] > 0 and b0["d_opt"] > 0
  for k in ("E", "A", "b"):
    assert len(on_disk["frontier"]["intervals"][k]) == 2
  assert len(on_disk["optimal_size"]["interval"]) == 2 and on_disk["options"]["e_mode"] == "regularised"
  assert sorted(on_disk["plots"]) == sorted(["isoflop.png", "frontier.png", "optimal_size.png", "residuals.png"])
  for name in on_disk["plots"]:
    path = os.path.join(d, name)
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 0.01


def test_errors(tmp_path):
  with pytest.raises(ConfigError, match=str(tmp_path / "nowhere" / "summary.jsonl")):
    F.fit_sweep(str(tmp_path / "nowhere"))
  rows = planted_rows(budgets=(1e18, 1e19, 1e20))
  d = write_sweep(tmp_path / "bad", rows[:2], extra_lines=['{"cell": "x", "budget": 1e18,'])
  with pytest.raises(ConfigError, match="line 3"):
    F.fit_sweep(d)
  bad = [dict(r) for r in rows]
  bad[4]["budget"] = "1e18"
  d = write_sweep(tmp_path / "bad2", bad)
  with pytest.raises(ConfigError, match=r"line 5.*'budget'"):
    F.fit_sweep(d)
  with pytest.raises(ConfigError, match="unknown fit option"):
    F.fit_rows(rows, n_bootstrap=10)
  # a budget with 2 sizes: warned and skipped, the others are fitted
  two = [r for r in planted_rows(budgets=(1e21,)) if r["cell"].endswith(("_s2", "_s3"))]
  with pytest.warns(F.FitWarning, match=r"budget 1e\+21 FLOPs has 2 distinct size"):
    res = F.fit_sweep(write_sweep(tmp_path / "two", rows + two), n_boot=0, plots=False)
  assert [b["budget"] for b in res["budgets"]] == [1e18, 1e19, 1e20]
  assert len(res["rows"]["budgets_skipped"]) == 1 and res["rows"]["used"] == len(rows)
  # fewer than 2 budgets left: an error naming the budgets
  with pytest.warns(F.FitWarning), pytest.raises(ConfigError, match="at least 2"):
    F.fit_rows(rows[:7] + two, n_boot=0)
