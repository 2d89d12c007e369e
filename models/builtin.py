"""The built-in models: small models of the real architectures that run offline.

`builtin:tiny-text2video` has a ModelScope/zeroscope-style 3D UNet, `builtin:tiny-sd15` a Stable
Diffusion 1.5-style 2D UNet (for Text2Video-Zero), `builtin:tiny-sdxl` an SDXL-style one (two text
encoders, pooled text embedding and time ids), `builtin:tiny-ip2p` an InstructPix2Pix-style one (8 input
channels), `builtin:tiny-svd` a Stable Video Diffusion-style one (spatio-temporal UNet, CLIP image encoder,
temporal-decoder VAE, v-prediction Euler with Karras sigmas), `builtin:tiny-i2vgen-xl` an I2VGen-XL-style one (3D
UNet, CLIP text and image encoders). They have random weights, built deterministically on first use: their
videos are noise; they exist so that workflows and the parity tests run anywhere in seconds.

`builtin:micro-text2video` (3D UNet) and `builtin:micro-sd` (2D UNet, for Text2Video-Zero) are trained on
the micro world of `tools/microworld.py` (coloured shapes moving left/right/up/down, 64x64) by
`tools/train_micro.py`; their weights ship with the pack in `models/micro/` and share one VAE and one
text encoder. They draw the prompt's object, and the quality tests measure them.

Every built-in is assembled on first use into an ordinary diffusers folder in a writable cache
(safetensors weights; the tokenizer as `vocab.json` + `merges.txt` so every transformers version reads
it) and then loaded like any other model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch

BUILTIN_PREFIX = "builtin:"
RECIPE_VERSION = 1
TEXT_WIDTH = 32

_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}


def _unet3d():
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=8)


def _unet2d(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=8)


def _unet_sdxl():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), use_linear_projection=True, cross_attention_dim=2 * TEXT_WIDTH,
        attention_head_dim=8, norm_num_groups=8, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TEXT_WIDTH)


def _unet_i2vgen():
    from diffusers import I2VGenXLUNet

    return I2VGenXLUNet(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=8)


def _unet_svd():
    from diffusers import UNetSpatioTemporalConditionModel

    return UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=TEXT_WIDTH,
        num_attention_heads=4, addition_time_embed_dim=8, projection_class_embeddings_input_dim=3 * 8, num_frames=14)


def _vae_temporal(scaling_factor: float):
    return _vae(scaling_factor, temporal=True)


MICRO_DIR = Path(__file__).resolve().parent / "micro"
"""The trained micro models' weights: `vae/`, `text_encoder/`, `tokenizer/`, `unet3d/`, `unet2d/`."""

_CLIP = (("tokenizer", "text_encoder", "CLIPTextModel", "<|endoftext|>"),)
_SDXL_CLIPS = (*_CLIP, ("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection", "!"))

BUILTINS = {
    "tiny-text2video": {"pipeline": "TextToVideoSDPipeline", "unet": ("UNet3DConditionModel", _unet3d),
                        "scheduler": "DDIMScheduler"},
    "tiny-sd15": {"pipeline": "StableDiffusionPipeline", "unet": ("UNet2DConditionModel", _unet2d),
                  "scheduler": "PNDMScheduler"},
    "tiny-sdxl": {"pipeline": "StableDiffusionXLPipeline", "unet": ("UNet2DConditionModel", _unet_sdxl),
                  "scheduler": "EulerDiscreteScheduler", "text": _SDXL_CLIPS, "vae_scaling_factor": 0.13025,
                  "scheduler_extra": {"timestep_spacing": "leading", "interpolation_type": "linear"}},
    "tiny-ip2p": {"pipeline": "StableDiffusionInstructPix2PixPipeline",
                  "unet": ("UNet2DConditionModel", functools.partial(_unet2d, 8)),
                  "scheduler": "EulerAncestralDiscreteScheduler"},
    "tiny-svd": {"pipeline": "StableVideoDiffusionPipeline", "unet": ("UNetSpatioTemporalConditionModel", _unet_svd),
                 "scheduler": "EulerDiscreteScheduler", "text": (), "image_encoder": True,
                 "vae": ("AutoencoderKLTemporalDecoder", _vae_temporal),
                 "scheduler_extra": {"prediction_type": "v_prediction", "timestep_type": "continuous",
                                     "use_karras_sigmas": True, "sigma_min": 0.002, "sigma_max": 700.0,
                                     "interpolation_type": "linear", "timestep_spacing": "leading"}},
    "tiny-i2vgen-xl": {"pipeline": "I2VGenXLPipeline", "unet": ("I2VGenXLUNet", _unet_i2vgen),
                       "scheduler": "DDIMScheduler", "image_encoder": True},
    "micro-text2video": {"pipeline": "TextToVideoSDPipeline", "unet": ("UNet3DConditionModel", "unet3d"),
                         "scheduler": "DDIMScheduler"},
    "micro-sd": {"pipeline": "StableDiffusionPipeline", "unet": ("UNet2DConditionModel", "unet2d"),
                 "scheduler": "DDIMScheduler"},
}
MICRO_SHARED = ("vae", "text_encoder", "tokenizer")


def builtin_names() -> list[str]:
    return [BUILTIN_PREFIX + name for name in BUILTINS]


def _byte_alphabet() -> list[str]:
    """CLIP's byte-level BPE alphabet: one printable character for each of the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in printable)
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return [mapping[b] for b in range(256)]


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that make each of `words` (lower-case ASCII) one token, learnt as BPE learns them
    (most frequent pair first), so that applying them in order reproduces every word."""
    splits = [[*word[:-1], word[-1] + "</w>"] for word in words]
    merges = []
    while any(len(split) > 1 for split in splits):
        counts = Counter(pair for split in splits for pair in zip(split, split[1:]))
        pair = max(sorted(counts), key=counts.__getitem__)
        merges.append(pair)
        for split in splits:
            i = 0
            while i < len(split) - 1:
                if (split[i], split[i + 1]) == pair:
                    split[i:i + 2] = ["".join(pair)]
                i += 1
    return merges


def write_tokenizer(folder: Path, words: list[str] = (), pad_token: str = "<|endoftext|>") -> int:
    """A CLIP tokenizer whose whole words are `words` (none: character-level), padding with `pad_token`; any
    other text falls back to characters. Returns the vocabulary size."""
    alphabet = _byte_alphabet()
    merges = _learn_merges(list(words))
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("".join(["#version: 0.2\n", *(f"{a} {b}\n" for a, b in merges)]),
                                       encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**specials, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}))
    return len(tokens)


def _text_encoder(class_name: str, vocab_size: int):
    import transformers
    from transformers import CLIPTextConfig

    return getattr(transformers, class_name)(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_WIDTH,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def _vae(scaling_factor: float, temporal: bool = False):
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

    blocks = 4  # the real 8x spatial scale
    if temporal:  # its decoder's group norms have 32 groups
        return AutoencoderKLTemporalDecoder(
            scaling_factor=scaling_factor, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            sample_size=64, block_out_channels=(32,) * blocks, down_block_types=("DownEncoderBlock2D",) * blocks)
    return AutoencoderKL(
        scaling_factor=scaling_factor, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        norm_num_groups=8, sample_size=64,
        block_out_channels=(16, 16, 32, 32), down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks)


IMAGE_SIZE = 224  # the reference resizes the image to 224x224 for CLIP, whatever the encoder's size


def _image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=32, projection_dim=TEXT_WIDTH))


def _write_image_processor(folder: Path) -> None:
    """CLIP's image processor settings (its mean and standard deviation are what the pack reads)."""
    folder.mkdir(parents=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "size": {"shortest_edge": IMAGE_SIZE}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "resample": 3, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]},
        indent=1))


def _activate_zero_layers(model: torch.nn.Module) -> None:
    """Give zero-initialised weight matrices small random values, so every path affects the output."""
    for param in model.parameters():
        if param.ndim >= 2 and not param.any():
            fan_in = param[0].numel()
            param.data.normal_(0.0, 0.5 / fan_in**0.5)


@functools.lru_cache(maxsize=None)
def _micro_digest(unet_part: str) -> str:
    """A short hash of the shipped weights a micro model is made of: retrained weights get a new cache folder.
    Read once per process (every load of the model resolves its folder)."""
    digest = hashlib.sha256(json.dumps(_SCHEDULER, sort_keys=True).encode())
    for part in (*MICRO_SHARED, unet_part):
        for path in sorted((MICRO_DIR / part).iterdir()):
            digest.update(f"{part}/{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _build(name: str, folder: Path) -> None:
    recipe = BUILTINS[name]
    unet_class, make_unet = recipe["unet"]
    text = recipe.get("text", _CLIP)
    index = {"_class_name": recipe["pipeline"], "unet": ["diffusers", unet_class]}
    for tokenizer, encoder, encoder_class, _pad_token in text:
        index.update({tokenizer: ["transformers", "CLIPTokenizer"], encoder: ["transformers", encoder_class]})
    vae_class, make_vae = recipe.get("vae", ("AutoencoderKL", _vae))
    if isinstance(make_unet, str):  # a trained micro model: its shipped weights
        for component, part in {**{part: part for part in MICRO_SHARED}, "unet": make_unet}.items():
            shutil.copytree(MICRO_DIR / part, folder / component)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RECIPE_VERSION)
            components = [("unet", make_unet())]
            for tokenizer, encoder, encoder_class, pad_token in text:
                vocab_size = write_tokenizer(folder / tokenizer, pad_token=pad_token)
                components.append((encoder, _text_encoder(encoder_class, vocab_size)))
            components.append(("vae", make_vae(recipe.get("vae_scaling_factor", 0.18215))))
            if recipe.get("image_encoder"):
                components.append(("image_encoder", _image_encoder()))
                _write_image_processor(folder / "feature_extractor")
                index.update({"image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
                              "feature_extractor": ["transformers", "CLIPImageProcessor"]})
            for component, model in components:
                _activate_zero_layers(model)
                model.save_pretrained(folder / component, safe_serialization=True)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": recipe["scheduler"], **_SCHEDULER, **recipe.get("scheduler_extra", {})}, indent=1))
    index.update({"vae": ["diffusers", vae_class], "scheduler": ["diffusers", recipe["scheduler"]]})
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))


def ensure_builtin(name: str, cache_dir: Path) -> Path:
    """The folder of built-in model `name` (without prefix), building it on first use."""
    unet_source = BUILTINS[name]["unet"][1]
    version = _micro_digest(unet_source) if isinstance(unet_source, str) else f"v{RECIPE_VERSION}"
    return build_once(cache_dir, name, "model_index.json", lambda staging: _build(name, staging), version)


def build_once(cache_dir: Path, name: str, marker: str, build, version: str = f"v{RECIPE_VERSION}") -> Path:
    """`cache_dir/<name>-<version>`, made by `build(staging folder)` unless it exists (has `marker`): built aside
    and renamed into place, so a crash or a concurrent build never leaves a half-written folder."""
    folder = cache_dir / f"{name}-{version}"
    if (folder / marker).is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        build(staging)
        os.replace(staging, folder)
    except OSError:
        if not (folder / marker).is_file():  # not built concurrently by another process
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
