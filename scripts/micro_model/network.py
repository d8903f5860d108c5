"""The micro model's network: the official architecture at a tiny size, built and run by this pack.

The weights start in the official key layout (scripts/myv_runner/selfcheck.py's shape table) and go
through the same path as a released checkpoint: myv_core.checkpoint.split_checkpoint, MYV Checkpoint
Loader's spatial_model and attach_temporal. Training then calls ComfyUI's UNet with the temporal
layers injected, so the trained weights are the ones the nodes run, and the UNet's state dict is the
official layout again.
"""

import importlib
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from myv_runner.selfcheck import UNET_PREFIX, random_weights, unet_shapes  # noqa: E402

from . import data  # noqa: E402

# The official architecture (LVDM's UNetModel as Make-Your-Video configures it) at 8x8 latents: two
# levels (8x8, 4x4), spatial and temporal transformers at both, a temporal convolution after every
# ResBlock, relative positions and the causal mask over 16 frames.
MICRO_CONFIG = {
    "in_channels": 5, "out_channels": 4, "model_channels": 32, "attention_resolutions": [2, 1],
    "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16, "transformer_depth": 1,
    "context_dim": data.CONTEXT_DIM, "temporal_length": 16,
}
# Layers that end a residual branch start at zero (as the official temporal convolutions and the
# usual diffusion UNet inits do), so every block starts as the identity.
ZERO_INIT = ("out_layers.3.weight", "proj_out.weight", "conv_last.3.weight", "out.2.weight")


def initial_weights(seed):
    """Official-layout UNet state dict (with the model.diffusion_model. prefix) to start training from."""
    sd = random_weights(unet_shapes(MICRO_CONFIG), seed)
    for key in sd:
        if key.endswith(ZERO_INIT):
            sd[key] = torch.zeros_like(sd[key])
    return {UNET_PREFIX + k: v for k, v in sd.items()}


class MicroUNet:
    """A Make-Your-Video MODEL built by the pack from a state dict, with its weights made trainable.

    __call__(x, depth_channel, t, context, frames): eps for (clips * frames, 4, 8, 8) latents, as one
    UNet call of the nodes' sampling (depth concatenated, frames as the batch). Training runs the UNet
    outside a sampler, so the temporal layers are injected here with nodes/patching.py's own
    inject/eject rather than by ComfyUI's model loading.
    """

    def __init__(self, pack, state_dict):
        checkpoint = importlib.import_module(pack.__name__ + ".myv_core.checkpoint")
        self.join_unet = importlib.import_module(pack.__name__ + ".myv_core.layout").join_unet
        self.patching = patching = pack.nodes.patching
        parts = checkpoint.split_checkpoint(state_dict, "micro model")
        base, _ = pack.nodes.loaders.spatial_model(parts, "fp32")
        self.model = patching.attach_temporal(base, parts.temporal)
        self.unet = patching.unet_of(self.model)
        patching._inject(self.model)
        self.options = self.model.model_options["transformer_options"]
        self.key = patching.KEY
        sigmas = self.model.model.model_sampling.sigmas.float()
        self.alphas_cumprod = 1.0 / (1.0 + sigmas ** 2)
        for p in self.unet.parameters():
            p.requires_grad_(True)

    def parameters(self):
        return list(self.unet.parameters())

    def __call__(self, x, depth_channel, t, context, frames):
        options = dict(self.options, **{self.key: {"frames": frames}})
        return self.unet(torch.cat([x, depth_channel], dim=1), timesteps=t, context=context,
                         transformer_options=options)

    def state_dict(self):
        """The official-layout UNet: ComfyUI's spatial layout and the temporal layers joined back."""
        self.patching._eject(self.model)
        try:
            spatial = self.unet.state_dict()
        finally:
            self.patching._inject(self.model)
        temporal = self.patching._temporal_layers(self.model).state_dict()
        return {UNET_PREFIX + k: v.detach().clone() for k, v in self.join_unet(spatial, temporal).items()}
