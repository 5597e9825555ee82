"""Structured attention masks that kernels can skip block by block.

A `BlockMask` labels every query and key position with a small integer (its modality / segment
kind) and gives a rule per (query label, key label) pair:

  0 = BLOCKED  the query may not see the key
  1 = FULL     the query sees the key
  2 = CAUSAL   the query sees the key iff k_pos <= q_pos + causal_offset

so mask[i, j] = rule[q_labels[i], k_labels[j]] (evaluated at positions i, j). From this a kernel gets
both the exact element mask (recomputed in-kernel from two label vectors) and a tiny per-block table
(`block_table`) that says which (query block, key block) tiles contain any visible pair: the others
are never loaded. Examples:

  tv2a(video_len, audio_len)     UniTalking TV2A: sequence = [video | audio]; video queries may not
                                 attend to audio keys; audio queries see everything.
  prefix_causal(prefix_len, L)   an LLM's modality prefix (bidirectional) followed by a causal target.
"""
from __future__ import annotations

import dataclasses

import numpy as np

BLOCKED, FULL, CAUSAL = 0, 1, 2
SKIP_TILE, PARTIAL_TILE, FULL_TILE = 0, 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class BlockMask:
  """q_labels int32 [Lq], k_labels int32 [Lk], rules int8 [M, M] (see module docstring)."""
  q_labels: np.ndarray
  k_labels: np.ndarray
  rules: np.ndarray
  causal_offset: int = 0

  def __post_init__(self):
    for name in ("q_labels", "k_labels"):
      arr = np.asarray(getattr(self, name), np.int32)
      if arr.ndim != 1:
        raise ValueError(f"BlockMask.{name} must be 1-D [length], got shape {arr.shape}")
      object.__setattr__(self, name, arr)
    rules = np.asarray(self.rules, np.int8)
    m = int(max(self.q_labels.max(initial=0), self.k_labels.max(initial=0))) + 1
    if rules.ndim != 2 or rules.shape[0] < m or rules.shape[1] < m:
      raise ValueError(f"BlockMask.rules must be [M, M] with M >= {m} labels, got {rules.shape}")
    if not np.isin(rules, (BLOCKED, FULL, CAUSAL)).all():
      raise ValueError("BlockMask.rules entries must be 0 (blocked), 1 (full) or 2 (causal)")
    object.__setattr__(self, "rules", rules)

  @property
  def q_len(self) -> int:
    return int(self.q_labels.shape[0])

  @property
  def kv_len(self) -> int:
    return int(self.k_labels.shape[0])

  def rule_list(self) -> tuple[tuple[int, int, int], ...]:
    """Non-blocked (q_label, k_label, rule) triples: what a kernel unrolls to build the element mask."""
    return tuple((int(a), int(b), int(self.rules[a, b])) for a, b in zip(*np.nonzero(self.rules)))

  def key(self) -> tuple:
    """Hashable identity (for caches)."""
    return (self.q_labels.tobytes(), self.k_labels.tobytes(), self.rules.tobytes(), self.rules.shape,
            self.causal_offset)

  def dense_rows(self, q_start: int, q_stop: int) -> np.ndarray:
    """bool [q_stop - q_start, Lk]: rows of the element mask (True = may attend)."""
    ql = self.q_labels[q_start:q_stop]
    r = self.rules[ql[:, None], self.k_labels[None, :]]
    qpos = np.arange(q_start, q_stop)[:, None] + self.causal_offset
    kpos = np.arange(self.kv_len)[None, :]
    return (r == FULL) | ((r == CAUSAL) & (kpos <= qpos))

  def rows(self, q_start, n: int):
    """jnp bool [n, Lk]: element-mask rows q_start .. q_start + n (q_start may be traced; rows past Lq
    are fully blocked). Built in-graph from the label vectors, so no [Lq, Lk] constant is embedded."""
    import jax
    import jax.numpy as jnp
    pad = self.rules.shape[0]  # an extra label whose rules are all BLOCKED
    rules = jnp.asarray(np.pad(self.rules, ((0, 1), (0, 1))))
    qlab = jax.lax.dynamic_slice(jnp.asarray(np.pad(self.q_labels, (0, n), constant_values=pad)), (q_start,), (n,))
    r = rules[qlab[:, None], jnp.asarray(self.k_labels)[None, :]]
    qpos = q_start + jnp.arange(n)[:, None] + self.causal_offset
    return (r == FULL) | ((r == CAUSAL) & (jnp.arange(self.kv_len)[None, :] <= qpos))

  def dense(self) -> np.ndarray:
    """bool [Lq, Lk] element mask (True = may attend)."""
    return self.dense_rows(0, self.q_len)


def block_table(q_len: int, kv_len: int, block_q: int, block_k: int, *, block_mask: BlockMask | None = None,
                causal: bool = False, causal_offset: int = 0, kinds: bool = False) -> np.ndarray:
  """Per-tile table [ceil(Lq/bq), ceil(Lk/bk)] of the mask (block mask AND causal k <= q + offset).

  kinds=False: bool, True where the tile holds at least one visible (query, key) pair.
  kinds=True: int8, 0 = SKIP (nothing visible), 1 = PARTIAL (needs the element mask), 2 = FULL (every
  real query sees every key: no mask work). Key padding past Lk makes a tile PARTIAL. Computed from
  per-tile label ranges in O((Lq + Lk)·M + nq·nk·M²) (never the dense mask) and cached per (lengths,
  blocks, mask), since every traced layer asks again.
  """
  if block_mask is not None and (block_mask.q_len != q_len or block_mask.kv_len != kv_len):
    raise ValueError(f"block mask is for lengths ({block_mask.q_len}, {block_mask.kv_len}) but attention "
                     f"has q length {q_len} and kv length {kv_len}")
  key = (q_len, kv_len, block_q, block_k, None if block_mask is None else block_mask.key(), causal, causal_offset)
  if key not in _TABLES:
    if len(_TABLES) > 256:
      _TABLES.clear()
    _TABLES[key] = _kinds(q_len, kv_len, block_q, block_k, block_mask, causal, causal_offset)
  table = _TABLES[key]
  return table.copy() if kinds else table > 0


_TABLES: dict = {}


def _label_ranges(labels: np.ndarray, n_labels: int, block: int):
  """Per tile and label: (min position, max position) of that label inside the tile (+inf/-inf if absent)."""
  n = -(-len(labels) // block)
  lab = np.pad(labels, (0, n * block - len(labels)), constant_values=-1).reshape(n, block)
  pos = np.arange(n * block).reshape(n, block)
  big = np.iinfo(np.int64).max // 4
  lo = np.stack([np.where(lab == a, pos, big).min(1) for a in range(n_labels)], 1)  # [n, M]
  hi = np.stack([np.where(lab == a, pos, -big).max(1) for a in range(n_labels)], 1)
  return lo, hi, lo < big


def _kinds(q_len, kv_len, block_q, block_k, block_mask, causal, causal_offset) -> np.ndarray:
  """Exact tile kinds without the dense mask: a tile is the product of its query rows and key columns,
  so its (q_label, k_label) pairs are all pairs of labels present; a causal pair's visibility depends
  only on the min/max positions of the two labels inside the tile."""
  if block_mask is None:
    block_mask = BlockMask(np.zeros(q_len, np.int32), np.zeros(kv_len, np.int32), [[FULL]])
  m = block_mask.rules.shape[0]
  qlo, qhi, qhas = _label_ranges(block_mask.q_labels, m, block_q)
  klo, khi, khas = _label_ranges(block_mask.k_labels, m, block_k)
  nq, nk = qlo.shape[0], klo.shape[0]
  any_vis = np.zeros((nq, nk), bool)
  all_vis = np.ones((nq, nk), bool)
  for a in range(m):
    for b in range(m):
      present = qhas[:, a, None] & khas[None, :, b]
      rule = block_mask.rules[a, b]
      offsets = ([block_mask.causal_offset] if rule == CAUSAL else []) + ([causal_offset] if causal else [])
      if rule == BLOCKED:
        some, every = np.zeros((nq, nk), bool), np.zeros((nq, nk), bool)
      elif not offsets:
        some, every = np.ones((nq, nk), bool), np.ones((nq, nk), bool)
      else:  # visible iff k <= q + off for the tighter offset
        off = min(offsets)
        some = klo[None, :, b] <= qhi[:, a, None] + off
        every = khi[None, :, b] <= qlo[:, a, None] + off
      any_vis |= present & some
      all_vis &= ~present | every
  if nk * block_k != kv_len:  # padded keys are masked: the last key tile is never FULL
    all_vis[:, -1] = False
  return np.where(any_vis & all_vis, FULL_TILE, np.where(any_vis, PARTIAL_TILE, SKIP_TILE)).astype(np.int8)


def from_segments(lengths, rules) -> BlockMask:
  """Self-attention mask over consecutive segments: segment s (of lengths[s]) gets label s."""
  labels = np.concatenate([np.full(int(n), s, np.int32) for s, n in enumerate(lengths)])
  return BlockMask(labels, labels, np.asarray(rules, np.int8))


def tv2a(video_len: int, audio_len: int) -> BlockMask:
  """UniTalking TV2A over the sequence [video | audio]: video queries see only video keys."""
  return from_segments((video_len, audio_len), [[FULL, BLOCKED], [FULL, FULL]])


def prefix_causal(prefix_len: int, total_len: int) -> BlockMask:
  """Prefix LM: the first `prefix_len` tokens see each other; later tokens see the prefix + causally."""
  if not 0 <= prefix_len <= total_len:
    raise ValueError(f"prefix_len {prefix_len} must lie in [0, total_len={total_len}]")
  return from_segments((prefix_len, total_len - prefix_len), [[FULL, BLOCKED], [FULL, CAUSAL]])


def causal(length: int) -> BlockMask:
  """Plain causal self-attention as a block mask."""
  return from_segments((length,), [[CAUSAL]])
