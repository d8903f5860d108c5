"""torch.compile through core "TorchCompileModel" (this ComfyUI's own node).

The node clones the MODEL (0.33: a non-dynamic clone) and sets comfy_api.torch_helpers'
set_torch_compile_wrapper, which compiles the diffusion model when sampling starts. Inside it run
the pack's forward_timestep_embed patch and the temporal layers, injected into the UNet for the run
and ejected afterwards. These tests fail when something of the pack makes dynamo break the graph,
or recompile on a rerun of the same shape or at every step. The backend counts the graphs dynamo
hands it and runs them eagerly: graph breaks and recompiles are dynamo's decisions, and skipping
inductor's code generation keeps the tests to seconds on a CPU. ComfyUI's attention is its SDPA
function here, what it picks on a GPU (the CPU default splits attention in Python loops).
"""

import pytest
import torch

import comfy.ldm.modules.attention
import comfy.sample

from tiny_models import tiny_unet

SIZE = 8


@pytest.fixture()
def sdpa_attention(monkeypatch):
    monkeypatch.setattr(comfy.ldm.modules.attention, "optimized_attention",
                        comfy.ldm.modules.attention.attention_pytorch)


@pytest.fixture()
def graphs():
    """A dynamo backend that counts the graphs it is handed, with dynamo's caches and counters reset."""
    import torch._dynamo
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = []

    def backend(gm, example_inputs, **options):
        compiled.append(gm)
        return gm.forward

    yield backend, compiled
    torch._dynamo.reset()


def video_model(pack, model_dir, fixtures_dir, frames):
    from safetensors.torch import save_file
    save_file(tiny_unet(fixtures_dir), str(model_dir / "tiny.safetensors"))
    model = pack.nodes.loaders.MYVCheckpointLoader().load("tiny.safetensors", "fp32")[0]
    depth = torch.rand(frames, 8 * SIZE, 8 * SIZE, 3, generator=torch.Generator().manual_seed(0))
    return pack.nodes.depth.MYVApplyDepth().apply(model, depth, "per_frame")[0]


def sample(model, frames, steps=2, cfg=1.0):
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 64, generator=g), {}]]
    latent = torch.zeros(frames, 4, SIZE, SIZE)
    noise = torch.randn(latent.shape, generator=g)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", cond, cond, latent,
                               disable_pbar=True, seed=0)


def compile_node(model, backend):
    """What core "TorchCompileModel" returns for `model` (its own execute, this ComfyUI's version)."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    return TorchCompileModel.execute(model, backend)[0]


def test_one_graph_and_no_recompile_on_rerun(pack, model_dir, fixtures_dir, sdpa_attention, graphs):
    import torch._dynamo
    backend, compiled = graphs
    model = video_model(pack, model_dir, fixtures_dir, 8)
    first = sample(compile_node(model, backend), 8)  # compiled on a UNet that never had layers injected
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    assert not breaks, f"graph breaks: {breaks}"
    assert len(compiled) == 1  # one graph for the whole UNet, every step after the first reuses it
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = sample(compile_node(model, backend), 8)  # the temporal layers were ejected and injected again
    assert len(compiled) == 1
    assert torch.equal(first, second)
    assert torch.allclose(first, sample(model, 8), atol=1e-5)


def test_cfg_batch_compiles_once(pack, model_dir, fixtures_dir, sdpa_attention, graphs):
    """cond and uncond in one UNet call (two videos): still one graph, reused at every step."""
    backend, compiled = graphs
    model = video_model(pack, model_dir, fixtures_dir, 8)
    sample(compile_node(model, backend), 8, steps=3, cfg=3.0)
    assert len(compiled) == 1


def test_core_node_under_dynamic_vram(pack, model_dir, fixtures_dir, sdpa_attention, graphs, dynamic_patchers):
    """ComfyUI 0.33's node compiles a non-dynamic clone (model.clone(disable_dynamic=True)), which
    rebuilds the UNet through the loader's cached_patcher_init; the temporal layers follow it."""
    from comfyui_makeyourvideo.nodes.patching import KEY
    backend, compiled = graphs
    eager = sample(video_model(pack, model_dir, fixtures_dir, 8), 8)
    dynamic_patchers()
    model = video_model(pack, model_dir, fixtures_dir, 8)
    assert model.is_dynamic() and model.get_additional_models_with_key(KEY)[0].is_dynamic()
    fast = compile_node(model, backend)
    assert not fast.is_dynamic() and not fast.get_additional_models_with_key(KEY)[0].is_dynamic()
    assert fast.model is not model.model  # the delegate has weights of its own
    first = sample(fast, 8)
    assert not dict(torch._dynamo.utils.counters["graph_break"])
    assert len(compiled) == 1
    assert torch.allclose(first, eager, atol=1e-5)


def test_long_video_windows_compile_once(pack, model_dir, fixtures_dir, sdpa_attention, graphs):
    """MYV Long Video Sampler's windows are all window_frames long (the last keeps more context), so
    one graph serves every window, with its depth slice, kept frames and noise mask."""
    backend, compiled = graphs
    model = compile_node(video_model(pack, model_dir, fixtures_dir, 8), backend)
    g = torch.Generator().manual_seed(2)
    depth = torch.rand(20, 8 * SIZE, 8 * SIZE, 3, generator=g)
    cond = [[torch.randn(1, 77, 64, generator=g), {}]]
    latent = {"samples": torch.zeros(1, 4, SIZE, SIZE)}
    out = pack.nodes.long_video.MYVLongVideoSampler().sample(
        model, cond, cond, depth, latent, 0, 2, 1.0, "euler", "normal", 8, 2, "per_frame")[0]["samples"]
    assert out.shape[0] == 20  # windows 0-8, 6-14, 12-20 (the last keeps 2 context frames)
    assert not dict(torch._dynamo.utils.counters["graph_break"])
    assert len(compiled) == 1
