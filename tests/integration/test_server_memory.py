"""`POST /free` gives the pack's models back: measured as the server's resident memory.

On this CPU-only server ComfyUI has no other device to offload to, so `unload_models` alone moves nothing;
what frees RAM is dropping every reference: ComfyUI's `free_memory` drops its execution cache (which holds
the loader's outputs) and unloads the models, and the pack's own model cache holds only weak references
inside ComfyUI. A pack cache that kept the models would keep their RSS after `/free`.

`comfy.free` makes sure the worker acts on the flags `/free` sets (a bare `POST /free` right after a prompt can
leave them pending for 1000 s, see `ComfyServer.free`), without dropping the run's cached outputs itself: only
`/free` can give the memory back here.
"""

from __future__ import annotations

import time

import api_workflows as wf
from model_builder import UNSEEN_MODEL, unet_weight_bytes

RELEASE_TIMEOUT = 20.0
SHARE_THAT_MUST_COME_BACK = 0.6
"""Of the UNet's weight bytes (233 MiB); allocator caching and other noise stay well below the rest."""


def wait_for_rss_below(comfy, limit: int) -> int:
    deadline = time.monotonic() + RELEASE_TIMEOUT
    rss = comfy.rss_bytes()
    while rss > limit and time.monotonic() < deadline:
        time.sleep(0.25)
        rss = comfy.rss_bytes()
    return rss


def test_free_releases_the_packs_models(comfy):
    weights = unet_weight_bytes(comfy.models_dir / "diffusers" / UNSEEN_MODEL)
    comfy.wait_idle()
    prompt = wf.text_to_video("it/memory", seed=31, steps=1, model_name=UNSEEN_MODEL, frames=2)
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    loaded = comfy.rss_bytes()
    comfy.free(cached_prompt=prompt)
    limit = loaded - int(weights * SHARE_THAT_MUST_COME_BACK)
    freed = wait_for_rss_below(comfy, limit)
    assert freed <= limit, (f"RSS went from {loaded >> 20} MiB to {freed >> 20} MiB after /free; the model's UNet "
                            f"alone is {weights >> 20} MiB")
    assert "Potential memory leak" not in comfy.log(), "ComfyUI found a model kept alive after its patcher died"


def test_a_freed_model_loads_again(comfy):
    comfy.free()
    run = comfy.run(wf.text_to_video("it/after-free", seed=32, steps=1, frames=2))
    assert run.status == "success", run.error()
