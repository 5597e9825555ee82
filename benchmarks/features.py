"""Where to compute Whisper log-mel: host numpy (per utterance, in the data workers) or on the
accelerator (batched, jitted `whisper_log_mel_jax`)? Prints one JSON line per setting.

  python benchmarks/features.py [--batch 1 8 32] [--seconds 30] [--repeats 3]

Measured (this CPU-only machine, 2 shared cores, 30 s clips, 2 repeats): host numpy 0.078 s per
utterance (12.8 utt/s at batch 1, 10.5 at batch 8); jitted JAX on the same CPU 23.3 utt/s at batch 1,
13.0 at batch 8 -- the same order, since both are one FFT + one matmul. A 30 s clip costs ~0.08 s of
one host core, far below a step of any model that consumes Whisper features, so the choice is: host
numpy features in the grain workers by default (no device memory, overlapped with the step by
prefetch), and `whisper_log_mel_jax` inside the jitted step when host cores per accelerator are few
(a batched FFT + matmul, expected to be cheap next to a model step). No accelerator was free to
measure here; re-run this script on the target machine to decide: it prints utterances/s for both.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _time(fn, repeats: int) -> float:
  fn()  # warm-up (jit compile, mel-filter cache)
  t = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - t) / repeats


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  ap.add_argument("--seconds", type=float, default=30.0)
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  import jax
  from shared.data import features as F
  n = int(args.seconds * 16000)
  rng = np.random.default_rng(0)
  jit_fn = jax.jit(lambda a: F.whisper_log_mel_jax(a, n_samples=n))
  for b in args.batch:
    audio = (0.1 * rng.standard_normal((b, n))).astype(np.float32)
    host = _time(lambda: [F.whisper_log_mel(a, n_samples=n) for a in audio], args.repeats)
    dev_in = jax.device_put(audio)
    dev = _time(lambda: jit_fn(dev_in).block_until_ready(), args.repeats)
    for where, sec in (("host_numpy", host), ("jax_" + jax.default_backend(), dev)):
      print(json.dumps({"feature": "whisper_log_mel", "where": where, "batch": b,
                        "seconds_audio": args.seconds, "s_per_batch": round(sec, 5),
                        "utterances_per_s": round(b / sec, 2)}))
  for name, fn in (("audioldm_mel", F.audioldm_mel), ("mmaudio_mel_16k", F.mmaudio_mel),
                   ("kaldi_fbank", F.kaldi_fbank)):
    a = (0.1 * rng.standard_normal(n)).astype(np.float32)
    sec = _time(lambda: fn(a), args.repeats)
    print(json.dumps({"feature": name, "where": "host_numpy", "batch": 1, "seconds_audio": args.seconds,
                      "s_per_batch": round(sec, 5), "utterances_per_s": round(1 / sec, 2)}))


if __name__ == "__main__":
  main()
