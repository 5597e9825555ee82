"""grain input pipelines: shard per host, shuffle, map, pad to length buckets, batch.

    it = make_iterator(SynthCue(cfg), collate_fn, batch_size=8, seed=0)
    batch = next(it)                        # dict of padded numpy arrays + lengths/masks
    state = it.get_state()                  # exact: set_state(state) on a fresh iterator resumes
                                            # with the very next batch

The pipeline is `MapDataset.source(src)[process_index::process_count].seed(seed).shuffle()
.repeat(num_epochs).map(fn).batch(batch_size, batch_fn=...).to_iter_dataset()`: every host reads
a disjoint, interleaved shard of the records, reshuffled every epoch (grain reseeds per epoch),
and `batch_size` is the per-host batch. The trainer stores the iterator state in its orbax
checkpoints with `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`.

`collate(samples, ...)` is the default batch function: arrays that vary in length along axis 0
(frames, samples, tokens) are padded to the smallest configured bucket that fits the longest
(so the set of shapes a jitted step sees stays small) and come with `<key>_lengths` [B] int32
and `<key>_mask` [B, L] bool; scalars are stacked (python ints/floats as int32/float32); strings
are kept as lists only if asked.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

from shared.errors import DataError

Sample = Mapping[str, Any]


def host_shard() -> tuple[int, int]:
  """(process_index, process_count) from JAX; (0, 1) when JAX is absent."""
  try:
    import jax
    return jax.process_index(), jax.process_count()
  except ImportError:  # pragma: no cover - jax is a dependency; keeps data tools usable alone
    return 0, 1


def make_dataset(source, batch_fn: Callable[[Sequence[Sample]], Any] | None = None, *,
                 batch_size: int, seed: int, shuffle: bool = True, num_epochs: int | None = None,
                 drop_remainder: bool = True, map_fn: Callable[[Sample], Sample] | None = None,
                 random_map_fn: Callable[[Sample, np.random.Generator], Sample] | None = None,
                 skip_none: bool = False, shard: tuple[int, int] | None = None, num_threads: int = 4,
                 prefetch: int = 16, workers: int = 0) -> grain.IterDataset:
  """The grain dataset behind `make_iterator` (see module docstring).

  Args:
    source: a random-access source (`__len__`, `__getitem__`), e.g. `SynthCue` or a tfds source.
    batch_fn: list of samples -> batch (default: `collate` with its defaults).
    batch_size: per-host batch size.
    num_epochs: None = repeat forever.
    map_fn: sample -> example. random_map_fn: (sample, rng) -> example, for augmentation: grain seeds
      the np.random.Generator from (seed, position in the repeated stream), so every epoch draws anew
      and a resumed iterator draws the same as an uninterrupted one. Both given: map_fn runs first.
    skip_none: drop samples that are None (a reader with skip=True returns None for a bad clip; a
      map may return None to drop one) before batching, so batches stay full.
    shard: (index, count) of this host; default from `jax.process_index/process_count`.
    num_threads / prefetch: grain read threads and prefetch buffer (samples).
    workers: > 0 adds `mp_prefetch` with this many processes (generation is CPU-bound and threads
      share the GIL). Needs absl flags parsed (the trainers' entry points do); each worker start
      costs seconds; the state stays exact (checked by hand, not in the suite: too slow).
  """
  if batch_size < 1:
    raise DataError(f"batch_size must be >= 1, got {batch_size}", key="batch_size")
  index, count = shard if shard is not None else host_shard()
  ds = grain.MapDataset.source(source)
  if count > 1:
    ds = ds[index::count]
  if len(ds) < (batch_size if drop_remainder else 1):
    raise DataError(f"host shard {index}/{count} holds {len(ds)} records, fewer than one batch "
                    f"of {batch_size}", key="batch_size")
  ds = ds.seed(seed)
  if shuffle:
    ds = ds.shuffle()
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if map_fn is not None:
    ds = ds.map(map_fn)
  if random_map_fn is not None:
    ds = ds.random_map(random_map_fn)
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  if skip_none:   # filtered elements are skipped when the map dataset becomes an iter dataset
    ds = ds.filter(lambda x: x is not None)
    out = ds.to_iter_dataset(opts).batch(batch_size, drop_remainder=drop_remainder,
                                         batch_fn=batch_fn or collate)
  else:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=batch_fn or collate)
    out = ds.to_iter_dataset(opts)
  if workers > 0:
    out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return out


def make_iterator(source, batch_fn: Callable[[Sequence[Sample]], Any] | None = None, *,
                  batch_size: int, seed: int, shuffle: bool = True, num_epochs: int | None = None,
                  drop_remainder: bool = True, **kw) -> grain.DatasetIterator:
  """A checkpointable iterator of batches: `get_state()` / `set_state(state)` are exact."""
  return iter(make_dataset(source, batch_fn, batch_size=batch_size, seed=seed, shuffle=shuffle,
                           num_epochs=num_epochs, drop_remainder=drop_remainder, **kw))


def bucket_length(n: int, buckets: Sequence[int] | None = None, multiple: int = 1) -> int:
  """Smallest bucket >= n (buckets sorted ascending); without buckets, n rounded up to `multiple`.

  Lengths beyond the largest bucket raise `DataError` (truncate upstream or add a bucket).
  """
  if buckets:
    for b in sorted(buckets):
      if b >= n:
        return int(b)
    raise DataError(f"length {n} exceeds the largest padding bucket {max(buckets)}")
  return int(-(-n // multiple) * multiple)


def pad_stack(arrays: Sequence[np.ndarray], length: int | None = None, pad_value=0):
  """Stack arrays that differ along axis 0: ([B, L, ...], lengths [B] int32, mask [B, L] bool)."""
  lengths = np.array([a.shape[0] for a in arrays], np.int32)
  length = int(lengths.max()) if length is None else int(length)
  if lengths.max() > length:
    raise DataError(f"cannot pad length {lengths.max()} into {length}")
  tail = arrays[0].shape[1:]
  for a in arrays:
    if a.shape[1:] != tail:
      raise DataError(f"arrays to pad differ beyond axis 0: {a.shape[1:]} vs {tail}")
  out = np.full((len(arrays), length) + tail, pad_value, dtype=arrays[0].dtype)
  for i, a in enumerate(arrays):
    out[i, :a.shape[0]] = a
  mask = np.arange(length)[None, :] < lengths[:, None]
  return out, lengths, mask


def collate(samples: Sequence[Sample], *, keys: Sequence[str] | None = None,
            buckets: Mapping[str, Sequence[int]] | None = None, multiple: int = 1,
            pad_values: Mapping[str, Any] | None = None, fixed: Sequence[str] = (),
            strings: bool = False) -> dict[str, Any]:
  """Batch sample dicts into padded numpy arrays.

  Args:
    keys: which keys to batch (default: all keys of the first sample).
    buckets: per key, the allowed padded lengths along axis 0 (e.g. {"video": [50, 75, 100]}).
    multiple: for keys without buckets, pad axis 0 up to a multiple of this.
    pad_values: per key pad value (default 0).
    fixed: array keys whose shape is the same in every sample: stacked, no lengths/mask.
    strings: keep str values as lists (default: drop them; jitted steps cannot take them).
  """
  keys = list(keys or samples[0].keys())
  buckets, pad_values = buckets or {}, pad_values or {}
  out: dict[str, Any] = {}
  for k in keys:
    vals = [s[k] for s in samples]
    v0 = vals[0]
    if isinstance(v0, str):
      if strings:
        out[k] = list(vals)
    elif isinstance(v0, np.ndarray) and v0.ndim >= 1 and k not in fixed:
      n = max(v.shape[0] for v in vals)
      arr, lengths, mask = pad_stack(vals, bucket_length(n, buckets.get(k), multiple),
                                     pad_values.get(k, 0))
      out[k], out[k + "_lengths"], out[k + "_mask"] = arr, lengths, mask
    else:
      arr = np.stack([np.asarray(v) for v in vals])
      if arr.dtype == np.int64 or arr.dtype == np.float64:   # python scalars: JAX's default widths
        arr = arr.astype(np.int32 if arr.dtype == np.int64 else np.float32)
      out[k] = arr
  return out


def collate_fn(**kw) -> Callable[[Sequence[Sample]], dict[str, Any]]:
  """`collate` with fixed options, as a picklable batch function."""
  return functools.partial(collate, **kw)
