"""One installable package holding the shared core and the four systems."""
from setuptools import find_packages, setup

INSTALL = [
    "jax>=0.7",
    "flax>=0.11",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.12",
    "tensorflow-datasets>=4.9.8",
    "importlib_resources",          # tfds imports it without TensorFlow
    "transformers>=4.50",           # tokenizers and configs from local files; oracles in tests
    "tokenizers",
    "pyyaml",                       # FunASR config.yaml (shared/weights/sanm_family)
    "safetensors",
    "librosa>=0.10",
    "soundfile",
    "av>=12",                       # PyAV: mp4 (h264 + aac) read/write with bundled FFmpeg
    "jiwer>=3",
    "sacrebleu>=2",
    "rouge-score",
    "pystoi",
    "pypinyin",
    "ml-collections>=1.0",
    "clu",
    "tensorboardX",                 # TensorBoard event files without TensorFlow
    "absl-py",
    "numpy",
    "scipy",
    "einops",
    "tqdm",
    "matplotlib",                   # plots: scaling fits, sync curves
]

EXTRAS = {
    # torch must be installed first (`pip install torch==2.13.0`) so the CPU build is used.
    "test": ["pytest>=8", "pytest-xdist", "torch", "diffusers>=0.35", "peft>=0.15", "sentencepiece",
             "python_speech_features", "kaldi-native-fbank",
             "speechmos", "onnxruntime", "Resemblyzer", "setuptools<81",
             # the swin3d_t oracle; pairs with torch 2.13 (a CUDA build: shared/torch_compat.py imports it safely)
             "torchvision==0.28.*",
             # libtpu: shared.scaling compile lowers train steps for TPU slices on a CPU (tests/scaling/test_aot.py);
             # inert unless JAX_PLATFORMS allows "tpu" (the suite sets cpu)
             "jax[tpu]"],
    "torch": ["torch", "safetensors"],
    "cuda": ["jax[cuda13]"],
    "tpu": ["jax[tpu]"],
    "dnsmos": ["speechmos", "onnxruntime"],
    "speaker": ["Resemblyzer", "setuptools<81"],   # webrtcvad (Resemblyzer's VAD) imports pkg_resources
}

setup(
    name="avspeech-jax",
    version="0.1.0",
    description="JAX/Flax audio-visual speech stack: UniCUE, tri-modal sign/lip/audio LLM, VALLR-Pin, UniTalking, FlashLips",
    packages=find_packages(include=["shared*", "examples*", "unicue_jax*", "trimodal_jax*", "vsr_pin_jax*",
                                    "unitalking_jax*", "flashlips_jax*"]),
    package_data={"shared.text": ["pinyin_vocab.txt"]},
    python_requires=">=3.10",
    install_requires=INSTALL,
    extras_require=EXTRAS,
)
