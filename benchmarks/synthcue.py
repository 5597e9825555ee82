"""SynthCue generation speed: samples/s on one core, per mode and rendering option (JSON lines).

    python benchmarks/synthcue.py [--n 200] [--pipeline]

One process, one thread (numpy/BLAS pinned to 1 thread before import), so the numbers are per core.
`realtime` is seconds of generated audio-visual speech per second of compute. `--pipeline`
also times the grain pipeline (threads, collate into padded batches) on all cores; `--tfds` writes
the samples once as tfds array_record shards and times reading them back (the cached path).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

from shared.data.synthcue import SynthCue  # noqa: E402


def bench(n: int, **cfg) -> dict:
  src = SynthCue(num_samples=n, **cfg)
  src[0]
  t0 = time.perf_counter()
  frames = 0
  for i in range(n):
    frames += src[i]["lip"].shape[0]
  dt = time.perf_counter() - t0
  return dict(bench="synthcue", **cfg, n=n, samples_per_s_per_core=round(n / dt, 1),
              ms_per_sample=round(1e3 * dt / n, 2), mean_frames=round(frames / n, 1),
              realtime=round(frames / 25 / dt, 1), cpu=platform.processor() or platform.machine())


def bench_pipeline(n: int, batch_size: int = 8) -> dict:
  from shared.data import pipeline as P
  src = SynthCue(num_samples=10 * n)
  it = P.make_iterator(src, P.collate_fn(keys=["video", "lip", "pose", "audio", "char_ids"]),
                       batch_size=batch_size, seed=0, num_threads=os.cpu_count() or 1)
  next(it)
  t0 = time.perf_counter()
  steps = max(1, n // batch_size)
  for _ in range(steps):
    next(it)
  dt = time.perf_counter() - t0
  return dict(bench="synthcue_pipeline", batch_size=batch_size, cores=os.cpu_count(),
              samples_per_s=round(steps * batch_size / dt, 1))


def bench_tfds(n: int) -> dict:
  """Write n cued samples as tfds array_record shards once, then time reading them back."""
  import tempfile
  from shared.data.synthcue import SynthCueConfig
  from shared.data.tfds_synthcue import SynthcueBuilder, builder_config, decode
  with tempfile.TemporaryDirectory() as d:
    b = SynthcueBuilder(config=builder_config("bench", SynthCueConfig(), {"train": n}), data_dir=d)
    t0 = time.perf_counter()
    b.download_and_prepare()
    t_write = time.perf_counter() - t0
    ds = b.as_data_source()["train"]
    t0 = time.perf_counter()
    for i in range(n):
      decode(ds[i])
    t_read = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
  return dict(bench="synthcue_tfds", mode="cued", n=n,
              write_ms_per_sample=round(1e3 * t_write / n, 2),
              read_ms_per_sample=round(1e3 * t_read / n, 2), kb_per_sample=round(size / n / 1e3, 1))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=200)
  ap.add_argument("--pipeline", action="store_true")
  ap.add_argument("--tfds", action="store_true")
  args = ap.parse_args()
  for cfg in (dict(mode="cued"), dict(mode="speech"), dict(mode="sign"),
              dict(mode="cued", render_video=False), dict(mode="cued", render_audio=False),
              dict(mode="cued", render_video=False, render_audio=False),
              dict(mode="cued", frame_size=96, lip_size=48)):
    print(json.dumps(bench(args.n, **cfg)), flush=True)
  if args.pipeline:
    print(json.dumps(bench_pipeline(args.n)), flush=True)
  if args.tfds:
    print(json.dumps(bench_tfds(args.n)), flush=True)


if __name__ == "__main__":
  main()
