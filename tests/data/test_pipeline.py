"""grain pipelines: exact iterator state (also through orbax), host sharding, padding buckets."""
from __future__ import annotations

import numpy as np
import pytest

from shared.data import pipeline as P
from shared.data.synthcue import SynthCue
from shared.errors import DataError


class Toy:
  """A tiny random-access source: sample i has a sequence of length 1 + i % 5 filled with i."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"x": np.full((1 + i % 5, 2), i, np.int32), "id": i, "name": f"s{i}"}


def _ids(batch):
  return batch["id"].tolist()


def test_state_restore_yields_same_batches():
  it = P.make_iterator(Toy(23), batch_size=4, seed=7, num_threads=2)
  for _ in range(7):                                   # crosses an epoch boundary (5 batches/epoch)
    next(it)
  state = it.get_state()
  expected = [_ids(next(it)) for _ in range(6)]
  fresh = P.make_iterator(Toy(23), batch_size=4, seed=7, num_threads=2)
  fresh.set_state(state)
  assert [_ids(next(fresh)) for _ in range(6)] == expected
  # epochs are reshuffled, and every record appears once per epoch (drop_remainder drops 3)
  it = P.make_iterator(Toy(23), batch_size=4, seed=7)
  e1 = sum((_ids(next(it)) for _ in range(5)), [])
  e2 = sum((_ids(next(it)) for _ in range(5)), [])
  assert len(set(e1)) == 20 and e1 != e2
  other = P.make_iterator(Toy(23), batch_size=4, seed=8)
  assert sum((_ids(next(other)) for _ in range(5)), []) != e1


def test_state_through_orbax(tmp_path):
  import grain
  import orbax.checkpoint as ocp
  src = SynthCue(num_samples=12, render_video=False, render_audio=False)
  fn = P.collate_fn(keys=["lip", "char_ids", "speaker"], multiple=8)
  it = P.make_iterator(src, fn, batch_size=3, seed=1, num_threads=2)
  next(it), next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mgr:
    mgr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mgr.wait_until_finished()
    want = [next(it) for _ in range(3)]
    fresh = P.make_iterator(src, fn, batch_size=3, seed=1, num_threads=2)
    mgr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  got = [next(fresh) for _ in range(3)]
  for a, b in zip(want, got):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert want[0]["lip"].shape[1] % 8 == 0 and want[0]["lip_mask"].dtype == bool


def test_host_shards_are_disjoint_and_cover():
  seen = []
  for host in range(3):
    it = P.make_iterator(Toy(30), batch_size=2, seed=0, num_epochs=1, shard=(host, 3),
                         drop_remainder=False)
    seen.append(sorted(sum((_ids(b) for b in it), [])))
  assert sorted(sum(seen, [])) == list(range(30))
  assert seen[1] == list(range(1, 30, 3))
  with pytest.raises(DataError, match="fewer than one batch"):
    P.make_iterator(Toy(4), batch_size=3, seed=0, shard=(1, 2))


def test_collate_pads_to_buckets():
  samples = [Toy(10)[i] for i in (1, 3, 4)]           # lengths 2, 4, 5
  b = P.collate(samples, buckets={"x": [4, 8, 16]}, strings=True, pad_values={"x": -1})
  assert b["x"].shape == (3, 8, 2) and b["x"].dtype == np.int32
  assert b["x_lengths"].tolist() == [2, 4, 5]
  assert b["x_mask"].sum(1).tolist() == [2, 4, 5]
  assert (b["x"][0, 2:] == -1).all() and (b["x"][2, :5] == 4).all()
  assert b["id"].tolist() == [1, 3, 4] and b["name"] == ["s1", "s3", "s4"]
  assert b["id"].dtype == np.int32
  assert "name" not in P.collate(samples)
  assert P.collate(samples, multiple=4)["x"].shape == (3, 8, 2)
  assert P.collate(samples, keys=["x"], fixed=[])["x"].shape == (3, 5, 2)
  with pytest.raises(DataError, match="largest padding bucket 4"):
    P.collate(samples, buckets={"x": [4]})
  assert P.bucket_length(17, [16, 32]) == 32 and P.bucket_length(17, None, 8) == 24
