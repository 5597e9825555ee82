"""shared.weights.init: a family checkpoint into a prefix / renamed subtrees of a bigger tree, with a per-key report
(loaded / missing / unexpected / mis-shaped); strict, allow_missing and strict=False; config entries; a stateful
family (conv3d_resnet: params + batch_stats) into a system's variables, directly and through the trainer."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shared import mesh as mesh_lib
from shared import train as train_lib
from shared.errors import CheckpointError, ConfigError
from shared.models.llm import LLM, LLMConfig
from shared.nn.resnet import Conv3dResNet, ResNetConfig
from shared.models.wan_dit import WanDiT, WanDiTConfig
from shared.weights import io, load_pretrained, save_pretrained
from shared.weights import wan_dit_family as wan_fam
from shared.weights.init import apply_init_entries, init_entry, load_into

LLM_CFG = LLMConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_layers=2, num_heads=2, num_kv_heads=1,
                    head_dim=8, qk_norm=True, family="qwen3", attention_impl="xla")
WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2)
VIDEO = WanDiTConfig(**WAN, attention_impl="xla")
UNITALKING_RENAME = [("patch_embedding", "video_patch_embedding"), ("condition_embedder", "video_condition_embedder"),
                     ("blocks", "blocks/video"), ("proj_out", "video_head/proj_out"),
                     ("scale_shift_table", "video_head/scale_shift_table")]
is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731


def _flat(tree) -> dict[str, object]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def _random_init(model, seed: int, *args, **kwargs):
  """The model's boxed "params" with random values (eval_shape: no compile), norms far from their init."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes)


_LLM_BOXED = {}


def _llm_boxed(seed: int):
  if seed not in _LLM_BOXED:
    _LLM_BOXED[seed] = _random_init(LLM(LLM_CFG), seed, jnp.zeros((1, 1), jnp.int32))
  return jax.tree.map(lambda x: x, _LLM_BOXED[seed], is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
  """A tiny qwen3 checkpoint directory (our save_pretrained) and its params as load_pretrained reads them."""
  d = str(tmp_path_factory.mktemp("llm"))
  save_pretrained(LLM(LLM_CFG), nn.meta.unbox(_llm_boxed(0)), d)
  _, ref = load_pretrained(d)
  return d, ref


def _system(seed: int = 1):
  """A bigger tree: {"encoder": boxed LLM params (other init), "head": {...}} with a sharded bf16 leaf, a sharded
  f32 leaf and a numpy leaf."""
  mesh = Mesh(np.array(jax.devices()[:8]), ("fsdp",))
  enc = _llm_boxed(seed)
  e = enc["embed_tokens"]["embedding"]
  enc["embed_tokens"]["embedding"] = e.replace_boxed(jax.device_put(e.unbox(), NamedSharding(mesh, P(None, "fsdp"))))
  q = enc["layers"]["self_attn"]["q_proj"]["kernel"]
  enc["layers"]["self_attn"]["q_proj"]["kernel"] = q.replace_boxed(
      jax.device_put(q.unbox().astype(jnp.bfloat16), NamedSharding(mesh, P(None, "fsdp", None))))
  n = enc["norm"]["scale"]
  enc["norm"]["scale"] = n.replace_boxed(np.asarray(n.unbox()))
  head = {"kernel": jax.random.normal(jax.random.key(7), (16, 5)), "bias": np.arange(5, dtype=np.float32)}
  return {"encoder": enc, "head": head}


def _rewrite(src: str, dst, edit):
  """A copy of checkpoint dir `src` with edit(dict of tensors) applied (shared.weights.io)."""
  os.makedirs(dst, exist_ok=True)
  io.write_json(os.path.join(dst, "config.json"), io.read_json(os.path.join(src, "config.json")))
  r = io.SafetensorsReader(src)
  tensors = {k: r.get(k) for k in r.keys()}
  edit(tensors)
  io.write_safetensors(os.path.join(dst, io.SINGLE), [(k, v.shape, v.dtype, lambda v=v: v) for k, v in tensors.items()])
  return str(dst)


def test_llm_into_prefix_keeps_others_dtype_sharding_boxes(llm):
  d, ref = llm
  params = _system()
  before = _flat(params)
  new, report = load_into(params, d, prefix="encoder")
  after, ref = _flat(new), _flat(ref)
  enc = {k for k in before if k.startswith("encoder/")}
  assert report.ok and report.family == "llm" and set(report.loaded) == enc
  for k in enc:
    old, got = before[k], after[k]
    assert is_box(got) and got.names == old.names, k
    v, o = got.unbox(), old.unbox()
    assert type(v) is type(o) and v.dtype == o.dtype and v.shape == o.shape, k
    if isinstance(o, jax.Array):
      assert v.sharding == o.sharding, k
    want = np.asarray(ref[k[len("encoder/"):]]).astype(v.dtype)
    np.testing.assert_array_equal(np.asarray(v), want, err_msg=k)
    assert not np.array_equal(np.asarray(o), want), k  # really replaced (different seeds)
  assert after["encoder/layers/self_attn/q_proj/kernel"].unbox().dtype == jnp.bfloat16
  assert not after["encoder/embed_tokens/embedding"].unbox().sharding.is_fully_replicated
  assert isinstance(after["encoder/norm/scale"].unbox(), np.ndarray)
  for k in ("head/kernel", "head/bias"):  # outside the prefix: the very same objects
    assert after[k] is before[k]
  # the input tree is unchanged
  for k, v in _flat(params).items():
    assert v is before[k]
  tab = report.table()
  assert "into prefix 'encoder'" in tab and f"{len(enc)} loaded" in tab


def test_missing_unexpected_misshaped_reported(llm, tmp_path):
  d, ref = llm
  drop, extra, bad = ("model.layers.1.mlp.up_proj.weight", "model.layers.0.extra.weight",
                      "model.layers.0.self_attn.k_norm.weight")

  def edit(t):
    del t[drop]
    t[extra] = np.zeros(3, np.float32)
    t[bad] = np.ones(7, np.float32)
  path = _rewrite(d, tmp_path / "edited", edit)
  params = _system()
  before = _flat(params)

  with pytest.raises(CheckpointError) as e:
    load_into(params, path, prefix="encoder")
  lines = {ln.split()[1]: ln.split() for ln in str(e.value).splitlines()[2:] if len(ln.split()) > 2}
  assert lines[drop][:4] == ["missing", drop, "-", "(16,"] and "24)" in lines[drop]
  assert "layers/mlp/up_proj/kernel" in " ".join(lines[drop]) and "layer" in lines[drop]
  assert lines[extra][:3] == ["unexpected", extra, "(3,)"] and lines[extra][3] == "-"
  assert lines[bad][:5] == ["mis-shaped", bad, "(7,)", "(8,)", "->"]
  assert "missing, unexpected, mis-shaped keys" in str(e.value) and "nothing was loaded" in str(e.value)
  assert all(v is before[k] for k, v in _flat(params).items())

  with pytest.raises(CheckpointError) as e:
    load_into(params, path, prefix="encoder", allow_missing=True)
  assert "(unexpected, mis-shaped keys" in str(e.value)
  assert all(k in str(e.value) for k in (drop, extra, bad))

  new, report = load_into(params, path, prefix="encoder", strict=False)
  assert [m.key for m in report.missing] == [drop] and [u.key for u in report.unexpected] == [extra]
  assert [m.key for m in report.mis_shaped] == [bad]
  assert report.mis_shaped[0].checkpoint_shape == (7,) and report.mis_shaped[0].model_shape == (8,)
  assert report.missing[0].model_shape == (16, 24) and report.unexpected[0].checkpoint_shape == (3,)
  kept = {"encoder/layers/mlp/up_proj/kernel", "encoder/layers/self_attn/k_norm/scale"}
  after, ref = _flat(new), _flat(ref)
  assert set(report.loaded) == {k for k in before if k.startswith("encoder/")} - kept
  for k in before:
    if k in kept or not k.startswith("encoder/"):
      assert after[k] is before[k], k
    else:
      np.testing.assert_array_equal(np.asarray(after[k].unbox()),
                                    np.asarray(ref[k[8:]]).astype(after[k].unbox().dtype), err_msg=k)
  js = report.to_json()
  assert js["counts"] == {"loaded": len(report.loaded), "missing": 1, "unexpected": 1, "mis-shaped": 1}
  json.dumps(js)


def test_scope_leaves_missing_and_tree_leaves_unexpected(llm):
  """Our target has a leaf the family lacks (missing, by our path); the family has one we lack (unexpected)."""
  d, ref = llm
  params = nn.meta.unbox(_system())
  params["encoder"]["extra"] = {"scale": jnp.ones(4)}
  del params["encoder"]["norm"]
  with pytest.raises(CheckpointError, match=r"(?s)missing\s+encoder/extra/scale\s+-\s+\(4,\).*"
                                            r"unexpected\s+model\.norm\.weight\s+\(16,\)"):
    load_into(params, d, prefix="encoder", allow_missing=True)
  new, report = load_into(params, d, prefix="encoder", strict=False)
  assert [m.key for m in report.missing] == ["encoder/extra/scale"]
  assert [u.key for u in report.unexpected] == ["model.norm.weight"]
  assert _flat(new)["encoder/extra/scale"] is params["encoder"]["extra"]["scale"]
  with pytest.raises(ConfigError, match="'encodr'"):
    load_into(params, d, prefix="encodr")


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
  """A tiny WanDiT checkpoint (diffusers layout) and a UniTalking model with boxed random params."""
  from unitalking_jax.model import UniTalking, UniTalkingConfig
  tmp = tmp_path_factory.mktemp("wan")
  dit = WanDiT(VIDEO)
  p = nn.meta.unbox(_random_init(dit, 5, *wan_fam.example_inputs(dit)))
  wan_fam.save_wan_dit(dit, p, str(tmp / "diffusers"))
  model = UniTalking(UniTalkingConfig(VIDEO, audio_channels=6, audio_patch=2, ref_dim=5, text_vocab=0))
  ks = jax.random.split(jax.random.key(3), 3)
  x = dict(video=jax.random.normal(ks[0], (1, 3, 4, 4, 4)), audio=jax.random.normal(ks[1], (1, 4, 6)),
           t_video=jnp.full((1, 12), 700.0), t_audio=jnp.array([700.0]), text=jax.random.normal(ks[2], (1, 5, 16)))
  boxed = _random_init(model, 0, **x)
  return dict(tmp=tmp, p=p, model=model, boxed=boxed, diffusers=str(tmp / "diffusers"))


def test_rename_into_unitalking_equals_wan_params_mapping(wan):
  """The rename pairs put every WanDiT leaf where UniTalking's own mapping (model.wan_params, which the retired
  init_from_wan used) says; every other leaf is the very same object."""
  from unitalking_jax.model import WAN_VIDEO_RENAME, wan_params
  assert tuple(map(tuple, UNITALKING_RENAME)) == WAN_VIDEO_RENAME
  _, dit = load_pretrained(wan["diffusers"])
  b = _flat(wan["boxed"])
  paths = traverse_util.unflatten_dict({k: k for k in traverse_util.flatten_dict(nn.meta.unbox(wan["boxed"]))})
  to_ours = {"/".join(w): "/".join(o) for w, o in traverse_util.flatten_dict(wan_params(paths)).items()}
  want = dict(b)
  for w, o in to_ours.items():
    want[o] = _flat(dit)[w]
  got, report = load_into(wan["boxed"], wan["diffusers"], rename=UNITALKING_RENAME)
  g = _flat(got)
  video = set(to_ours.values())
  assert video == {k for k in b if k.startswith(("video_", "blocks/video/"))}
  assert report.ok and report.family == "wan_dit" and set(report.loaded) == video
  assert set(g) == set(b)
  for k in g:
    assert is_box(g[k]) and g[k].names == b[k].names, k
    if k in video:
      np.testing.assert_array_equal(np.asarray(g[k].unbox()), np.asarray(want[k]), err_msg=k)
    else:
      assert g[k] is b[k], k
  # the original Wan layout, keys prefixed "model.diffusion_model.", config.json without model_type: the same
  d = wan["tmp"] / "original"
  d.mkdir()
  osd = wan_fam.export_wan_dit(wan["p"], VIDEO, layout="original")
  io.write_safetensors(str(d / "diffusion_pytorch_model.safetensors"),
                       [(wan_fam.ORIGINAL_PREFIX + k, v.shape, v.dtype, (lambda v=v: v)) for k, v in osd.items()])
  cfg = wan_fam.config_to_original(VIDEO)
  del cfg["model_type"]
  io.write_json(str(d / "config.json"), cfg)
  got2, report2 = load_into(wan["boxed"], str(d), rename=UNITALKING_RENAME)
  assert report2.family == "wan_dit_original" and set(report2.loaded) == video
  for k, v in _flat(got2).items():
    np.testing.assert_array_equal(np.asarray(v.unbox()), np.asarray(g[k].unbox()), err_msg=k)
  # a rename that leaves a family subtree out: its tensors are unexpected
  with pytest.raises(CheckpointError, match=r"unexpected\s+proj_out\.weight .*no rename pair covers"):
    load_into(wan["boxed"], wan["diffusers"], rename=UNITALKING_RENAME[:3] + UNITALKING_RENAME[4:])


def test_apply_init_entries_and_single_files(llm, tmp_path):
  d, ref = llm
  params = nn.meta.unbox(_system())
  flat_file = str(tmp_path / "head.safetensors")  # keys already in our naming
  head = {"kernel": np.full((16, 5), 2.0, np.float32), "bias": np.full((5,), 3.0, np.float32)}
  io.write_safetensors(flat_file, [(k, v.shape, v.dtype, lambda v=v: v) for k, v in head.items()])
  init = ml_collections.ConfigDict({"skipped": init_entry(prefix="nowhere"),
                                    "b_head": init_entry(path=flat_file, prefix="head"),
                                    "a_encoder": init_entry(prefix="encoder", allow_missing=True)})
  init.a_encoder.path = os.path.join(d, io.SINGLE)  # a single file with its config.json beside it
  sharded = str(tmp_path / "sharded")  # and the same checkpoint sharded (index.json), family forced
  save_pretrained(LLM(LLM_CFG), ref, sharded, max_shard_size="2KB")
  assert os.path.exists(os.path.join(sharded, io.INDEX))
  init.c_sharded = init_entry(path=sharded, prefix="encoder", family="llm")
  workdir = str(tmp_path / "work")
  new, reports = apply_init_entries(init, params, workdir=workdir)
  assert list(reports) == ["a_encoder", "b_head", "c_sharded"] and reports["b_head"].family == "params"
  assert reports["c_sharded"].loaded == reports["a_encoder"].loaded
  want, _ = load_into(params, d, prefix="encoder")
  got = _flat(new)
  for k, v in _flat(want).items():
    if k.startswith("encoder/"):
      np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(v), err_msg=k)
  np.testing.assert_array_equal(np.asarray(got["head/kernel"]), head["kernel"])
  assert isinstance(got["head/bias"], np.ndarray) and np.all(got["head/bias"] == 3.0)
  saved = json.load(open(os.path.join(workdir, "init_report.json")))
  assert sorted(saved) == ["a_encoder", "b_head", "c_sharded"]
  assert saved["b_head"]["counts"] == {"loaded": 2, "missing": 0, "unexpected": 0, "mis-shaped": 0}
  assert saved["a_encoder"]["prefix"] == "encoder" and saved["a_encoder"]["loaded"] == reports["a_encoder"].loaded
  # config errors name the key
  init.skipped.path = str(tmp_path / "nope")
  with pytest.raises(ConfigError, match=r"init\.skipped\.path="):
    apply_init_entries(init, params)
  with pytest.raises(ConfigError, match=r"init\.x has unknown keys \['pth'\]"):
    apply_init_entries({"x": {"pth": d}}, params)


# ---- a stateful family (params + batch_stats) into a system's variables ----

RES = ResNetConfig(block="basic", layers=(1, 1, 1, 1), act="swish", width=4)


class _LipSystem(nn.Module):
  """A ResNet front end at `frontend`, a BatchNorm `neck` (batch_stats outside the prefix) and a Dense `head`."""

  @nn.compact
  def __call__(self, lips, train: bool = False):
    f = Conv3dResNet(RES, name="frontend")(lips, train)
    f = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="neck")(f)
    return nn.Dense(3, name="head")(f)


_LIP = {}


def _lip_abstract():
  """The system's variables as ShapeDtypeStructs (eval_shape: traced once, never compiled), unboxed."""
  if "v" not in _LIP:
    _LIP["v"] = nn.meta.unbox(jax.eval_shape(
        lambda: _LipSystem().init(jax.random.key(0), jnp.zeros((1, 5, 32, 32), jnp.float32), False)))
  return _LIP["v"]


def _filled(tree, seed: int):
  """numpy leaves of tree's shapes: random, positive (running variances stay valid), seed-dependent."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.1 + rng.random(s.shape)).astype(s.dtype), tree)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
  """A width-4 conv3d_resnet directory (save_pretrained) with random params and batch_stats, and those values."""
  a = _lip_abstract()
  ckpt = _filled({"params": a["params"]["frontend"], "batch_stats": a["batch_stats"]["frontend"]}, 11)
  d = str(tmp_path_factory.mktemp("resnet"))
  save_pretrained(Conv3dResNet(RES), ckpt, d)
  assert io.read_json(os.path.join(d, "config.json"))["model_type"] == "conv3d_resnet"
  return d, ckpt


def _lip_variables(seed: int = 3):
  """The system's variables (jax Arrays, other values than the checkpoint's); one param and one statistic of the
  front end sharded over the devices."""
  v = jax.tree.map(jnp.asarray, _filled(_lip_abstract(), seed))
  mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
  k = v["params"]["frontend"]["conv3d"]["kernel"]   # [5, 7, 7, 1, 4]
  v["params"]["frontend"]["conv3d"]["kernel"] = jax.device_put(k, NamedSharding(mesh, P(None, None, None, None, "x")))
  m = v["batch_stats"]["frontend"]["trunk"]["layer4_0"]["bn2"]["mean"]   # [32]
  v["batch_stats"]["frontend"]["trunk"]["layer4_0"]["bn2"]["mean"] = jax.device_put(m, NamedSharding(mesh, P("x")))
  return v


def _want_loaded(ckpt) -> set[str]:
  return ({"frontend/" + k for k in _flat(ckpt["params"])} |
          {"batch_stats/frontend/" + k for k in _flat(ckpt["batch_stats"])})


def _assert_frontend_is(got_vars, ckpt):
  for coll in ("params", "batch_stats"):
    g = _flat(got_vars[coll]["frontend"])
    assert set(g) == set(_flat(ckpt[coll])), coll
    for k, want in _flat(ckpt[coll]).items():
      assert g[k].dtype == want.dtype, (coll, k)
      np.testing.assert_array_equal(np.asarray(g[k]), want, err_msg=f"{coll}/frontend/{k}")


def test_stateful_family_into_variables(resnet):
  """params AND batch_stats land bit-exactly under frontend/ (dtype, sharding kept); the rest is untouched."""
  d, ckpt = resnet
  v = _lip_variables()
  before = {c: _flat(v[c]) for c in v}
  new, report = load_into(v, d, prefix="frontend")
  assert set(new) == set(v) and report.ok and report.family == "conv3d_resnet"
  want = _want_loaded(ckpt)
  n_stats = len(_flat(ckpt["batch_stats"]))
  assert n_stats > 0 and set(report.loaded) == want
  assert report.counts() == {"loaded": len(want), "missing": 0, "unexpected": 0, "mis-shaped": 0}
  assert "batch_stats/frontend/bn3d/mean" in report.loaded and "frontend/bn3d/scale" in report.loaded
  _assert_frontend_is(new, ckpt)
  for c in v:
    after = _flat(new[c])
    for k, old in before[c].items():
      if k.startswith("frontend/"):
        assert after[k].sharding == old.sharding and not np.array_equal(np.asarray(old), np.asarray(after[k])), k
      else:   # head, neck params and the neck's running statistics: the very same objects
        assert after[k] is old, (c, k)
  assert not new["params"]["frontend"]["conv3d"]["kernel"].sharding.is_fully_replicated
  assert not new["batch_stats"]["frontend"]["trunk"]["layer4_0"]["bn2"]["mean"].sharding.is_fully_replicated
  assert all(_flat(v[c])[k] is before[c][k] for c in v for k in before[c])   # the input is unchanged
  assert f"{len(want)} loaded" in report.table() and "batch_stats/frontend" in report.table()

  # the params tree alone: the statistics have nowhere to go (unexpected, their keys, the note says why)
  with pytest.raises(CheckpointError, match=r"unexpected\s+frontend3D\.1\.running_mean .*no batch_stats collection"):
    load_into(v["params"], d, prefix="frontend")
  got, rep = load_into(v["params"], d, prefix="frontend", strict=False)
  assert set(rep.loaded) == {k for k in want if not k.startswith("batch_stats/")}
  assert len(rep.unexpected) == n_stats and not rep.missing and not rep.mis_shaped
  np.testing.assert_array_equal(np.asarray(got["frontend"]["bn3d"]["scale"]), ckpt["params"]["bn3d"]["scale"])


def test_stateful_family_mis_shaped_and_missing_statistics(resnet, tmp_path):
  d, ckpt = resnet
  v = _lip_variables()
  # ours mis-shaped: our running mean has 5 channels, the checkpoint's config says 4
  v["batch_stats"]["frontend"]["bn3d"]["mean"] = jnp.zeros(5, jnp.float32)
  with pytest.raises(CheckpointError, match=r"mis-shaped\s+batch_stats/frontend/bn3d/mean\s+\(4,\)\s+\(5,\)"):
    load_into(v, d, prefix="frontend")
  new, report = load_into(v, d, prefix="frontend", strict=False)
  assert [m.key for m in report.mis_shaped] == ["batch_stats/frontend/bn3d/mean"]
  assert report.mis_shaped[0].checkpoint_shape == (4,) and report.mis_shaped[0].model_shape == (5,)
  assert report.counts() == {"loaded": len(_want_loaded(ckpt)) - 1, "missing": 0, "unexpected": 0, "mis-shaped": 1}
  assert new["batch_stats"]["frontend"]["bn3d"]["mean"] is v["batch_stats"]["frontend"]["bn3d"]["mean"]
  np.testing.assert_array_equal(np.asarray(new["batch_stats"]["frontend"]["bn3d"]["var"]), ckpt["batch_stats"]["bn3d"]["var"])

  # the file mis-shaped / lacking statistics (their keys; our path in the note); num_batches_tracked may be absent
  def edit(t):
    t["frontend3D.1.running_var"] = np.ones(3, np.float32)
    del t["trunk.layer1.0.bn1.running_mean"]
    del t["trunk.layer1.0.bn1.num_batches_tracked"]
  path = _rewrite(d, tmp_path / "edited", edit)
  new, report = load_into(_lip_variables(), path, prefix="frontend", strict=False)
  assert [(m.key, m.checkpoint_shape, m.model_shape) for m in report.mis_shaped] == [
      ("frontend3D.1.running_var", (3,), (4,))]
  assert "-> batch_stats/frontend/bn3d/var" in report.mis_shaped[0].note
  assert [m.key for m in report.missing] == ["trunk.layer1.0.bn1.running_mean"]
  assert "-> batch_stats/frontend/trunk/layer1_0/bn1/mean" in report.missing[0].note
  assert not report.unexpected and len(report.loaded) == len(_want_loaded(ckpt)) - 2
  with pytest.raises(CheckpointError, match=r"mis-shaped\s+frontend3D\.1\.running_var"):
    load_into(_lip_variables(), path, prefix="frontend", allow_missing=True)


def test_params_family_into_variables_touches_params_only(llm):
  """A params-only family given a variables dict: the same report as with the params alone; other collections are
  neither in its scope nor touched."""
  d, _ = llm
  params = nn.meta.unbox(_system())
  stats = {"encoder": {"bn": {"mean": jnp.zeros(3)}}}
  new, report = load_into({"params": params, "batch_stats": stats}, d, prefix="encoder")
  ref, ref_report = load_into(params, d, prefix="encoder")
  assert report.loaded == ref_report.loaded and report.ok and new["batch_stats"] is stats
  for k, v in _flat(ref).items():
    np.testing.assert_array_equal(np.asarray(_flat(new["params"])[k]), np.asarray(v), err_msg=k)
  with pytest.raises(ConfigError, match="variables=True"):
    load_into(params, d, prefix="encoder", variables=True)


def test_trainer_fresh_start_loads_batch_stats(resnet, tmp_path):
  """An `init` entry through the trainer's fresh start (Task.mutable=("batch_stats",)): the front end's params and
  running statistics are the checkpoint's after the init (frozen front end, statistics passed through one step);
  DIR/init_report.json counts both collections."""
  from tests.shared import contract_tasks as ct
  d, ckpt = resnet
  cfg = ct.config(batch_size=2, total_steps=1)
  cfg.init = ml_collections.ConfigDict({"frontend": init_entry(path=d, prefix="frontend")})
  abstract = _lip_abstract()

  def loss_fn(params, batch, rng, model_state):   # the head only: no ResNet to compile
    del rng
    y = batch["x"] @ params["head"]["kernel"] + params["head"]["bias"]
    return jnp.sum(y ** 2), {"weight": jnp.float32(batch["x"].shape[0])}, model_state

  def make(rng, b):
    return {"x": rng.normal(size=(b, 8 * RES.width)).astype(np.float32)}

  task = train_lib.Task(
      init_params=lambda r, b: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract),  # no ResNet init
      loss_fn=loss_fn, make_train_iter=lambda: ct._Iter(make, 2), trainable=lambda k: k.startswith("head/"),
      mutable=("batch_stats",))
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1, sequence=1)),
                            devices=jax.devices()[:1])
  workdir = str(tmp_path / "work")
  result = train_lib.train(cfg, task, workdir, mesh=mesh)
  state = jax.device_get(result.state)
  assert result.resumed_from is None and result.step == 1
  _assert_frontend_is({"params": state.params, **state.model_state}, ckpt)
  assert set(state.model_state) == {"batch_stats"}
  for k, x in _flat(state.model_state["batch_stats"]["neck"]).items():   # outside the prefix: still the init
    assert np.all(np.asarray(x) == 0), k
  saved = json.load(open(os.path.join(workdir, "init_report.json")))
  n = len(_want_loaded(ckpt))
  assert saved["frontend"]["counts"] == {"loaded": n, "missing": 0, "unexpected": 0, "mis-shaped": 0}
  assert saved["frontend"]["family"] == "conv3d_resnet" and set(saved["frontend"]["loaded"]) == _want_loaded(ckpt)
