"""UniTalking's Wan initialisation through the shared init helper (config entry `init.video`, rename
WAN_VIDEO_RENAME) and its own step, copy_video_to_audio: a (small, random) diffusers WanTransformer3DModel /
original Wan directory -> the video stream, equal to diffusers' forward under TV2A with Wan2.2-TI2V per-token
timesteps; the audio twin's copy rule; mismatches named; dtype / sharding / boxing kept; the config keys."""
from __future__ import annotations

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shared.errors import CheckpointError, ConfigError
from shared.models.wan_dit import WanDiTConfig
from shared.weights import io
from shared.weights.init import load_into
from shared.weights.wan_dit_family import ORIGINAL_PREFIX, config_to_original, diffusers_to_original
from unitalking_jax.init_from import copy_video_to_audio
from unitalking_jax.model import WAN_VIDEO_RENAME, UniTalking, UniTalkingConfig

WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2)
VIDEO = WanDiTConfig(**WAN, attention_impl="xla")
# audio leaves that copy_video takes from the video stream (audio_ffn_dim == ffn_dim); all others stay random
COPIED = ("blocks/audio/attn1/", "blocks/audio/attn2/to_q/", "blocks/audio/attn2/to_k/", "blocks/audio/attn2/to_v/",
          "blocks/audio/attn2/to_out/", "blocks/audio/attn2/norm_q/", "blocks/audio/attn2/norm_k/",
          "blocks/audio/norm2/", "blocks/audio/ffn/", "blocks/audio/scale_shift_table",
          "audio_condition_embedder/time_", "audio_condition_embedder/text_", "audio_head/scale_shift_table")


def init_from_wan(params, wan_dir: str, audio: str = "random", donate: bool = False):
  """What a fresh start does with init.video.path=wan_dir and init_audio=audio -> (params, report)."""
  params, rep = load_into(params, wan_dir, rename=WAN_VIDEO_RENAME)
  report = {"video": sorted(rep.loaded), "copied": [], "random": []}
  if audio == "copy_video":
    params, r = copy_video_to_audio(params, donate=donate)
    report.update(r)
  else:
    report["random"] = sorted(k for k in _flat(params) if k.startswith(("audio_", "blocks/audio/")))
  report["untouched"] = sorted(set(_flat(params)) - set(report["video"]) - set(report["copied"])
                               - set(report["random"]))
  return params, report


def _flat(tree) -> dict[str, object]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def _mirror(path: str) -> str:
  return path.replace("blocks/audio/", "blocks/video/") if path.startswith("blocks/") else "video_" + path[6:]


def _write_original(sd: dict, path, prefix: str = ""):
  """An original-Wan-layout directory (config.json WanModel/ti2v + safetensors) from a diffusers state_dict."""
  path.mkdir()
  osd = diffusers_to_original(sd, VIDEO)
  io.write_safetensors(str(path / "diffusion_pytorch_model.safetensors"),
                       [(prefix + k, v.shape, v.dtype, (lambda v=v: v)) for k, v in sorted(osd.items())])
  io.write_json(str(path / "config.json"), config_to_original(VIDEO))
  return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  from diffusers import WanTransformer3DModel
  tmp = tmp_path_factory.mktemp("wan")
  torch.manual_seed(0)
  ref = WanTransformer3DModel(**WAN).eval()
  with torch.no_grad():  # non-trivial norms / tables / biases everywhere
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  ref.save_pretrained(str(tmp / "diffusers"))
  sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
  model = UniTalking(UniTalkingConfig(VIDEO, audio_channels=6, audio_patch=2, ref_dim=5, text_vocab=0))
  ks = jax.random.split(jax.random.key(3), 4)
  x = dict(video=jax.random.normal(ks[0], (1, 3, 4, 4, 4)), audio=jax.random.normal(ks[1], (1, 4, 6)),
           t_video=jnp.concatenate([jnp.zeros((1, 4)), jnp.full((1, 8), 700.0)], axis=1),  # first frame clean
           t_audio=jnp.array([700.0]), text=jax.random.normal(ks[2], (1, 5, 16)))
  boxed = jax.jit(lambda r: model.init(r, **x))(jax.random.key(0))["params"]
  return dict(tmp=tmp, ref=ref, sd=sd, model=model, x=x, boxed=boxed, params=nn.meta.unbox(boxed),
              diffusers=str(tmp / "diffusers"))


def test_video_stream_matches_diffusers_and_audio_untouched(env):
  params, x, ref = env["params"], env["x"], env["ref"]
  new, report = init_from_wan(params, env["diffusers"], audio="random")
  ours, _ = jax.jit(lambda p: env["model"].clone(tv2a=True).apply({"params": p}, **x))(new)
  with torch.no_grad():
    out = ref(hidden_states=torch.from_numpy(np.array(x["video"])).permute(0, 4, 1, 2, 3),
              timestep=torch.from_numpy(np.array(x["t_video"])),
              encoder_hidden_states=torch.from_numpy(np.array(x["text"])),
              return_dict=False)[0].permute(0, 2, 3, 4, 1).numpy()
  np.testing.assert_allclose(np.asarray(ours), out, rtol=1e-4, atol=1e-5)
  before, after = _flat(params), _flat(new)
  video = {k for k in before if k.startswith(("video_", "blocks/video/"))}
  assert set(report["video"]) == video and report["copied"] == []
  assert set(report["random"]) | set(report["untouched"]) == set(before) - video
  for k in set(before) - video:  # audio="random": every non-video leaf is the very same value
    np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=k)
  assert not np.array_equal(np.asarray(after["video_head/proj_out/kernel"]),
                            np.asarray(before["video_head/proj_out/kernel"]))


def test_copy_video_copies_same_shaped_modules(env):
  before = _flat(env["params"])
  new, report = init_from_wan(env["params"], env["diffusers"], audio="copy_video")
  after = _flat(new)
  audio = {k for k in before if k.startswith(("audio_", "blocks/audio/"))}
  expect = {k for k in audio if k.startswith(COPIED)}
  assert set(report["copied"]) == expect and set(report["random"]) == audio - expect
  assert {"blocks/audio/attn2/add_k_proj/kernel", "blocks/audio/attn2/norm_added_k/scale",
          "audio_patch_embedding/bias", "audio_head/proj_out/kernel",
          "audio_condition_embedder/image_ff_1/kernel"} <= set(report["random"])
  for k in audio:
    want = after[_mirror(k)] if k in expect else before[k]
    np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(want), err_msg=k)
  # audio_ffn_dim != ffn_dim: the whole FFN (fc2's same-shaped bias included) stays random; numpy leaves stay numpy
  c = UniTalkingConfig(VIDEO, audio_channels=6, audio_patch=2, ref_dim=5, audio_ffn_dim=24)
  x = env["x"]
  shapes = jax.eval_shape(lambda: UniTalking(c).init(jax.random.key(0), **x))["params"]
  rng = np.random.default_rng(0)
  rand = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), nn.meta.unbox(shapes))
  new2, report2 = init_from_wan(rand, env["diffusers"], audio="copy_video")
  ffn = {k for k in _flat(rand) if k.startswith("blocks/audio/ffn/")}
  assert len(ffn) == 4 and ffn <= set(report2["random"]) and set(report2["copied"]) == expect - ffn
  flat2, rand2 = _flat(new2), _flat(rand)
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in flat2.values())
  for k in ffn:
    np.testing.assert_array_equal(flat2[k], rand2[k])
  np.testing.assert_array_equal(flat2["blocks/audio/attn1/to_q/kernel"], flat2["blocks/video/attn1/to_q/kernel"])
  np.testing.assert_array_equal(flat2["blocks/video/ffn/fc2/bias"], after["blocks/video/ffn/fc2/bias"])


def test_original_layout_loads_same_params(env):
  want, _ = init_from_wan(env["params"], env["diffusers"])
  for name, prefix in (("original", ""), ("original_prefixed", ORIGINAL_PREFIX)):
    d = _write_original(env["sd"], env["tmp"] / name, prefix)
    got, _ = init_from_wan(env["params"], d)
    w, g = _flat(want), _flat(got)
    assert set(w) == set(g)
    for k in w:
      np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(w[k]), err_msg=f"{name}: {k}")


def test_mismatched_checkpoint_names_keys_and_shapes(env):
  """A Wan checkpoint of another size fails before anything is read, naming each key with both shapes."""
  bad = env["tmp"] / "bad"
  shutil.copytree(env["diffusers"], bad)
  cfg = json.loads((bad / "config.json").read_text())
  cfg.update(ffn_dim=40)
  (bad / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError) as e:
    init_from_wan(env["params"], str(bad))
  msg = str(e.value)
  assert "mis-shaped" in msg and "blocks/video/ffn/fc1/kernel" in msg and "(2, 24, 40)" in msg and "(2, 24, 32)" in msg
  assert "text_embedder" not in msg
  d = env["tmp"] / "original_bad"
  _write_original(env["sd"], d)
  ocfg = json.loads((d / "config.json").read_text())
  ocfg["in_dim"] = 8
  (d / "config.json").write_text(json.dumps(ocfg))
  with pytest.raises(CheckpointError, match=r"video_patch_embedding/kernel"):
    init_from_wan(env["params"], str(d))


def test_keeps_dtype_sharding_and_boxes(env):
  mesh = Mesh(np.array(jax.devices()[:8]), ("fsdp",))

  def place(box):
    v = box.unbox()
    spec = P(*([None] * (v.ndim - 1) + ["fsdp"])) if v.shape[-1] % 8 == 0 else P()
    return box.replace_boxed(jax.device_put(v.astype(jnp.bfloat16), NamedSharding(mesh, spec)))

  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  boxed = jax.tree.map(place, env["boxed"], is_leaf=is_box)
  new, _ = init_from_wan(boxed, env["diffusers"], audio="copy_video")
  ref, _ = init_from_wan(env["params"], env["diffusers"], audio="copy_video")
  b, n, r = (traverse_util.flatten_dict(t) for t in (boxed, new, ref))
  sharded = 0
  for k in b:
    assert is_box(n[k]) and n[k].names == b[k].names, k
    v = n[k].unbox()
    assert v.dtype == jnp.bfloat16 and v.sharding == b[k].unbox().sharding, k
    sharded += not v.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(v), np.asarray(r[k].astype(jnp.bfloat16)), err_msg="/".join(k))
  assert sharded > 20


def test_config_entries_and_init_audio_keys(env, tmp_path):
  """init.video.path + init_audio through the trainer's fresh start == the helper calls above; bad keys named."""
  from configs.unitalking.tiny import get_config
  from shared.weights.init import apply_init_entries
  from unitalking_jax.task import make_task
  cfg = get_config()
  with pytest.raises(ConfigError, match=r"init_audio = 'copy_video'.*needs a Wan checkpoint"):
    cfg.init_audio = "copy_video"
    make_task(cfg)
  with pytest.raises(ConfigError, match=r"init_audio = 'copy'"):
    cfg.init_audio = "copy"
    make_task(cfg)
  with pytest.raises(ConfigError, match=r"init\.video\.path"):
    apply_init_entries(ml_collections.ConfigDict(dict(video=dict(path="/nonexistent", prefix="", family="",
                                                                  rename=WAN_VIDEO_RENAME, allow_missing=False,
                                                                  strict=True))), env["params"])
  entries = get_config().init
  assert apply_init_entries(entries, env["params"])[0] is env["params"]     # empty path: skipped
  entries.video.path = env["diffusers"]
  got, reports = apply_init_entries(entries, env["params"], workdir=str(tmp_path))
  assert json.loads((tmp_path / "init_report.json").read_text())["video"]["counts"]["loaded"] == len(reports["video"].loaded)
  want = _flat(init_from_wan(env["params"], env["diffusers"])[0])
  for k, v in _flat(got).items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(want[k]), err_msg=k)


def test_donate_frees_replaced_audio_leaves_only(env):
  loaded, _ = load_into(jax.tree.map(lambda a: jnp.array(a, copy=True), env["params"]), env["diffusers"],
                        rename=WAN_VIDEO_RENAME)
  want, report = copy_video_to_audio(loaded)
  old = _flat(loaded)
  got, _ = copy_video_to_audio(loaded, donate=True)
  assert all(old[k].is_deleted() == (k in set(report["copied"])) for k in old)
  for k, v in _flat(want).items():
    np.testing.assert_array_equal(np.asarray(_flat(got)[k]), np.asarray(v), err_msg=k)
