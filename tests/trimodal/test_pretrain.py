"""trimodal_jax.pretrain / pretrain_export: the stand-in pretraining tasks (gloss cuts against the sample's own
spans, CTC labels), each task's loss finite and falling over a few steps at a tiny batch (the lip BatchNorm
statistics updated), the export read back by load_pretrained equal to the trained subtree, and the tiny TriModal
init reading all four exports at the right prefixes (every leaf loaded, nothing missing but LoRA)."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from configs.trimodal.pretrain import get_config
from configs.trimodal.tiny import get_config as tiny_config
from shared.weights import load_pretrained
from shared.weights.init import apply_init_entries, load_into
from trimodal_jax import data as data_lib
from trimodal_jax import pretrain as P
from trimodal_jax import pretrain_export as E
from trimodal_jax import task as task_lib

NAMES = ("sign", "lip", "audio", "llm")
_CACHE: dict = {}


def small(name):
  cfg = get_config(name)
  cfg.data.update(dict(num_samples=16, frame_buckets=(48,), eval_samples=4))
  return cfg


def batch(cfg, n=2):
  example, collate, total = P.example_fn(cfg, "train")
  rng = np.random.default_rng(0)
  ex = [e for e in (example(i, rng) for i in range(total)) if e is not None][:n]
  return collate(ex)


def trained(name):
  """(cfg, task, batch, losses, variables before, variables after) of 5 Adam steps on one tiny batch."""
  if name in _CACHE:
    return _CACHE[name]
  cfg = small(name)
  task = P.make_task(cfg)
  b = batch(cfg, 1 if name == "sign" else 2)
  v0 = nn.meta.unbox(task.init_params(jax.random.key(0), b))
  params = v0["params"] if task.mutable else v0
  ms = {k: v0[k] for k in task.mutable}
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt, ms, rng):
    def f(p):
      out = task.loss_fn(p, b, rng, ms) if task.mutable else (*task.loss_fn(p, b, rng), ms)
      return out[0] / out[1]["weight"], out[2]
    (loss, ms2), g = jax.value_and_grad(f, has_aux=True)(params)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, ms2, loss

  opt, losses, p = tx.init(params), [], params
  for i in range(5):
    p, opt, ms, loss = step(p, opt, ms, jax.random.key(i + 1))
    losses.append(float(loss))
  _CACHE[name] = (cfg, task, b, losses, v0, {"params": p, **ms})
  return _CACHE[name]


def test_gloss_examples_are_the_sample_spans_and_labels():
  cfg = small("sign")
  src = P.source(cfg, "train")
  s = src[3]
  e = P.gloss_example(3, None, cfg=cfg, src=src)
  video = data_lib.sign_frames(s["video"], 32)
  g, length = len(s["gloss_ids"]), int(cfg.data.gloss_frames)
  assert e["clips"].shape == (P.max_glosses(cfg), length, 32, 32, 3)
  np.testing.assert_array_equal(e["labels"][:g], s["gloss_ids"])
  np.testing.assert_array_equal(e["mask"], (np.arange(len(e["mask"])) < g).astype(np.float32))
  for k in range(g):                                   # gloss k = spoken syllable gloss_order[k]
    a, z = s["syllable_frames"][s["gloss_order"][k]]
    n = int(e["lengths"][k])
    assert n == min(z - a, length) and n >= 4
    a = a + max(0, (z - a - length) // 2)
    np.testing.assert_array_equal(e["clips"][k, :n], video[a:a + n])
    np.testing.assert_array_equal(e["clips"][k, n:], np.broadcast_to(video[a + n - 1], e["clips"][k, n:].shape))
  # the hands of each gloss differ from the next gloss's (the cut is where the form changes)
  assert not np.array_equal(e["clips"][0, 0], e["clips"][1, 0])


def test_sign_standin_learns_from_other_signers_of_the_same_language():
  cfg = small("sign")
  train, test = P.source(cfg, "train"), P.source(cfg, "test")
  own = P.world(cfg)
  assert train.config.n_speakers == cfg.data.sign_pretrain_signers == 32 and len(train.speakers) == 32
  assert test.world is own and test.speakers.tolist() == [6, 7]          # evaluated on the tiny world's held-out
  assert train.world.chars == own.chars and np.array_equal(train.world.char_form, own.char_form)
  # none of the pretraining signers looks like a held-out one (background colour, the largest area)
  gap = np.abs(train.world.speakers["bg"][:, None] - own.speakers["bg"][None, 6:]).max(-1)
  assert gap.min() > 1.0
  # the optional augmentations (off by default): one colour transform and one shift per training clip (shapes,
  # labels and spans kept); eval clips untouched
  e0 = P.gloss_example(1, None, cfg=cfg, src=train)
  np.testing.assert_array_equal(P.gloss_example(1, np.random.default_rng(0), cfg=cfg, src=train)["clips"],
                                e0["clips"])
  cfg.data.update(dict(sign_color_jitter=True, sign_shift=2))
  e1 = P.gloss_example(1, np.random.default_rng(0), cfg=cfg, src=train)
  assert e1["clips"].shape == e0["clips"].shape and not np.array_equal(e1["clips"], e0["clips"])
  for k in ("labels", "lengths", "mask"):
    np.testing.assert_array_equal(e1[k], e0[k])
  np.testing.assert_array_equal(P.gloss_example(1, None, cfg=cfg, src=train)["clips"], e0["clips"])
  cfg.data.sign_pretrain_signers = 0                                   # the tiny world's own training signers
  assert P.source(cfg, "train").world is own


def test_ctc_and_lm_examples():
  cfg = small("lip")
  src = P.source(cfg, "train")
  e = P.speech_example(0, None, cfg=cfg, src=src)
  np.testing.assert_array_equal(e["labels"], src[0]["char_ids"] + 1)         # 0 = blank
  assert e["x"].shape == (src[0]["lip"].shape[0], 24, 24) and e["x"].dtype == np.uint8
  cfg = small("llm")
  tok = data_lib.tokenizer(cfg)
  b = batch(cfg, 3)
  src = P.source(cfg, "train")
  for i in range(3):
    text = "".join(src.world.chars[c] for c in src.sentence(i)[0])
    n = int(b["length"][i])
    assert b["ids"][i, 0] == tok.bos_token_id and b["ids"][i, n - 1] == tok.eos_token_id
    assert data_lib.decode_text(tok, b["ids"][i, 1:]) == text


@pytest.mark.parametrize("name", NAMES)
def test_loss_finite_and_falls(name):
  cfg, task, b, losses, v0, v1 = trained(name)
  assert all(np.isfinite(losses)), losses
  assert losses[-1] < 0.9 * losses[0], losses
  if name == "lip":      # BatchNorm on batch statistics: the running statistics moved
    s0 = traverse_util.flatten_dict(v0["batch_stats"])
    s1 = traverse_util.flatten_dict(v1["batch_stats"])
    assert set(s0) == set(s1) and any(not np.allclose(s0[k], s1[k]) for k in s0)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  """name -> the directory pretrain_export wrote for that stand-in's trained variables (made once, on first use:
  any test may run alone)."""
  made: dict = {}

  def get(name):
    if name not in made:
      cfg, _, _, _, _, v1 = trained(name)
      out = str(tmp_path_factory.mktemp(f"export_{name}"))
      E.write(cfg, v1["params"], {k: v for k, v in v1.items() if k != "params"}, out)
      made[name] = out
    return made[name]
  return get


@pytest.mark.parametrize("name", NAMES)
def test_export_reads_back_the_trained_subtree(name, export_dir):
  cfg, task, b, losses, v0, v1 = trained(name)
  out = export_dir(name)
  info = json.load(open(os.path.join(out, "standin.json")))
  assert info["standin"] == name and info["family"] == E.ROLES[name][0]
  module, got = load_pretrained(out)
  want = E.exported_variables(cfg, v1["params"], {k: v for k, v in v1.items() if k != "params"})
  ref_module, prefix = E.family_module(cfg)
  assert type(module) is type(ref_module)
  fg, fw = traverse_util.flatten_dict(got), traverse_util.flatten_dict(want)
  assert set(fg) == set(fw)
  for k in fw:
    np.testing.assert_array_equal(np.asarray(fg[k]), fw[k], err_msg=str(k))
  # and load_into the pretraining tree at the prefix (the fresh init) gives the trained values back
  tree = v0 if task.mutable else {"params": v0}
  back, report = load_into(tree, out, prefix=prefix, variables=True)
  assert report.ok and len(report.loaded) == len(fw)
  fb = traverse_util.flatten_dict(back)
  for k, v in traverse_util.flatten_dict(v1).items():
    if k[1] == prefix:
      np.testing.assert_array_equal(np.asarray(fb[k]), np.asarray(v), err_msg=str(k))


def test_tiny_trimodal_init_reads_every_export(export_dir):
  cfg = tiny_config("stage1")
  cfg.data.update(dict(frame_buckets=(32,), label_buckets=(8,)))
  for name in NAMES:
    cfg.init[name].path = export_dir(name)
  task = task_lib.make_task(cfg)
  spec = task_lib.batch_spec(cfg)
  abstract = jax.eval_shape(lambda r, b: nn.meta.unbox(task.init_params(r, b)), jax.random.key(0), spec)
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
  loaded, reports = apply_init_entries(cfg.init, variables, variables=True)
  for name in NAMES:
    r = reports[name]
    prefix = P.PREFIX[name]
    leaves = [k for k in traverse_util.flatten_dict(variables, sep="/") if k.split("/")[1] == prefix]
    lora = [k for k in leaves if k.rsplit("/", 1)[-1] in ("lora_a", "lora_b")]
    assert not r.unexpected and not r.mis_shaped, r.table()
    assert sorted(e.key for e in r.missing) == sorted(k.split("/", 1)[1] for k in lora), r.table()
    assert len(r.loaded) == len(leaves) - len(lora) > 0, (name, len(r.loaded), len(leaves), len(lora))
    assert (name == "llm") == bool(lora)
    # the values are the trained ones
    _, _, _, _, _, v1 = trained(name)
    want = traverse_util.flatten_dict(v1, sep="/")
    got = traverse_util.flatten_dict(loaded, sep="/")
    for k in leaves:
      if k not in lora:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
  # the other parts keep their (zero) init
  assert not np.asarray(loaded["params"]["mapping"]["fc1"]["kernel"]).any()
