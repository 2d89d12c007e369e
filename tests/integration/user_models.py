"""The model files a ComfyUI user would hold, made small on a test server: checkpoints (saved by core
`CheckpointSave`), a LoRA, a CLIP, a VAE and a ControlNet in its models folders. Used by the core-model
integration tests and by the browser tests that run the examples on the user's own checkpoints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from api_workflows import link, node
from comfy_harness import comfyui_paths
from core_model_files import CLIP_NAME, UNET_NAMES, VAE_NAME

HERE = Path(__file__).parent
SCRIPT_TIMEOUT = RUN_TIMEOUT = 900
"""Seconds for a script or a prompt: a 43 M-parameter UNet and CLIP ViT-L are slow on a busy CI CPU."""


def run_in_comfyui_python(script: str, base: Path) -> dict:
    """Run `script` (a file next to this one) in ComfyUI's interpreter on the server folder `base`; the JSON
    it prints last."""
    comfyui_dir, python = comfyui_paths()
    done = subprocess.run([str(python), str(HERE / script), str(comfyui_dir), str(base)], capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT, cwd=comfyui_dir)
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_model_files(comfy) -> dict:
    """The UNets, CLIP, VAE, LoRA and ControlNet in the server's models folders (parameter counts)."""
    return run_in_comfyui_python("core_model_files.py", comfy.base)


def save_checkpoints(comfy) -> dict[str, str]:
    """Single-file checkpoints joined by core CheckpointSave from `make_model_files`' parts, moved into
    models/checkpoints: {unet name: file name}."""
    made = {}
    for name in UNET_NAMES:
        prompt = {"1": node("UNETLoader", unet_name=f"{name}.safetensors", weight_dtype="default"),
                  "2": node("CLIPLoader", clip_name=f"{CLIP_NAME}.safetensors", type="stable_diffusion"),
                  "3": node("VAELoader", vae_name=f"{VAE_NAME}.safetensors"),
                  "4": node("CheckpointSave", model=link("1"), clip=link("2"), vae=link("3"),
                            filename_prefix=f"checkpoints/{name}")}
        run = comfy.run(prompt, timeout=RUN_TIMEOUT)
        assert run.status == "success", run.error()
        (saved,) = (comfy.output_dir / "checkpoints").glob(f"{name}_*.safetensors")
        target = comfy.models_dir / "checkpoints" / f"{name}.safetensors"
        target.parent.mkdir(exist_ok=True)
        saved.rename(target)
        made[name] = target.name
    return made
