"""GPU figures on one GPU (issue 18): Pallas kernels checked and timed against cuDNN / XLA, and training MFU.

  python -m benchmarks.gpu_suite --out DIR              # on a GPU (H200): budgeted at 420 s; not yet run on one
  python -m benchmarks.gpu_suite --out DIR --dry-run    # any backend, tiny sizes (CPU: Pallas in interpret mode)
  bash benchmarks/gpu_suite.sh                          # the device wrapper: XLA flags, then --out $OUT/gpu

Writes one JSON-lines file per section plus a summary (rewritten after every section, so a run killed
part-way still leaves one):

  DIR/correctness.jsonl  Pallas flash attention (output, dq, dk, dv) vs the XLA path, bf16 and fp32, head_dim 64
                         and 128, over: dense, causal, GQA, TV2A block mask, segment ids (ragged per-example
                         lengths), non-square ragged lengths (causal offset, GQA), ragged TV2A + GQA; and the
                         temporal-conv kernel (y, dx, dw) vs lax.conv_general_dilated. Per case: max abs error,
                         error relative to max|reference| ("rel"), the XLA path's own error in the same dtype
                         ("xla_rel"), the tolerance and pass/fail. The reference is the XLA path on the same
                         (dtype-rounded) inputs in float32 at matmul precision "highest".
  DIR/attention.jsonl    forward and forward+backward ms and TFLOP/s at 4k / 8k / 16k tokens, head_dim 128, 16
                         heads, bf16, for "pallas", "cudnn" and "xla", with and without the TV2A mask; plus
                         "cudnn_dense_mask" (cuDNN given the TV2A mask as a dense mask: every tile computed), and the
                         measured dense bf16 matmul rate. FLOPs count only the visible part of the mask
                         (4·B·H·L²·D·visible, ×3.5 with the backward): skipped tiles are not counted as work, for
                         every implementation alike; the Pallas tile table (skipped / partial / full) is recorded.
  DIR/conv.jsonl         the temporal-conv kernel vs XLA (which hands grouped convs to cuDNN): ms, TFLOP/s, GB/s of
                         the minimum traffic (benchmarks/conv.py's conventions).
  DIR/train.jsonl        UniTalking train step at ~1.1B parameters (below): batch size from compile-time memory
                         analysis, step time, TFLOP/s, MFU against the measured bf16 matmul rate and against the
                         989 TFLOP/s datasheet figure; XLA's own cost analysis beside it.
  DIR/summary.json       per-section status, wall time, record / error / skip / pass / fail counts, headline figures.

Every file's first record ("record": "header") holds the device kind, backend, jax / jaxlib versions, XLA_FLAGS and
the related environment, and the date. Every record carries "dry_run"; dry-run records also carry a note saying
their timings mean nothing. A failing item (a shape cuDNN refuses, an OOM) is an "error" record and the suite goes
on; a failing section is an "error" record for the section. A global time budget (--budget-s) and per-section
allowances (--section-s) skip what is left with "skipped: budget" records.

--dry-run: attention cases at ~128 tokens, each case once with the (dtype, head_dim) pairs taken in turn; timings at
256 tokens; a ~1.5M-parameter UniTalking (2 layers, 128 video + 32 audio tokens) whose batch is fitted to a
fictitious 512 MiB (capped at 3; later variants at 2); on a CPU, XLA's LLVM runs at -O0 to halve compile times.
About 2 minutes on 2 CPU cores (3.5 under a concurrent CI run).

Section 4, the model ("1b"): UniTalking (unitalking_jax.model, the real trainer pieces: a config derived from
configs/unitalking/tiny.py, unitalking_jax.task.make_task, shared.train.build and its jitted, donated train
step) with video stream dim 2048 = 16 heads × 128, FFN 8192, 7 joint layers, Wan patch (1, 2, 2), text = UMT5-XXL
features (text_dim 4096, 512 tokens; model.mask_text False, as Wan2.2), reference audio 257 tokens. Each joint
layer holds two streams (~143M parameters a layer), so the same widths at 12 layers would be 1.8B; 7 layers
give 1.09B. Latents: 17 Wan2.2-VAE latent frames (65 frames at 24 fps) of 32×60 (512×960 px), 48 channels ->
17·16·30 = 8,160 video tokens; MMAudio-VAE audio latents, 85 frames × 20 channels (2.7 s at 31.25 Hz), one token
each -> 85 audio tokens; 8,245 tokens an example. bf16 compute, float32 params, AdamW, remat from
trainer.remat (--remat, default "full"). The batch is SYNTHETIC (random latents / text features of the right
shapes, generated on the device): no SynthCue pipeline, no codec fitting. Two variants:
  trainer        the task mix as configured (tv2a 0.2): UniTalking builds a per-example TV2A mask, a dense
                 [B, 1, L, L] mask that cuDNN and our Pallas kernel refuse, so the joint attention runs on XLA
                 (the record names the dispatcher's choice);
  no_tv2a_mask   the same with objective.tasks.tv2a = 0 and the (then all-False) per-example flags dropped, which
                 leaves the values unchanged and lets "auto" pick cuDNN for the joint attention.
Batch size: compile the step at B = 1 and 2 (in parallel), fit memory = fixed + B·per_example from
compiled.memory_analysis() (arguments + outputs - aliased + temporaries), compile at the largest B under
--mem-frac (0.85) of the allocator's limit (capped by --max-batch), and step down while it does not fit.
FLOPs ("model FLOPs"): 3 × (matmul FLOPs of the forward, counted from its jaxpr: every dot_general / conv, scan
bodies × their length, attention excluded by tracing it as Pallas calls) + 3 × the analytic attention FLOPs
(joint self-attention 4·B·H·L²·Dh counted dense: the TV2A block is ~1 % of it; cross-attention to text and
reference audio). Also "6·N·T" (6 × parameters × video+audio tokens, + attention) for comparison, and XLA's
cost analysis of the compiled step (counts the remat recomputation; misses custom calls: cuDNN and Pallas
attention). MFU = model TFLOP/s ÷ (a) the dense bf16 matmul rate measured in the same run on random data (the
higher of 8192³ and 16384³), (b) 989 TFLOP/s (H200/H100 SXM datasheet, dense bf16).
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
import zlib

SECTIONS = ("correctness", "attention", "conv", "train")
DATASHEET_TFLOPS = 989.0   # H200 / H100 SXM dense bf16 (shared.train.PEAK_TFLOPS["NVIDIA H200"])
DRY_NOTE = ("dry run: tiny sizes; on CPU the Pallas kernels run in interpret mode and cuDNN is absent; timings, "
            "TFLOP/s, GB/s and MFU here mean nothing about any GPU")
SECTION_S = {"correctness": 80.0, "attention": 110.0, "conv": 25.0, "train": 1e9}   # allowances (seconds)


def _jax():
  import jax
  return jax


# ------------------------------------------------------------------------------------------------ records

class Suite:
  """Output folder, budget, header facts and the summary."""

  def __init__(self, args):
    self.args = args
    self.dry = bool(args.dry_run)
    self.t0 = time.perf_counter()
    self.deadline = self.t0 + args.budget_s
    os.makedirs(args.out, exist_ok=True)
    self.summary = dict(dry_run=self.dry, started=_now(), budget_s=args.budget_s, sections={})
    self.facts = _facts(args)
    self.summary.update(self.facts)
    self.matmul = None   # {"tflops": ..} measured peak, shared by attention and train

  def left(self) -> float:
    return self.deadline - time.perf_counter()

  def write_summary(self):
    self.summary["wall_s"] = round(time.perf_counter() - self.t0, 2)
    tmp = os.path.join(self.args.out, "summary.json.tmp")
    with open(tmp, "w") as f:
      json.dump(_clean(self.summary), f, indent=1, default=_json_default, allow_nan=False)
    os.replace(tmp, os.path.join(self.args.out, "summary.json"))


class Section:
  """DIR/<name>.jsonl: a header, the records (each with "section" and "dry_run"), a closing record."""

  def __init__(self, suite: Suite, name: str, allowance: float):
    self.suite, self.name = suite, name
    self.t0 = time.perf_counter()
    self.deadline = min(suite.deadline, self.t0 + allowance)
    self.f = open(os.path.join(suite.args.out, f"{name}.jsonl"), "w")
    self.counts = dict(records=0, errors=0, skipped=0, refused=0, passed=0, failed=0)   # skipped: by the budget
    self.highlights: dict = {}
    self.write(record="header", **{**suite.facts, "date": _now()}, allowance_s=None if allowance >= 1e8 else allowance,
               budget_left_s=round(suite.left(), 1))

  def left(self) -> float:
    return self.deadline - time.perf_counter()

  def write(self, **rec):
    rec = dict(section=self.name, dry_run=self.suite.dry, **rec)
    if self.suite.dry:
      rec["dry_run_note"] = DRY_NOTE
    self.counts["records"] += 1
    if "error" in rec:
      self.counts["errors"] += 1
    if rec.get("record") == "skipped":   # "skipped: budget..." or an implementation's refusal (reason given)
      self.counts["skipped" if str(rec.get("skipped", "")).startswith("skipped") else "refused"] += 1
    if "pass" in rec and isinstance(rec["pass"], bool):
      self.counts["passed" if rec["pass"] else "failed"] += 1
    rec = _clean(rec)
    self.f.write(json.dumps(rec, default=_json_default, allow_nan=False) + "\n")
    self.f.flush()
    if self.suite.args.verbose:
      print(json.dumps(rec, default=_json_default)[:400], flush=True)

  def skip(self, what: dict, why: str = "skipped: budget"):
    self.write(record="skipped", skipped=why, **what)

  def error(self, what: dict, e: BaseException):
    self.write(record="error", error=f"{type(e).__name__}: {str(e)[:600]}",
               traceback=traceback.format_exc(limit=6)[-1500:], **what)

  def close(self, status: str):
    wall = round(time.perf_counter() - self.t0, 2)
    self.write(record="section_end", status=status, wall_s=wall, **self.counts)
    self.f.close()
    self.suite.summary["sections"][self.name] = {"status": status, "wall_s": wall, **self.counts, **self.highlights}
    self.suite.write_summary()


def _json_default(x):
  try:
    import numpy as np
    if isinstance(x, np.generic):
      return x.item()
    if isinstance(x, np.ndarray):
      return x.tolist()
  except ImportError:
    pass
  return str(x)


def _clean(x):
  """Strict JSON: non-finite floats -> None, numpy scalars -> Python, tuples -> lists (recursively)."""
  if isinstance(x, dict):
    return {str(k): _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if hasattr(x, "item") and getattr(x, "ndim", None) == 0:
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _finite(x):
  return x if x is None or math.isfinite(x) else None


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def _facts(args) -> dict:
  jax = _jax()
  import jaxlib
  dev = jax.devices()[0]
  env = {k: os.environ.get(k) for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE",
                                        "XLA_PYTHON_CLIENT_ALLOCATOR", "JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL",
                                        "CUDA_VISIBLE_DEVICES")}
  try:
    flax_v = __import__("flax").__version__
  except Exception:  # noqa: BLE001
    flax_v = None
  mem = None
  try:
    stats = dev.memory_stats() or {}
    mem = stats.get("bytes_limit")
  except Exception:  # noqa: BLE001
    pass
  return dict(date=_now(), backend=jax.default_backend(), device_kind=dev.device_kind,
              device_count=jax.device_count(), platform_version=getattr(dev.client, "platform_version", None),
              memory_bytes_limit=mem, jax=jax.__version__, jaxlib=jaxlib.__version__, flax=flax_v,
              python=platform.python_version(), host=platform.node(), cpus=os.cpu_count(),
              xla_flags=env.pop("XLA_FLAGS"), env=env,
              jax_default_matmul_precision=getattr(jax.config, "jax_default_matmul_precision", None),
              git=_git(), argv=sys.argv[1:])


def _git():
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return out.stdout.strip() or None
  except Exception:  # noqa: BLE001
    return None


class Compiler:
  """Lowers and compiles jobs in a thread pool (XLA, and Triton for Pallas, compile with the GIL released, so the
  many small compiles of a section overlap), in submission order; `get` waits for one within the deadline.

  jobs: [(key, thunk)] with thunk() -> a jax.stages.Lowered (traced in the worker thread, so a
  `jax.default_matmul_precision` context inside the thunk applies to it alone)."""

  open: list = []

  def __init__(self, jobs, workers: int):
    Compiler.open.append(self)
    self.pool = futures.ThreadPoolExecutor(max(1, workers))
    self.futs = {key: self.pool.submit(lambda th=thunk: th().compile()) for key, thunk in jobs}
    self.t0 = time.perf_counter()

  def get(self, key, deadline: float):
    """The compiled executable, None if the deadline passed first; raises what lowering / compiling raised."""
    try:
      wait = None if deadline == float("inf") else max(0.0, deadline - time.perf_counter())
      return self.futs[key].result(timeout=wait)
    except futures.TimeoutError:
      return None

  def close(self):
    self.pool.shutdown(wait=False, cancel_futures=True)
    return round(time.perf_counter() - self.t0, 2)


def _compile_all(jobs, workers: int):
  """[(key, thunk)] -> {key: compiled | exception}, waiting for all."""
  c = Compiler(jobs, workers)
  out = {}
  for key, _ in jobs:
    try:
      out[key] = c.get(key, float("inf"))
    except Exception as e:  # noqa: BLE001 -- recorded per item
      out[key] = e
  c.close()
  return out


def _lowering(fn, *args, precision=None):
  """A thunk lowering jit(fn) at args (at matmul `precision` if given)."""
  def thunk():
    jax = _jax()
    if precision is None:
      return jax.jit(fn).lower(*args)
    with jax.default_matmul_precision(precision):
      return jax.jit(fn).lower(*args)
  return thunk


def _errors(got, ref, tol: float, xla=None) -> dict:
  """Max abs error, error relative to max|ref| (rel), rms ratio; pass iff finite and rel <= tol."""
  import numpy as np
  g = np.asarray(got, np.float64)
  r = np.asarray(ref, np.float64)
  finite = bool(np.isfinite(g).all())
  diff = np.abs(g - r)
  scale = float(np.abs(r).max()) or 1e-30
  rel = float(diff.max() / scale) if finite else float("inf")
  out = dict(max_abs=float(diff.max()) if finite else None, ref_max=scale,
             rel=_finite(rel), rms_rel=_finite(float(np.sqrt((diff ** 2).mean() / max((r ** 2).mean(), 1e-60))))
             if finite else None, tol=tol, finite=finite)
  if xla is not None:
    out["xla_rel"] = float(np.abs(np.asarray(xla, np.float64) - r).max() / scale)
  out["pass"] = bool(finite and rel <= tol)
  return out


# ------------------------------------------------------------------------------------------------ 1. correctness

# error relative to max|reference|: floor per dtype; the tolerance is max(floor, 3 × the XLA path's own error in
# the same dtype). fp32 on a GPU: Triton's fp32 dots and XLA's default precision may use TF32 (~1e-3).
TOL_FLOOR = {"float32": 5e-3, "bfloat16": 3e-2}
TOL_XLA_FACTOR = 3.0


def attention_cases(dry: bool) -> list[dict]:
  """Shapes: B, H, Hkv, Lq, Lk and the mask features. GPU sizes ~1k tokens; dry-run ~100."""
  from shared.kernels import block_mask as bm
  if dry:
    b, h, l, lr_q, lr_k, vlen = 2, 2, 128, 50, 77, 96
  else:
    b, h, l, lr_q, lr_k, vlen = 2, 8, 1024, 777, 1000, 768
  g = h // 2
  seg = [[1] * l, [1] * (l * 5 // 8) + [2] * (l * 2 // 8) + [3] * (l - l * 5 // 8 - l * 2 // 8)]
  return [
      dict(case="dense", b=b, h=h, hkv=h, lq=l, lk=l),
      dict(case="causal", b=b, h=h, hkv=h, lq=l, lk=l, causal=True),
      dict(case="gqa", b=b, h=h, hkv=g, lq=l, lk=l),
      dict(case="tv2a", b=b, h=h, hkv=h, lq=l, lk=l, block_mask=bm.tv2a(vlen, l - vlen),
           mask_desc=f"tv2a({vlen}, {l - vlen})"),
      dict(case="segments_ragged", b=b, h=h, hkv=h, lq=l, lk=l, segment_ids=seg,
           mask_desc="segment ids: example 0 one segment; example 1 three (5/8, 2/8, 1/8 of L)"),
      dict(case="ragged_causal_gqa", b=b, h=h, hkv=g, lq=lr_q, lk=lr_k, causal=True, causal_offset=lr_k - lr_q),
      dict(case="tv2a_ragged_gqa", b=b, h=h, hkv=g, lq=lr_q, lk=lr_q,
           block_mask=bm.tv2a(lr_q * 3 // 4, lr_q - lr_q * 3 // 4),
           mask_desc=f"tv2a({lr_q * 3 // 4}, {lr_q - lr_q * 3 // 4})"),
  ]


def _attn_fn(impl, case, seg):
  from shared.kernels import dispatch

  def f(q, k, v):
    return dispatch.run(impl, q, k, v, bias=None, mask=None, segment_ids=seg, causal=case.get("causal", False),
                        scale=None, causal_offset=case.get("causal_offset", 0), block_mask=case.get("block_mask"))
  return f


def _with_vjp(f):
  jax = _jax()

  def run(q, k, v, ct):
    o, vjp = jax.vjp(f, q, k, v)
    return (o,) + tuple(vjp(ct.astype(o.dtype)))
  return run


def _combos(items: list, dtypes: list, head_dims: list, dry: bool):
  """(item, dtype, head_dim) triples: the full product on a GPU; in a dry run each item once, the (dtype,
  head_dim) pairs taken in turn, so every case and every dtype / head_dim path still runs."""
  pairs = [(dt, d) for dt in dtypes for d in head_dims]
  if not dry:
    return [(it, dt, d) for it in items for dt, d in pairs]
  return [(it,) + pairs[i % len(pairs)] for i, it in enumerate(items)]


def section_correctness(sec: Section, args):
  jax = _jax()
  import jax.numpy as jnp
  import numpy as np
  from shared.kernels import temporal_conv as tc
  dry = sec.suite.dry
  dtypes = [d for d in args.dtypes.split(",") if d]
  head_dims = [int(d) for d in args.head_dims.split(",") if d]
  sec.write(record="info", what="attention: pallas vs the XLA path; temporal_conv: pallas vs conv_general_dilated",
            reference="the XLA path on the same dtype-rounded inputs, in float32 at matmul precision 'highest'",
            error_metric="rel = max|got - ref| / max|ref| per tensor (output, dq, dk, dv / y, dx, dw)",
            tolerance=f"max(floor[dtype], {TOL_XLA_FACTOR} x xla_rel), floor = {TOL_FLOOR}; xla_rel = the XLA path "
                      "run in the case's dtype at default precision, against the same reference",
            pallas_mode="interpret (CPU)" if jax.default_backend() == "cpu" else "compiled (Triton)",
            coverage=("every case once, dtype x head_dim pairs in turn (dry run)" if dry else
                      f"every case x dtypes {dtypes} x head_dims {head_dims}"))
  jobs, items = [], []
  for case, dt, d in _combos(attention_cases(dry), dtypes, head_dims, dry):
    key = ("attention", case["case"], dt, d)
    ks = jax.random.split(jax.random.PRNGKey(zlib.crc32(repr(key).encode()) % (1 << 30)), 4)
    dtype = jnp.dtype(dt)
    q = jax.random.normal(ks[0], (case["b"], case["lq"], case["h"], d), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (case["b"], case["lk"], case["hkv"], d), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (case["b"], case["lk"], case["hkv"], d), jnp.float32).astype(dtype)
    ct = jax.random.normal(ks[3], (case["b"], case["lq"], case["h"], d), jnp.float32)
    seg = None if case.get("segment_ids") is None else jnp.asarray(case["segment_ids"], jnp.int32)
    f32 = tuple(x.astype(jnp.float32) for x in (q, k, v)) + (ct,)
    test = lambda q, k, v, ct, case=case, seg=seg: (_with_vjp(_attn_fn("pallas", case, seg))(q, k, v, ct),
                                                    _with_vjp(_attn_fn("xla", case, seg))(q, k, v, ct))
    jobs += [(key + ("test",), _lowering(test, q, k, v, ct)),
             (key + ("ref",), _lowering(_with_vjp(_attn_fn("xla", case, seg)), *f32, precision="highest"))]
    items.append((key, dict(kernel="attention", **_case_row(case, dt, d)), (q, k, v, ct), f32,
                  ("out", "dq", "dk", "dv")))

  def conv_vjp(impl, left):
    def run(x, w, ct):
      y, vjp = jax.vjp(lambda x, w: tc.temporal_conv(x, w, left=left, implementation=impl), x, w)
      return (y,) + tuple(vjp(ct.astype(y.dtype)))
    return run

  for cc, dt, _ in _combos(conv_cases(dry), dtypes, [0], dry):
    key = ("temporal_conv", cc["case"], dt, cc["c"])
    dtype = jnp.dtype(dt)
    x = jax.random.normal(jax.random.PRNGKey(1), (cc["b"], cc["t"], cc["c"]), jnp.float32).astype(dtype)
    w = (jax.random.normal(jax.random.PRNGKey(2), (cc["k"], cc["c"]), jnp.float32) * 0.3).astype(dtype)
    ct = jax.random.normal(jax.random.PRNGKey(3), (cc["b"], cc["t"], cc["c"]), jnp.float32)
    f32 = (x.astype(jnp.float32), w.astype(jnp.float32), ct)
    test = lambda x, w, ct, left=cc["left"]: (conv_vjp("pallas", left)(x, w, ct), conv_vjp("xla", left)(x, w, ct))
    jobs += [(key + ("test",), _lowering(test, x, w, ct)),
             (key + ("ref",), _lowering(conv_vjp("xla", cc["left"]), *f32, precision="highest"))]
    items.append((key, dict(kernel="temporal_conv", **_conv_row(cc, dt)), (x, w, ct), f32, ("y", "dx", "dw")))

  comp = Compiler(jobs, args.compile_workers)
  failed = []
  for key, row, test_args, ref_args, names in items:
    try:
      test, ref = comp.get(key + ("test",), sec.deadline), comp.get(key + ("ref",), sec.deadline)
      if test is None or ref is None:
        sec.skip(row, "skipped: budget (still compiling)")
        continue
      t = time.perf_counter()
      pallas, xla = jax.device_get(test(*test_args))
      want = jax.device_get(ref(*ref_args))
      floor = TOL_FLOOR[row["dtype"]]
      per = {}
      for i, n in enumerate(names):
        w64 = np.asarray(want[i], np.float64)
        xla_rel = float(np.abs(np.asarray(xla[i], np.float64) - w64).max() / (float(np.abs(w64).max()) or 1e-30))
        per[n] = _errors(pallas[i], want[i], max(floor, TOL_XLA_FACTOR * xla_rel), xla=xla[i])
      ok = all(p["pass"] for p in per.values())
      sec.write(record="case", **row, **per, run_s=round(time.perf_counter() - t, 3), **{"pass": ok})
      if not ok:
        failed.append("/".join(str(x) for x in key))
    except Exception as e:  # noqa: BLE001 -- a case that fails to trace, compile or run is this case's result
      sec.error(row, e)
  sec.write(record="info", what="compile pool closed", executables=len(jobs), workers=args.compile_workers,
            wall_s=comp.close())
  sec.highlights = dict(failed_cases=failed)


def _case_row(case, dt, d) -> dict:
  return dict(case=case["case"], dtype=dt, head_dim=d, batch=case["b"], heads=case["h"], kv_heads=case["hkv"],
              q_len=case["lq"], kv_len=case["lk"], causal=case.get("causal", False),
              causal_offset=case.get("causal_offset", 0), mask=case.get("mask_desc"))


def conv_cases(dry: bool) -> list[dict]:
  from shared.kernels.temporal_conv import fsmn_padding
  if dry:
    b, t, c, t2, c2 = 2, 100, 40, 77, 24
  else:
    b, t, c, t2, c2 = 2, 1000, 384, 4099, 200
  return [dict(case="centred", b=b, t=t, c=c, k=11, left=5),
          dict(case="causal", b=b, t=t, c=c, k=11, left=10),
          dict(case="fsmn_shift2_ragged", b=1, t=t2, c=c2, k=31, left=fsmn_padding(31, 2)[0])]


def _conv_row(cc, dt) -> dict:
  return dict(case=cc["case"], dtype=dt, batch=cc["b"], length=cc["t"], channels=cc["c"], taps=cc["k"],
              left=cc["left"])


# ------------------------------------------------------------------------------------------------ 2. attention

def _matmul(sec: Section, args):
  """Dense bf16 matmul rate on random data (and ones, for reference): the MFU denominator (a)."""
  import jax.numpy as jnp
  from benchmarks.attention import matmul_rate
  if sec.suite.matmul is not None:
    sec.write(record="matmul", reused=True, **sec.suite.matmul)
    return sec.suite.matmul
  sizes = (256, 512) if sec.suite.dry else (8192, 16384)
  rows = []
  for n in sizes:
    for random in (True, False):
      try:
        r = matmul_rate(jnp.bfloat16, args.repeats, n, random=random)
        r.setdefault("data", "ones")
        rows.append(r)
        sec.write(record="matmul", **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
      except Exception as e:  # noqa: BLE001
        sec.error(dict(bench="matmul", n=n, random=random), e)
  rand = [r for r in rows if r["data"] == "random"]
  if rand:
    best = max(rand, key=lambda r: r["tflops"])
    sec.suite.matmul = dict(tflops=round(best["tflops"], 2), n=best["n"], data="random",
                            rule="the higher of the random-data rates over n in %s" % (sizes,))
    sec.suite.summary["matmul_bf16_tflops"] = sec.suite.matmul
  return sec.suite.matmul


def section_attention(sec: Section, args):
  jax = _jax()
  import jax.numpy as jnp
  from benchmarks.attention import _mask, _time, passes
  from shared.kernels import block_mask as bm
  from shared.kernels import dispatch
  from shared.kernels.flash_attention import default_blocks, flops
  dry = sec.suite.dry
  lengths = [int(x) for x in (args.attn_lengths or ("256" if dry else "4096,8192,16384")).split(",")]
  heads, d, b = (2, 128, 1) if dry else (16, 128, 1)
  dtype = jnp.bfloat16
  sec.write(record="info", heads=heads, head_dim=d, batch=b, dtype="bfloat16", repeats=args.repeats,
            timing="median of `repeats` calls after one warm-up call, each call synchronised",
            flops_rule="work = 4·B·H·L²·D·visible (fwd), ×3.5 (fwd_bwd); visible = 1 without a mask, the TV2A "
                       "mask's visible fraction with it: skipped tiles are not counted, for every implementation "
                       "(cudnn_dense_mask and xla compute them anyway, so their figures are work-equivalent)",
            impls="pallas (ours, Triton), cudnn (jax.nn.dot_product_attention), xla (reference einsum/softmax), "
                  "cudnn_dense_mask (TV2A only: cuDNN with the mask as a dense bias; not routed by the dispatcher)")
  _matmul(sec, args)
  jobs, items = [], []
  backend = "interpret" if jax.default_backend() == "cpu" else "triton"
  for length in lengths:
    ks = jax.random.split(jax.random.PRNGKey(length), 3)
    qkv = tuple(jax.random.normal(kk, (b, length, heads, d), jnp.float32).astype(dtype) for kk in ks)
    for kind in ("none", "tv2a"):
      block_mask, causal, frac = _mask(kind, length)
      row0 = dict(bench="attention", length=length, head_dim=d, heads=heads, kv_heads=heads, batch=b, mask=kind,
                  dtype="bfloat16", visible=round(frac, 6))
      blocks = default_blocks(length, length, d, backend)
      table = bm.block_table(length, length, blocks[0], blocks[1], block_mask=block_mask, kinds=True)
      tiles = dict(block_q=blocks[0], block_k=blocks[1], skip=int((table == bm.SKIP_TILE).sum()),
                   partial=int((table == bm.PARTIAL_TILE).sum()), full=int((table == bm.FULL_TILE).sum()))
      call = dispatch.describe(qkv[0], qkv[1], bias=None, mask=None, segment_ids=None, causal=causal,
                               causal_offset=0, block_mask=block_mask)
      impls = ["pallas", "cudnn", "xla"] + (["cudnn_dense_mask"] if kind == "tv2a" else [])
      for impl in impls:
        row = dict(row0, impl=impl, **({"pallas_fwd_tiles": tiles} if impl == "pallas" else {}))
        if impl == "cudnn_dense_mask":
          why = None if jax.default_backend() == "gpu" else f"cuDNN needs a GPU (backend is {jax.default_backend()})"
          fns = _cudnn_dense_passes() if why is None else []
          args_ = qkv + (jnp.asarray(block_mask.dense())[None, None],) if why is None else qkv
        else:
          why = dispatch.refusal(impl, call, explicit=True)
          fns = passes(impl, causal=causal, block_mask=block_mask) if why is None else []
          args_ = qkv
        if why is not None:
          sec.write(record="skipped", skipped=why, **row)
          continue
        for name, fn, mult in fns:
          key = (length, kind, impl, name)
          try:
            jobs.append((key, lambda fn=fn, a=args_: fn.lower(*a)))
            items.append((key, dict(row, **{"pass": name}), args_,
                          flops(b, heads, length, length, d, density=frac) * mult))
          except Exception as e:  # noqa: BLE001
            sec.error(dict(row, **{"pass": name}), e)
  comp = Compiler(jobs, args.compile_workers)
  best = {}
  for key, row, qkv, work in items:
    try:
      fn = comp.get(key, sec.deadline) if sec.left() > 0 else None
      if fn is None:
        sec.skip(row)
        continue
      sec_s = _time(fn, *qkv, repeats=args.repeats)
      tf = work / sec_s / 1e12
      sec.write(record="timing", **row, ms=round(sec_s * 1e3, 3), tflops=round(tf, 2), flops_counted=work)
      best[f"{row['impl']}/{row['mask']}/{row['pass']}/{row['length']}"] = round(tf, 1)
    except Exception as e:  # noqa: BLE001 -- OOM, a cuDNN refusal at run time, ...
      sec.error(row, e)
  sec.write(record="info", what="compile pool closed", executables=len(jobs), wall_s=comp.close())
  sec.highlights = dict(tflops=best)


def _cudnn_dense_passes():
  """fns of (q, k, v, mask [1, 1, L, L] bool): the mask is an argument (cuDNN takes it as a bias), never a
  constant baked into the executable."""
  jax = _jax()
  import jax.numpy as jnp
  fwd = jax.jit(lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, mask=m, implementation="cudnn"))
  grad = jax.jit(jax.grad(lambda q, k, v, m: fwd(q, k, v, m).astype(jnp.float32).sum(), (0, 1, 2)))
  return [("fwd", fwd, 1.0), ("fwd_bwd", grad, 3.5)]


# ------------------------------------------------------------------------------------------------ 3. conv

def section_conv(sec: Section, args):
  jax = _jax()
  import jax.numpy as jnp
  from benchmarks.attention import _time
  from benchmarks.conv import figures, passes
  dry = sec.suite.dry
  lengths, channels, b, k = ((512,), (128,), 1, 11) if dry else ((4096, 16384), (512, 1024), 8, 11)
  left = (k - 1) // 2
  sec.write(record="info", kernel=k, padding="centred", batch=b, dtype="bfloat16", repeats=args.repeats,
            rules="tflops = 2·B·T·C·K per pass; gbps = minimum traffic (read x, write y; ×3 fwd_bwd) / time; "
                  "xla = lax.conv_general_dilated (cuDNN on GPU)")
  jobs, items = [], []
  for t in lengths:
    for c in channels:
      x = jax.random.normal(jax.random.PRNGKey(0), (b, t, c), jnp.float32).astype(jnp.bfloat16)
      w = (jax.random.normal(jax.random.PRNGKey(1), (k, c), jnp.float32) * 0.1).astype(jnp.bfloat16)
      for impl in ("xla", "pallas"):
        for name, fn, mult in passes(impl, left=left):
          row = dict(bench="temporal_conv", impl=impl, length=t, channels=c, kernel=k, padding="centred", batch=b,
                     dtype="bfloat16", **{"pass": name})
          try:
            jobs.append(((t, c, impl, name), lambda fn=fn, x=x, w=w: fn.lower(x, w)))
            items.append(((t, c, impl, name), row, (x, w), mult))
          except Exception as e:  # noqa: BLE001
            sec.error(row, e)
  comp = Compiler(jobs, args.compile_workers)
  ms = {}
  for key, row, xw, mult in items:
    try:
      fn = comp.get(key, sec.deadline) if sec.left() > 0 else None
      if fn is None:
        sec.skip(row)
        continue
      s = _time(fn, *xw, repeats=args.repeats)
      fig = figures(b, row["length"], row["channels"], k, 2, mult, s)
      sec.write(record="timing", **row, **fig)
      ms[key] = fig["ms"]
    except Exception as e:  # noqa: BLE001
      sec.error(row, e)
  comp.close()
  sec.highlights = dict(pallas_over_xla_ms={f"{t}x{c}/{p}": round(ms[(t, c, "pallas", p)] / ms[(t, c, "xla", p)], 3)
                                            for (t, c, i, p) in ms if i == "pallas" and (t, c, "xla", p) in ms})


# ------------------------------------------------------------------------------------------------ 4. train

@dataclasses.dataclass(frozen=True)
class TrainSize:
  heads: int
  head_dim: int
  layers: int
  ffn: int
  text_dim: int
  text_len: int
  ref_len: int
  frames: int       # video latent frames
  height: int       # latent height / width (patch 2x2 -> /4 tokens a frame)
  width: int
  video_ch: int
  audio_frames: int  # audio latent frames (one token each)
  audio_ch: int
  ref_dim: int


SIZES = {
    # ~1.09B parameters, 8,160 video + 85 audio tokens an example (module docstring)
    "1b": TrainSize(heads=16, head_dim=128, layers=7, ffn=8192, text_dim=4096, text_len=512, ref_len=257, frames=17,
                    height=32, width=60, video_ch=48, audio_frames=85, audio_ch=20, ref_dim=80),
    # ~2M parameters, 128 video + 32 audio tokens: the dry run
    "dry": TrainSize(heads=4, head_dim=32, layers=2, ffn=512, text_dim=64, text_len=16, ref_len=8, frames=4,
                     height=8, width=16, video_ch=48, audio_frames=32, audio_ch=20, ref_dim=80),
}


def train_config(size: TrainSize, remat: str, variant: str):
  """configs/unitalking/tiny.py with the model, precision and remat above; data.text = "umt5" (features)."""
  from configs.unitalking import tiny
  c = tiny.get_config()
  c.model.video.update(dict(num_attention_heads=size.heads, attention_head_dim=size.head_dim,
                            num_layers=size.layers, ffn_dim=size.ffn, patch_size=(1, 2, 2), freq_dim=256,
                            text_dim=size.text_dim, attention_impl="auto"))
  c.data.update(dict(text="umt5", frames=size.frames, text_len=size.text_len, video_pca=size.video_ch,
                     audio_pca=size.audio_ch))
  c.model.update(dict(audio_ffn_dim=size.ffn, audio_patch=1, ref_dim=size.ref_dim,
                      audio_time_scale=size.frames / size.audio_frames, text_vocab=0, text_positions=0,
                      mask_text=False))
  c.trainer.precision.compute_dtype = "bfloat16"
  c.trainer.remat = remat
  c.trainer.batch_size = 1
  c.trainer.log_every = 0
  c.trainer.sample_every = 0
  if variant == "no_tv2a_mask":
    c.objective.tasks.tv2a = 0.0
  return c


def _no_flags_model(cfg):
  """UniTalking that drops tv2a_flags (exact when no example is TV2A: the flags are all False, the mask all True)."""
  from unitalking_jax.model import UniTalking, model_from_config

  class UniTalkingNoTV2AMask(UniTalking):
    def __call__(self, video, audio, t_video, t_audio, text, text_mask=None, ref=None, tv2a_flags=None):
      return super().__call__(video, audio, t_video, t_audio, text, text_mask, ref, None)

  m = model_from_config(cfg)
  return UniTalkingNoTV2AMask(m.config)


def _batch_shapes(size: TrainSize, b: int) -> dict:
  import numpy as np
  f32 = np.float32
  return {"video": ((b, size.frames, size.height, size.width, size.video_ch), f32),
          "audio": ((b, size.audio_frames, size.audio_ch), f32),
          "text": ((b, size.text_len, size.text_dim), f32),
          "text_mask": ((b, size.text_len), np.bool_),
          "ref": ((b, size.ref_len, size.ref_dim), f32)}


def _matmul_flops(jaxpr) -> float:
  """Matmul FLOPs of a jaxpr: dot_general and conv_general_dilated, recursing into sub-jaxprs (scan bodies
  × length, cond: the largest branch), never into pallas_call (attention, counted analytically)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2.0 * math.prod(out) * math.prod(lhs[i] for i in lc)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec
      out = eqn.outvars[0].aval.shape
      total += 2.0 * math.prod(out) * rhs[spec[1]] * math.prod(rhs[i] for i in spec[2:])
    elif name == "pallas_call":
      continue
    else:
      subs = []
      for v in eqn.params.values():
        for item in (v if isinstance(v, (tuple, list)) else (v,)):
          if hasattr(item, "eqns"):
            subs.append(item)
          elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
            subs.append(item.jaxpr)
      if not subs:
        continue
      counts = [_matmul_flops(s) for s in subs]
      mult = eqn.params.get("length", 1) if name == "scan" else 1
      total += mult * (max(counts) if name == "cond" else sum(counts))
  return total


def _analytic(cfg, size: TrainSize, abstract_params, b: int) -> dict:
  """Model FLOPs per step (module docstring)."""
  jax = _jax()
  import jax.numpy as jnp
  import numpy as np
  from unitalking_jax.model import UniTalking, model_from_config
  m = model_from_config(cfg)
  mc = m.config
  traced = UniTalking(dataclasses.replace(mc, video=mc.video.replace(attention_impl="pallas")))
  sh = {k: jax.ShapeDtypeStruct(s, dt) for k, (s, dt) in _batch_shapes(size, 1).items()}
  lv = size.frames * (size.height // 2) * (size.width // 2)
  la = size.audio_frames
  tv = jax.ShapeDtypeStruct((1, lv), jnp.float32)
  ta = jax.ShapeDtypeStruct((1,), jnp.float32)
  fwd = lambda p, v, a, tv_, ta_, t, r: traced.apply({"params": p}, v, a, tv_, ta_, t, None, r)
  jaxpr = jax.make_jaxpr(fwd)(abstract_params, sh["video"], sh["audio"], tv, ta, sh["text"], sh["ref"])
  dense_fwd = _matmul_flops(jaxpr.jaxpr) * b
  h, dh, s, r, lay = size.heads, size.head_dim, size.text_len, size.ref_len, size.layers
  length = lv + la
  attn_fwd = 4.0 * b * h * dh * lay * (length * length + lv * s + la * s + la * r)
  n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params)))
  return dict(params=n_params, video_tokens=lv, audio_tokens=la, tokens_per_example=length,
              text_tokens=s, ref_tokens=r, matmul_fwd_flops=dense_fwd, attention_fwd_flops=attn_fwd,
              model_flops=3.0 * (dense_fwd + attn_fwd),
              six_nt_flops=6.0 * n_params * length * b + 3.0 * attn_fwd)


def _mem(compiled) -> dict | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001
    return None
  if m is None:
    return None
  get = lambda n: int(getattr(m, n, 0) or 0)
  out = {n: get(n) for n in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                             "temp_size_in_bytes", "generated_code_size_in_bytes")}
  peak = getattr(m, "peak_memory_in_bytes", None)
  out["estimate_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"] - out["alias_size_in_bytes"]
                           + out["temp_size_in_bytes"])
  if peak:
    out["peak_memory_in_bytes"] = int(peak)
    out["estimate_bytes"] = max(out["estimate_bytes"], int(peak))
  return out


def section_train(sec: Section, args):
  from shared import train as train_lib
  from shared.kernels import chosen_implementation
  from unitalking_jax.task import make_task
  dry = sec.suite.dry
  size = SIZES["dry" if dry else args.train_size]
  if args.layers:
    size = dataclasses.replace(size, layers=args.layers)
  matmul = _matmul(sec, args)
  limit = sec.suite.facts.get("memory_bytes_limit")
  limit_src = "allocator bytes_limit (memory_stats)"
  if dry or not limit:
    limit, limit_src = args.dry_mem_mb << 20, f"fictitious {args.dry_mem_mb} MiB (dry run, or no memory_stats here)"
  max_batch = args.max_batch if not dry else min(args.max_batch, 3)   # dry: 1 and 2, then the fitted 3
  steps, warmup = (2, 1) if dry else (args.steps, args.warmup)
  sec.write(record="info", size=dataclasses.asdict(size), remat=args.remat, compute_dtype="bfloat16",
            param_dtype="float32", optimizer="adamw (configs/unitalking/tiny.py trainer)",
            data="synthetic: random latents and text features of the right shapes, generated on the device "
                 "(no SynthCue, no codec fitting)", memory_limit_bytes=limit, memory_limit_source=limit_src,
            mem_frac=args.mem_frac, batch_budget_bytes=args.mem_frac * limit, max_batch=max_batch, steps=steps,
            warmup=warmup,
            flops_rule="model_flops = 3 × (forward matmul FLOPs from the jaxpr + analytic attention FLOPs); "
                       "six_nt_flops = 6 × params × (video + audio tokens) + 3 × attention; xla_cost_flops = the "
                       "compiled step's cost analysis (counts remat recomputation, misses cuDNN / Pallas custom calls)",
            mfu_rule=f"tflops / measured bf16 matmul rate ({matmul and matmul['tflops']} TFLOP/s) and / "
                     f"{DATASHEET_TFLOPS} TFLOP/s (datasheet)")
  results = {}
  for i, variant in enumerate(v for v in args.train_variants.split(",") if v):
    what = dict(variant=variant)
    if sec.left() < (5 if dry else 90):
      sec.skip(what)
      continue
    try:
      cap = max_batch if not (dry and i) else min(max_batch, 2)   # dry: only the first variant fits a 3rd size
      results[variant] = _train_variant(sec, args, size, variant, limit, cap, steps, warmup, matmul,
                                        train_lib, make_task, chosen_implementation)
    except Exception as e:  # noqa: BLE001
      sec.error(what, e)
  sec.highlights = dict(train={v: {k: r.get(k) for k in ("batch", "step_s", "model_tflops", "mfu_vs_measured",
                                                         "mfu_vs_datasheet", "attention_impl_joint")}
                               for v, r in results.items() if r})


def _train_variant(sec, args, size, variant, limit, max_batch, steps, warmup, matmul, train_lib, make_task,
                   chosen_implementation):
  budget_bytes = args.mem_frac * limit
  jax = _jax()
  import jax.numpy as jnp
  import numpy as np
  cfg = train_config(size, args.remat, variant)
  model = _no_flags_model(cfg) if variant == "no_tv2a_mask" else None
  task = make_task(cfg, model=model)
  example = {k: np.zeros(s, dt) for k, (s, dt) in _batch_shapes(size, 1).items()}
  t0 = time.perf_counter()
  setup = train_lib.build(cfg, task, example_batch=example)
  flops = _analytic(cfg, size, setup.abstract_state.params, 1)
  lv, la = flops["video_tokens"], flops["audio_tokens"]
  dh = size.head_dim
  q = jax.ShapeDtypeStruct((1, lv + la, size.heads, dh), jnp.bfloat16)
  mask = None if variant == "no_tv2a_mask" else jax.ShapeDtypeStruct((1, 1, lv + la, lv + la), jnp.bool_)
  impl_joint = chosen_implementation(q, q, mask=mask, implementation=cfg.model.video.attention_impl)
  q_cross = jax.ShapeDtypeStruct((1, lv, size.heads, dh), jnp.bfloat16)
  k_cross = jax.ShapeDtypeStruct((1, size.text_len, size.heads, dh), jnp.bfloat16)
  impl_cross = chosen_implementation(q_cross, k_cross, implementation=cfg.model.video.attention_impl)
  sec.write(record="model", variant=variant, params=flops["params"], video_tokens=lv, audio_tokens=la,
            tokens_per_example=flops["tokens_per_example"], text_tokens=size.text_len, ref_tokens=size.ref_len,
            tasks=dict(cfg.objective.tasks), attention_impl_joint=impl_joint, attention_impl_cross=impl_cross,
            attention_note=("per-example TV2A flags -> a dense [B, 1, L, L] mask: cuDNN and Pallas refuse it"
                            if mask is not None else "no mask: the dispatcher's 'auto' order"),
            matmul_fwd_flops_per_example=flops["matmul_fwd_flops"],
            attention_fwd_flops_per_example=flops["attention_fwd_flops"], build_s=round(time.perf_counter() - t0, 2))

  def abstract_batch(b):
    return {k: jax.ShapeDtypeStruct(s, dt) for k, (s, dt) in _batch_shapes(size, b).items()}

  def lower(b):
    return setup.step_fn.lower(setup.abstract_state, abstract_batch(b))

  tries = {}

  def record(b, compiled, secs):
    mem = _mem(compiled) if not isinstance(compiled, Exception) else None
    tries[b] = (compiled, mem)
    rec = dict(record="batch_try", variant=variant, batch=b, compile_s=round(secs, 2), memory=mem,
               fits=None if mem is None else mem["estimate_bytes"] <= budget_bytes)
    if isinstance(compiled, Exception):
      rec["error"] = f"{type(compiled).__name__}: {str(compiled)[:400]}"
    sec.write(**rec)

  t = time.perf_counter()
  first = [b for b in (1, 2) if b <= max_batch]
  got = _compile_all([(b, lambda b=b: lower(b)) for b in first], len(first))
  for b in first:
    record(b, got[b], time.perf_counter() - t)
  mems = {b: m for b, (c, m) in tries.items() if m is not None}
  if 1 not in mems:
    raise RuntimeError(f"no memory analysis at batch 1 ({tries.get(1)})")
  if mems[1]["estimate_bytes"] > budget_bytes:
    raise RuntimeError(f"batch 1 needs {mems[1]['estimate_bytes'] / 2**30:.1f} GiB > {budget_bytes / 2**30:.1f} GiB")
  per = (mems[2]["estimate_bytes"] - mems[1]["estimate_bytes"]) if 2 in mems else mems[1]["temp_size_in_bytes"]
  per = max(per, 1)
  fixed = mems[1]["estimate_bytes"] - per
  target = int(min(max_batch, max(1, (budget_bytes - fixed) // per)))
  sec.write(record="batch_fit", variant=variant, fixed_bytes=fixed, per_example_bytes=per, budget_bytes=budget_bytes,
            target=target)
  fits = lambda x: x in tries and tries[x][1] is not None and tries[x][1]["estimate_bytes"] <= budget_bytes
  b = target
  while not fits(b):
    if b not in tries:
      if sec.left() < (5 if sec.suite.dry else 60):   # no time for another compile: the largest that fitted
        b = max(x for x in tries if fits(x))
        sec.write(record="info", variant=variant, note=f"budget: settling for batch {b}")
        break
      t = time.perf_counter()
      record(b, _compile_all([(b, lambda: lower(b))], 1)[b], time.perf_counter() - t)
      continue
    if b == 1:
      raise RuntimeError(f"batch 1 does not fit: {tries[1]}")
    over = tries[b][1]["estimate_bytes"] - budget_bytes if tries[b][1] else per   # step down by the overshoot
    b = max(1, min(b - 1, b - int(math.ceil(over / per))))

  def make_batch(key, b):
    shapes = _batch_shapes(size, b)
    ks = jax.random.split(key, 4)
    return {"video": jax.random.normal(ks[0], shapes["video"][0], jnp.float32),
            "audio": jax.random.normal(ks[1], shapes["audio"][0], jnp.float32),
            "text": 0.1 * jax.random.normal(ks[2], shapes["text"][0], jnp.float32),
            "text_mask": jnp.ones(shapes["text_mask"][0], bool),
            "ref": jax.random.normal(ks[3], shapes["ref"][0], jnp.float32)}

  def run(b):
    """init, a synthetic batch made on the device, warm-up steps, timed steps (each synchronised)."""
    compiled = tries[b][0]
    state = batch = None
    losses, times = [], []
    try:
      state = setup.init_fn()
      batch = jax.jit(make_batch, static_argnums=1, out_shardings=setup.batch_shardings)(jax.random.key(1), b)
      for i in range(warmup + steps):
        if i > warmup and sec.left() < 0:
          break
        t = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready((state, m))
        dt = time.perf_counter() - t
        losses.append(float(m["loss"]))
        if i >= warmup:
          times.append(dt)
    finally:
      del state, batch
    return losses, times

  try:
    losses, times = run(b)
  except Exception as e:  # noqa: BLE001 -- out of memory at run time despite the analysis: once, 3/4 of the batch
    if b == 1 or not any(w in str(e) for w in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")):
      raise
    sec.error(dict(variant=variant, batch=b, note="retrying at 3/4 of the batch"), e)
    b = max(1, (b * 3) // 4)
    if b not in tries:
      t = time.perf_counter()
      record(b, _compile_all([(b, lambda: lower(b))], 1)[b], time.perf_counter() - t)
    if isinstance(tries[b][0], Exception):
      raise tries[b][0]
    losses, times = run(b)
  compiled, mem = tries[b]
  xla_flops = train_lib.compiled_flops(compiled)
  step_s = float(np.median(times))
  fl = {k: (v * b if k in ("matmul_fwd_flops", "attention_fwd_flops", "model_flops", "six_nt_flops") else v)
        for k, v in flops.items()}   # per example (traced at batch 1) -> per step
  tflops = fl["model_flops"] / step_s / 1e12
  res = dict(variant=variant, batch=b, tokens_per_step=b * fl["tokens_per_example"], params=fl["params"],
             remat=args.remat, step_s=round(step_s, 4), step_min_s=round(min(times), 4),
             steps_s=[round(x, 4) for x in times], warmup=warmup, losses=[_finite(x) for x in losses],
             memory=mem, memory_fraction_of_limit=round(mem["estimate_bytes"] / limit, 4),
             model_flops=fl["model_flops"], six_nt_flops=fl["six_nt_flops"], xla_cost_flops=xla_flops,
             model_tflops=round(tflops, 2), six_nt_tflops=round(fl["six_nt_flops"] / step_s / 1e12, 2),
             six_nt_over_model=round(fl["six_nt_flops"] / fl["model_flops"], 3),
             six_nt_note="6·N·T applies every parameter to every token; the audio stream (about half of N) sees only "
                         "the audio tokens and the cross-attention K/V only the text / reference tokens, so it "
                         "overstates the work by six_nt_over_model: MFU uses model_flops",
             xla_cost_tflops=None if not xla_flops else round(xla_flops / step_s / 1e12, 2),
             tokens_per_s=round(b * fl["tokens_per_example"] / step_s, 1),
             measured_matmul_tflops=matmul and matmul["tflops"], datasheet_tflops=DATASHEET_TFLOPS,
             mfu_vs_measured=None if not matmul else round(tflops / matmul["tflops"], 4),
             mfu_vs_datasheet=round(tflops / DATASHEET_TFLOPS, 4),
             attention_impl_joint=impl_joint, attention_impl_cross=impl_cross,
             synthetic_batch=True)
  sec.write(record="result", **res)
  return res


# ------------------------------------------------------------------------------------------------ main

def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="output folder: <section>.jsonl files and summary.json")
  p.add_argument("--dry-run", action="store_true", help="tiny sizes on any backend (CPU: Pallas interpret mode); "
                 "every record says dry_run: true")
  p.add_argument("--budget-s", type=float, default=420.0, help="global time budget; what is left is skipped")
  p.add_argument("--section-s", default="", help="per-section allowances in seconds, e.g. correctness=90,attention=120 "
                 f"(defaults {dict((k, v) for k, v in SECTION_S.items() if v < 1e8)}; train: whatever is left)")
  p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in this order")
  p.add_argument("--dtypes", default="bfloat16,float32", help="correctness dtypes")
  p.add_argument("--head-dims", default="64,128", help="correctness head dims")
  p.add_argument("--attn-lengths", default="", help="attention timing lengths (default 4096,8192,16384)")
  p.add_argument("--repeats", type=int, default=0, help="timed calls per figure (default 10 on GPU, 1 dry)")
  p.add_argument("--compile-workers", type=int, default=0, help="compile threads (default: CPU count, max 12)")
  p.add_argument("--train-size", default="1b", choices=[k for k in SIZES if k != "dry"])
  p.add_argument("--layers", type=int, default=0, help="override the train model's layer count")
  p.add_argument("--train-variants", default="trainer,no_tv2a_mask")
  p.add_argument("--remat", default="full", help="trainer.remat policy (shared/nn/remat.py names)")
  p.add_argument("--mem-frac", type=float, default=0.85, help="fraction of the allocator's limit the batch may fill")
  p.add_argument("--max-batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=5, help="timed train steps (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed train steps first (already compiled)")
  p.add_argument("--dry-mem-mb", type=int, default=512, help="dry run: the fictitious device memory for the batch fit")
  p.add_argument("--keep-cpu-opt", action="store_true", help="dry run on a CPU: keep XLA's LLVM optimisation "
                 "level (by default lowered to 0 there, which halves compile times)")
  p.add_argument("--verbose", action="store_true", help="echo every record to stdout")
  args = p.parse_args(argv)
  unknown = [s for s in args.sections.split(",") if s and s not in SECTIONS]
  if unknown:
    p.error(f"--sections: unknown {unknown}; expected names from {SECTIONS}")
  return args


def _cpu_only() -> bool:
  """Before JAX starts: will this process see no GPU? (JAX_PLATFORMS=cpu, or no NVIDIA device nodes.)"""
  import glob
  return os.environ.get("JAX_PLATFORMS", "").strip() == "cpu" or not glob.glob("/dev/nvidia[0-9]*")


def main(argv=None) -> int:
  args = parse(argv)
  if args.dry_run and "jax" not in sys.modules and _cpu_only() and not args.keep_cpu_opt:
    # dry run on a CPU: LLVM at -O0 halves XLA's CPU compile times (the train step: ~27 s -> ~15 s on 2 cores);
    # recorded in every header's xla_flags. Never on a GPU machine (it would slow the GPU kernels' host code too).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  jax = _jax()
  backend = jax.default_backend()
  if backend != "gpu" and not args.dry_run:
    print(f"error: gpu_suite needs a GPU (jax backend is {backend!r}); --dry-run runs every path at tiny sizes "
          "here, with no meaningful timings", file=sys.stderr)
    return 2
  args.repeats = args.repeats or (1 if args.dry_run else 10)
  args.compile_workers = args.compile_workers or min(12, os.cpu_count() or 1)
  allow = dict(SECTION_S)
  for item in filter(None, args.section_s.split(",")):
    k, v = item.split("=")
    allow[k.strip()] = float(v)
  suite = Suite(args)
  print(json.dumps(dict(gpu_suite="start", out=args.out, dry_run=suite.dry, backend=backend,
                        device=suite.facts["device_kind"], budget_s=args.budget_s)), flush=True)
  fns = dict(correctness=section_correctness, attention=section_attention, conv=section_conv, train=section_train)
  for name in [s for s in args.sections.split(",") if s]:
    sec = Section(suite, name, allow.get(name, 1e9))
    if suite.left() <= 0:
      sec.write(record="skipped", skipped="skipped: budget", budget_s=args.budget_s)
      sec.close("skipped")
    else:
      try:
        fns[name](sec, args)
        c = sec.counts
        sec.close("failures" if c["failed"] else "errors" if c["errors"] else "partial" if c["skipped"] else "ok")
      except Exception as e:  # noqa: BLE001 -- one section's failure is a record; the suite goes on
        sec.error(dict(what="section"), e)
        sec.close("error")
    s = suite.summary["sections"][name]
    print(json.dumps(dict(section=name, **{k: s[k] for k in ("status", "wall_s", "records", "errors", "skipped",
                                                               "refused", "passed", "failed")})), flush=True)
  suite.summary["finished"] = _now()
  suite.write_summary()
  print(json.dumps(dict(gpu_suite="done", wall_s=suite.summary["wall_s"],
                        summary=os.path.join(args.out, "summary.json"))), flush=True)
  if any(not f.done() for c in Compiler.open for f in c.futs.values()):
    sys.stderr.flush()
    os._exit(0)   # compiles abandoned at a deadline would otherwise hold the interpreter's exit until they finish
  return 0


if __name__ == "__main__":
  sys.exit(main())
