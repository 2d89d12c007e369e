"""Train the built-in micro models on the micro world (`tools/microworld.py`); not part of the test suite.

    nice -n 15 python -m comfyui_text2video.tools.train_micro STAGE [--steps N]

Stages, in order (each writes its weights into `models/micro/`, the later ones read the earlier ones):

- `text`: the tokenizer (whole words for the world's vocabulary) and a CLIP text encoder with frozen random
  weights. Frozen, because the captions are a fixed template of 14 words: a random encoder already gives every
  word at every position its own embedding, and the UNets' cross-attention learns to read it. Training it too
  would tie the two UNets to one training run and add nothing the world asks for.
- `vae`: an `AutoencoderKL` with the real 8x down-sampling (64x64 frames -> 8x8x4 latents), on random frames,
  decoding the posterior mean with a small KL term; the object's pixels weigh 10x in the loss (it covers ~7% of
  a frame and its colour is what a viewer reads); its `scaling_factor` makes the latents' standard deviation 1.
- `vae_decoder` (optional): more training for the decoder alone; the latents stay valid.
- `latents`: encodes a fixed set of clips once (posterior means) into a cache outside the repository.
- `unet2d` (`builtin:micro-sd`, single frames of the clips) and `unet3d` (`builtin:micro-text2video`): epsilon
  prediction on the DDIM/scaled-linear schedule of the other built-ins, min-SNR-5 loss weights, AdamW with a
  warm-up and a cosine decay, an EMA of the weights (what is saved); 10% empty captions (for classifier-free
  guidance), and each attribute left out of a caption 10% of the time (so 'a circle moving right' or 'a red
  shape' mean something, and a negative prompt 'a red circle' works). `unet3d` has the layout of `unet2d` with
  the 3D blocks and starts from its trained weights, its temporal layers as identities (ModelScope's recipe:
  it already draws the prompt's object on every frame and only learns the motion); trained from random
  weights, with cross-attention in its middle block only, it had not learnt to read the prompt after 400 steps.
  While `unet3d` trains, a linear probe (training only, not saved) reads the caption's direction from the first
  block's output, pooled over frames and space, and its loss (weight `direction_probe`) is added: it makes the
  cross-attention write the direction into the features the temporal layers see (see "What it learnt").
- `eval`: renders every colour/shape/direction combination through the pack's nodes and reports how often the
  colour and the direction come out right, by colour, by direction, and for the held-out combinations.

Settings are the `SETTINGS` below; a run is deterministic for a given thread count. Weights are saved in
float16 (the loader converts them to the requested dtype) every `save_every` steps, so a stopped run leaves
usable weights. Each stage appends what it did and how long it took to `models/micro/training_log.jsonl`.
No training data is written into the repository.

Measured (1 thread each, nice 5, on the project's 2-core machine shared with other jobs: load 6-9, so each
process got 20-50% of a core; `training_log.jsonl` has every figure):

- text 1 s; vae 1000 of its 2000 steps (stopped at a checkpoint: object colour error 12 of 255, MSE 0.0048 on
  -1..1) 846 s; latents 2208 clips 222 s; unet2d 800 of 1500 steps (stopped at a checkpoint: colours right) 1839 s.
- unet3d (sessions 5-6, one or two 1-thread jobs on the 2 cores): `unet3d` 1000 steps 952 s, then five resumed
  runs (`unet3d --resume --steps N`, each with a fresh optimiser, warm-up and cosine decay, and the same seed), N =
  1000, 1500, 1500, 1500, 1500: 1057 s, 1555 s, 1692 s, 1858 s, 1509 s. 8,000 steps, about 144 minutes. The
  weights before it (1000 steps without the probe, 2679 s) are in git history.
- Per step on an idle core: unet3d 0.6 s (batch 8), unet2d 0.2 s (batch 32), vae 0.35 s (batch 16).
- eval: see `training_log.jsonl` (last entries) and the README's figures.
- What it learnt: colours (and shapes) from the prompt on both models; Text2Video-Zero follows the motion field;
  the video model follows the prompt's direction in about 4 videos of 5 (10 DDIM steps; chance is 1 in 4), more
  often with more steps. Direction accuracy grew with every run: after 1000 steps 31%, 2000 63%, 3500 73%, 5000
  76%, 6500 76% (2 seeds of every colour and direction; circles and squares after 1000 steps, all shapes after);
  the `eval` stage gives 78% after 5,000 steps, 77% after 6,500 and 79% after 8,000. The video model drew blue
  triangles red up to 5,000 steps (colour 94% in the `eval`); after 6,500, 99%.
- Why the probe: without it direction stayed at chance whatever was tried (session 4, on the earlier weights:
  1,100 more steps; 850 steps training only the temporal layers and cross-attention with the noisiest steps
  weighted as an x0 loss; 200 steps with a loss rewarding the clip's direction over the opposite one; 1,500 steps
  starting with clips that all move right or down), and even the axis (horizontal or vertical, which needs no
  frame order) was at chance: the model did not use the direction word at all. The image UNet it starts from
  learnt to ignore that word (a single frame does not show a direction), so the features reaching the temporal
  layers (which have no cross-attention) carried no direction, and the temporal layers had no reason to read one:
  a product of two zero paths, whose gradient is zero. The probe gives the first path a gradient of its own; with
  it, the x0 error at t 800-900 with the opposite direction in the caption became 11% higher than with the right
  one (it had stayed within 0.5%), and sampling followed. Tried the same session and not kept: the probe on the
  earlier weights for 600 steps (direction still at chance), the noisiest steps weighted up to 10x as an x0 loss
  (no better than without), and a world with faster objects (4-5 px a frame: 74% after 2000 steps, 80% after 3200;
  not kept for a 4-point gain within the eval's noise).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..models.builtin import _SCHEDULER, MICRO_DIR, write_tokenizer
from . import microworld as world

SETTINGS = {
    "threads": 1,
    "text": {"seed": 1, "hidden_size": 32, "intermediate_size": 64, "layers": 2, "heads": 4},
    "vae": {"seed": 2, "steps": 2000, "batch": 16, "lr": 2e-3, "warmup": 0.05, "kl_weight": 1e-6,
            "object_weight": 10.0, "block_out_channels": (16, 16, 32, 32), "norm_num_groups": 8, "save_every": 250},
    "vae_decoder": {"seed": 6, "steps": 1500, "batch": 16, "lr": 1e-3, "warmup": 0.02, "kl_weight": 0.0,
                    "object_weight": 10.0, "save_every": 250},
    "latents": {"seed": 3, "clips_per_combination": 48},
    "unet3d": {"seed": 4, "steps": 1000, "batch": 8, "lr": 1e-3, "warmup": 0.03, "ema": 0.999,
               "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
               "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"), "attention_head_dim": 8, "save_every": 50,
               "init_from": "unet2d", "direction_probe": 0.1},
    "unet2d": {"seed": 5, "steps": 1500, "batch": 64, "lr": 2e-3, "warmup": 0.03, "ema": 0.999,
               "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
               "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "attention_head_dim": 8, "save_every": 100},
    "captions": {"empty": 0.1, "drop_attribute": 0.1, "drop_direction_2d": 0.5},
    "min_snr_gamma": 5.0,
}
CACHE = Path(os.environ.get("T2V_MICRO_CACHE", Path.home() / ".cache" / "comfyui-text2video-micro"))


def _log(stage: str, seconds: float, **details) -> None:
    entry = {"stage": stage, "seconds": round(seconds, 1), "settings": SETTINGS.get(stage), **details}
    with open(MICRO_DIR / "training_log.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)


def _save(model, part: str) -> None:
    """Save `model` in float16 into models/micro/PART, replacing what was there."""
    import copy
    import shutil

    staging = MICRO_DIR / f".{part}.saving"
    shutil.rmtree(staging, ignore_errors=True)
    copy.deepcopy(model).half().save_pretrained(staging, safe_serialization=True)
    target = MICRO_DIR / part
    old = MICRO_DIR / f".{part}.old"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def train_text() -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    start = time.time()
    s = SETTINGS["text"]
    import shutil

    shutil.rmtree(MICRO_DIR / "tokenizer", ignore_errors=True)
    vocab_size = write_tokenizer(MICRO_DIR / "tokenizer", world.vocabulary())
    torch.manual_seed(s["seed"])
    model = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"], max_position_embeddings=77,
        projection_dim=s["hidden_size"], bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1))
    _save(model, "text_encoder")
    _log("text", time.time() - start, parameters=sum(p.numel() for p in model.parameters()))


def _random_frames(rng: np.random.Generator, count: int) -> torch.Tensor:
    """`count` frames of random objects at random places, as a `[count, 3, 64, 64]` tensor in -1..1."""
    frames = []
    for _ in range(count):
        colour, shape = rng.choice(list(world.COLOURS)), rng.choice(world.SHAPES)
        clip = world.make_clip(colour, shape, rng.choice(list(world.DIRECTIONS)), rng, frames=2)
        frames.append(clip.frames[int(rng.integers(2))])
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _object_mask(frames: torch.Tensor) -> torch.Tensor:
    """1 where a pixel of `frames` (`[N, 3, H, W]`, -1..1) belongs to the object, as `microworld.read_object` sees
    it, else 0; `[N, 1, H, W]`."""
    background = torch.tensor(world.BACKGROUND, dtype=frames.dtype).view(1, 3, 1, 1) / 127.5 - 1.0
    return ((frames - background).norm(dim=1, keepdim=True) * 127.5 > world.OBJECT_DISTANCE).to(frames.dtype)


def _vae_test(vae, rng: np.random.Generator) -> dict:
    """Reconstruction error of fresh frames: the MSE (on -1..1) and the object's mean colour error (0..255)."""
    test = _random_frames(rng, 64)
    with torch.no_grad():
        recon = vae.decode(vae.encode(test).latent_dist.mean).sample.clamp(-1, 1)
    mask = _object_mask(test)
    colour_error = ((recon - test) * mask).sum((2, 3)) / mask.sum((2, 3))
    return {"test_mse": round(torch.nn.functional.mse_loss(recon, test).item(), 5),
            "test_object_rgb_error": round(colour_error.norm(dim=1).mean().item() * 127.5, 1)}


def train_vae(steps: int | None, decoder_only: bool = False) -> None:
    """Train the VAE: reconstruction of the posterior mean, the object's pixels weighted up (it covers ~7% of a
    frame, and its colour is what a viewer reads), a small KL term. `decoder_only` goes on training the saved
    VAE's decoder: the latents, and so the UNets trained on them, stay valid."""
    from diffusers import AutoencoderKL

    stage = "vae_decoder" if decoder_only else "vae"
    s = SETTINGS[stage]
    start = time.time()
    torch.manual_seed(s["seed"])
    rng = np.random.default_rng(s["seed"])
    if decoder_only:
        vae = _load_vae().train()
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    else:
        blocks = len(s["block_out_channels"])
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=world.SIZE,
            norm_num_groups=s["norm_num_groups"], block_out_channels=s["block_out_channels"],
            down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=s["lr"], weight_decay=0.0)
    steps = steps or s["steps"]
    schedule = _warmup_cosine(optimiser, s["lr"], steps, s["warmup"])
    for step in range(steps):
        frames = _random_frames(rng, s["batch"])
        posterior = vae.encode(frames).latent_dist
        recon = vae.decode(posterior.mode()).sample
        weight = 1.0 + (s["object_weight"] - 1.0) * _object_mask(frames)
        mse = (weight * (recon - frames).pow(2)).mean() / weight.mean()
        loss = mse + s["kl_weight"] * posterior.kl().mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"{stage} step {step} weighted mse {mse.item():.5f} ({time.time() - start:.0f}s)", flush=True)
        if (step + 1) % s["save_every"] == 0 or step == steps - 1:
            vae.eval()
            if not decoder_only:
                with torch.no_grad():
                    latents = vae.encode(_random_frames(np.random.default_rng(s["seed"]), 256)).latent_dist.mean
                vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
            test = _vae_test(vae, np.random.default_rng(SETTINGS["vae"]["seed"] + 1000))
            print(f"{stage} step {step + 1}: {test}", flush=True)
            _save(vae, "vae")
            vae.train()
    _log(stage, time.time() - start, steps=steps, parameters=sum(p.numel() for p in vae.parameters()),
         scaling_factor=vae.config.scaling_factor, **test)


def _warmup_cosine(optimiser, lr: float, steps: int, warmup: float):
    """A (cosine-shaped) warm-up over the first `warmup` fraction of the steps, then a cosine decay to ~0."""
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=warmup,
                                               anneal_strategy="cos", div_factor=25.0, final_div_factor=1e3)


def _load_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(MICRO_DIR / "vae", torch_dtype=torch.float32).eval()


def make_latents() -> None:
    """Encode `clips_per_combination` clips of every training combination; cache them outside the repo."""
    s = SETTINGS["latents"]
    start = time.time()
    rng = np.random.default_rng(s["seed"])
    vae = _load_vae()
    latents, labels = [], []
    with torch.no_grad():
        for combination in world.training_combinations():
            clips = [world.make_clip(*combination, rng) for _ in range(s["clips_per_combination"])]
            frames = torch.from_numpy(np.stack([c.frames for c in clips])).float() / 127.5 - 1.0
            flat = frames.reshape(-1, world.SIZE, world.SIZE, 3).permute(0, 3, 1, 2)
            encoded = vae.encode(flat).latent_dist.mean * vae.config.scaling_factor
            latents.append(encoded.reshape(len(clips), world.FRAMES, *encoded.shape[1:]).transpose(1, 2))
            labels += [combination] * len(clips)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": torch.cat(latents).half(), "labels": labels}, CACHE / "latents.pt")
    _log("latents", time.time() - start, clips=len(labels))


class _Captions:
    """Caption embeddings of the frozen text encoder, computed once per caption."""

    def __init__(self):
        from transformers import CLIPTextModel, CLIPTokenizer

        self.tokenizer = CLIPTokenizer.from_pretrained(MICRO_DIR / "tokenizer")
        self.encoder = CLIPTextModel.from_pretrained(MICRO_DIR / "text_encoder", dtype=torch.float32).eval()
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, text: str) -> torch.Tensor:
        if text not in self._cache:
            tokens = self.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            with torch.no_grad():
                self._cache[text] = self.encoder(tokens.input_ids)[0][0]
        return self._cache[text]


def _training_caption(rng: np.random.Generator, colour: str, shape: str, direction: str, video: bool) -> str:
    c = SETTINGS["captions"]
    if rng.random() < c["empty"]:
        return ""
    keep = lambda: rng.random() >= c["drop_attribute"]  # noqa: E731
    keep_direction = keep() and (video or rng.random() >= c["drop_direction_2d"])
    return world.caption(colour if keep() else None, shape if keep() else None, direction if keep_direction else None)


def _inflate(unet3d, unet2d) -> None:
    """Start the video UNet from the trained image UNet of the same layout (as ModelScope started from Stable
    Diffusion): every spatial weight copied (1x1-convolution projections as linear ones), the temporal layers
    made identities (their output projections zeroed), so the video model begins as the image model on each
    frame and only has to learn the motion."""
    source = unet2d.state_dict()
    target = unet3d.state_dict()
    copied = 0
    for key, value in source.items():
        if key in target and target[key].numel() == value.numel():
            target[key] = value.reshape(target[key].shape)
            copied += 1
    for key in target:
        if ("temp_attentions" in key or key.startswith("transformer_in")) and ".proj_out." in key:
            target[key] = torch.zeros_like(target[key])
    unet3d.load_state_dict(target)
    if copied != len(source):
        raise ValueError(f"the image UNet's layout differs: {len(source) - copied} of its weights have no place")


class _DirectionProbe:
    """A training-only linear read-out of the caption's direction from the first block's features (pooled over
    frames and space). Its loss makes the cross-attention write the direction into the features the temporal layers
    see; without it neither side starts using the direction (see the module docstring). Not saved."""

    def __init__(self, unet, channels: int):
        self.head = torch.nn.Linear(channels, len(world.DIRECTIONS))
        self.features = None
        unet.down_blocks[0].register_forward_hook(lambda module, args, output: setattr(self, "features", output[0]))
        self.accuracy = 0.0

    def loss(self, texts: list[str]) -> torch.Tensor:
        names = list(world.DIRECTIONS)
        labels = torch.tensor([next((names.index(w) for w in t.split() if w in names), -100) for t in texts])
        pooled = self.features.reshape(len(texts), -1, *self.features.shape[1:]).mean((1, 3, 4))
        logits = self.head(pooled)
        known = labels >= 0
        if not known.any():
            return logits.sum() * 0.0
        self.accuracy = 0.9 * self.accuracy + 0.1 * (logits[known].argmax(1) == labels[known]).float().mean().item()
        return torch.nn.functional.cross_entropy(logits[known], labels[known])


def train_unet(kind: str, steps: int | None, resume: bool = False) -> None:
    """Train a UNet from scratch, or (`resume`) go on from its saved weights with a fresh optimiser."""
    from diffusers import DDPMScheduler, UNet2DConditionModel, UNet3DConditionModel

    s = SETTINGS[kind]
    video = kind == "unet3d"
    start = time.time()
    torch.manual_seed(s["seed"])
    rng = np.random.default_rng(s["seed"])
    data = torch.load(CACHE / "latents.pt", weights_only=True)
    latents, labels = data["latents"].float(), data["labels"]
    captions = _Captions()
    width = captions.encoder.config.hidden_size
    unet_class = UNet3DConditionModel if video else UNet2DConditionModel
    unet = unet_class(
        sample_size=world.SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=s["block_out_channels"], down_block_types=s["down_block_types"],
        up_block_types=s["up_block_types"], cross_attention_dim=width, attention_head_dim=s["attention_head_dim"],
        norm_num_groups=8)
    if resume:
        unet.load_state_dict(unet_class.from_pretrained(MICRO_DIR / kind, torch_dtype=torch.float32).state_dict())
    elif s.get("init_from"):
        _inflate(unet, UNet2DConditionModel.from_pretrained(MICRO_DIR / s["init_from"], torch_dtype=torch.float32))
    ema = unet_class.from_config(unet.config)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    noise_schedule = DDPMScheduler.from_config(_SCHEDULER)
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=SETTINGS["min_snr_gamma"]) / snr
    probe = _DirectionProbe(unet, s["block_out_channels"][0]) if video and s.get("direction_probe") else None
    trained = list(unet.parameters()) + (list(probe.head.parameters()) if probe else [])
    optimiser = torch.optim.AdamW(trained, lr=s["lr"], weight_decay=0.0)
    steps = steps or s["steps"]
    schedule = _warmup_cosine(optimiser, s["lr"], steps, s["warmup"])
    for step in range(steps):
        picks = rng.integers(len(labels), size=s["batch"])
        x0 = latents[picks]
        if not video:  # one random frame of each clip
            x0 = x0[torch.arange(len(picks)), :, torch.from_numpy(rng.integers(world.FRAMES, size=len(picks)))]
        texts = [_training_caption(rng, *labels[i], video) for i in picks]
        text = torch.stack([captions(t) for t in texts])
        noise = torch.randn_like(x0)
        t = torch.randint(0, len(alphas), (len(picks),))
        noisy = noise_schedule.add_noise(x0, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=text).sample
        per_sample = (predicted - noise).pow(2).flatten(1).mean(1)
        loss = (per_sample * weights[t]).mean()
        if probe:
            probe_loss = probe.loss(texts)
            loss = loss + s["direction_probe"] * probe_loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        schedule.step()
        decay = min(s["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for mine, averaged in zip(unet.parameters(), ema.parameters()):
                averaged.lerp_(mine, 1 - decay)
        if step % 50 == 0:
            extra = f" probe {probe_loss.item():.3f} acc {probe.accuracy:.2f}" if probe else ""
            print(f"{kind} step {step} loss {loss.item():.4f}{extra} ({time.time() - start:.0f}s)", flush=True)
        if (step + 1) % s["save_every"] == 0 or step == steps - 1:
            _save(ema, kind)
    _log(kind, time.time() - start, steps=steps, resumed=resume, parameters=sum(p.numel() for p in unet.parameters()))


def _render(name: str, handles, colour: str, shape: str, direction: str, seed: int, steps: int) -> np.ndarray:
    """A video of the combination, made by micro model `name` through the pack's nodes, as `[F, H, W, 3]` 0..1."""
    from ..nodes import NODE_CLASS_MAPPINGS as N

    model, clip, vae = handles
    negative = N["T2VTextEncode"]().encode(clip, "")[0]
    if name == "micro-text2video":
        positive = N["T2VTextEncode"]().encode(clip, world.caption(colour, shape, direction))[0]
        empty = N["T2VEmptyLatentVideo"]().create(world.SIZE, world.SIZE, world.FRAMES, 1)[0]
        latent = N["T2VSampler"]().sample(model, positive, negative, empty, seed, steps, 7.0, "ddim", "normal", 1.0)[0]
    else:  # Text2Video-Zero: the direction comes from the motion field (-24 on the 512 grid: 3 px a frame), applied
        # a third of the way through (the object's place is settled by then) and re-noised to 7/12 before the end
        dx, dy = world.DIRECTIONS[direction]
        positive = N["T2VTextEncode"]().encode(clip, world.caption(colour, shape, None))[0]
        latent = N["T2VText2VideoZero"]().generate(model, positive, negative, seed, steps, 7.0, "ddim", "normal",
                                                   world.SIZE, world.SIZE, world.FRAMES, -24.0 * dx, -24.0 * dy,
                                                   steps // 3, steps * 7 // 12, 0)[0]
    return N["T2VVAEDecode"]().decode(vae, latent)[0].numpy()


def evaluate(names: list[str], seeds: int, steps: int) -> None:
    """How often the colour (most frames) and the direction (centroid, first to last frame) come out right, for
    every colour/shape/direction combination, by colour, by direction, and for the held-out combinations."""
    from ..models.loading import load_model

    for name in names:
        start = time.time()
        handles = load_model(f"builtin:{name}", "float32")
        tally: dict[str, list[int]] = {}
        for colour in world.COLOURS:
            for shape in world.SHAPES:
                for direction in world.DIRECTIONS:
                    held_out = (colour, shape, direction) in world.HELD_OUT
                    for seed in range(seeds):
                        readings = [world.read_object(f)
                                    for f in _render(name, handles, colour, shape, direction, seed, steps)]
                        right = ([r.colour for r in readings].count(colour) > len(readings) // 2,
                                 world.motion_direction(readings)[0] == direction)
                        for key in ("held_out" if held_out else "trained", colour, direction):
                            counts = tally.setdefault(key, [0, 0, 0])
                            counts[0] += 1
                            counts[1] += right[0]
                            counts[2] += right[1]
        results = {key: {"videos": n, "colour_right": round(c / n, 3), "direction_right": round(d / n, 3)}
                   for key, (n, c, d) in tally.items()}
        _log("eval", time.time() - start, model=name, seeds=seeds, sampling_steps=steps, results=results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("text", "vae", "latents", "unet3d", "unet2d", "vae_decoder", "eval"))
    parser.add_argument("--steps", type=int, help="training steps (default: SETTINGS), or sampling steps for eval")
    parser.add_argument("--seeds", type=int, default=2, help="eval: videos per combination")
    parser.add_argument("--models", default="micro-text2video,micro-sd", help="eval: which micro models")
    parser.add_argument("--resume", action="store_true", help="unet3d/unet2d: go on from the saved weights")
    args = parser.parse_args()
    torch.set_num_threads(SETTINGS["threads"])
    MICRO_DIR.mkdir(exist_ok=True)
    if args.stage == "text":
        train_text()
    elif args.stage in ("vae", "vae_decoder"):
        train_vae(args.steps, decoder_only=args.stage == "vae_decoder")
    elif args.stage == "latents":
        make_latents()
    elif args.stage == "eval":
        evaluate(args.models.split(","), args.seeds, args.steps or 20)
    else:
        train_unet(args.stage, args.steps, args.resume)


if __name__ == "__main__":
    main()
