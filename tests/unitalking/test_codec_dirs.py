"""data.video_codec_path / audio_codec_path accept a train_codec workdir: it has a config.json of its own (the
training config), and the codec directory inside it (video_vae/, codec/) must win over it."""
import json

import ml_collections

from unitalking_jax import data as data_lib


def _touch(path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


def test_workdir_with_its_own_config_json_resolves_to_the_codec_inside(tmp_path):
  v, a = tmp_path / "V", tmp_path / "A"
  _touch(v / "config.json", {"trainer": {}})                                   # the training config
  _touch(v / "video_vae" / "config.json", {"_class_name": "AutoencoderKLWan"})
  _touch(a / "config.json", {"trainer": {}})
  _touch(a / "codec" / "codec.json", {})
  cfg = ml_collections.ConfigDict(dict(data=dict(video_codec_path=str(v), audio_codec_path=str(a))))
  assert data_lib.vae_codec_dirs(cfg) == (str(v / "video_vae"), str(a / "codec"))
  # the codec directories themselves are taken as they are
  cfg.data.update(dict(video_codec_path=str(v / "video_vae"), audio_codec_path=str(a / "codec")))
  assert data_lib.vae_codec_dirs(cfg) == (str(v / "video_vae"), str(a / "codec"))
