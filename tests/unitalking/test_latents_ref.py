"""Training from prepared latents with another seed redraws the reference tokens (latents.own_ref): the same rule
as data.prepare's, data.ref_len included; ref_len enters the latents' config hash only when set."""
import numpy as np

from configs.unitalking import tiny
from unitalking_jax import data as data_lib
from unitalking_jax import latents as lat


def test_own_ref_is_prepares_rule_with_ref_len():
  audio = np.random.default_rng(0).normal(size=(42, 20)).astype(np.float32)
  for length in (0, 8, 57):
    perm = np.random.default_rng([3, 11]).permutation(42)
    want = data_lib.ref_tokens(audio, 1, perm, length)
    got = lat.own_ref(audio, 3, 11, 1, length)
    np.testing.assert_array_equal(got, want)
    assert got.shape == ((length or 42), 20)
  assert not lat.own_ref(audio, 3, 11, 1, 57)[42:].any()                   # zero rows after the clip's own 42


def test_ref_len_in_the_config_hash_only_when_set():
  cfg = tiny.get_config()
  base = lat.config_hash(cfg)
  cfg.data.ref_len = 0
  assert lat.config_hash(cfg) == base
  cfg.data.ref_len = 16
  assert lat.config_hash(cfg) != base and lat.codec_config(cfg)["ref_len"] == 16
