"""Export: the video stream loads in diffusers' WanTransformer3DModel and matches our model under TV2A;
the rest round-trips through safetensors by the documented names."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import traverse_util

from shared.models.wan_dit import WanDiTConfig
from shared.weights import io
from unitalking_jax.export import export
from unitalking_jax.model import UniTalking, UniTalkingConfig


def test_export_video_stream_loads_in_diffusers(tmp_path):
  from diffusers import WanTransformer3DModel
  v = WanDiTConfig(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                   out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, attention_impl="xla")
  model = UniTalking(UniTalkingConfig(v, audio_channels=6, audio_patch=2, ref_dim=5, text_vocab=0))
  ks = jax.random.split(jax.random.key(3), 4)
  video = jax.random.normal(ks[0], (1, 2, 4, 4, 4))
  audio = jax.random.normal(ks[1], (1, 4, 6))
  text = jax.random.normal(ks[2], (1, 5, 16))
  t = jnp.array([700.0])
  # jitted init / apply: eagerly, every op of the model would compile on its own (hundreds of small programs)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), video, audio, t, t, text)["params"])
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape, np.float32), params)
  export(model, params, str(tmp_path))
  ours, _ = jax.jit(model.clone(tv2a=True).apply)({"params": params}, video, audio, t, t, text)
  ref = WanTransformer3DModel.from_pretrained(str(tmp_path / "video_stream")).eval()
  with torch.no_grad():
    out = ref(hidden_states=torch.from_numpy(np.array(video)).permute(0, 4, 1, 2, 3),
              timestep=torch.tensor([700.0]), encoder_hidden_states=torch.from_numpy(np.array(text)),
              return_dict=False)[0].permute(0, 2, 3, 4, 1).numpy()
  np.testing.assert_allclose(out, np.asarray(ours), rtol=1e-4, atol=1e-5)
  from safetensors.numpy import load_file
  rest = load_file(str(tmp_path / "unitalking_rest.safetensors"))
  flat = traverse_util.flatten_dict(params)
  expect = {".".join(k): v for k, v in flat.items()
            if k[0] not in ("video_patch_embedding", "video_condition_embedder", "video_head")
            and k[:2] != ("blocks", "video")}
  assert set(rest) == set(expect) and "blocks.audio.attn2.add_k_proj.kernel" in rest
  for k, v in expect.items():
    np.testing.assert_array_equal(rest[k], np.asarray(v))
