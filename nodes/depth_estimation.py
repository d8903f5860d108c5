"""MYVDepthEstimatorLoader and MYVEstimateDepth: depth videos for MYVApplyDepth (or any ControlNet)."""

from pathlib import Path
from typing import NamedTuple

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths

from ..myv_core.depth_estimation import (NORMALIZE_MODES, PREFERRED_NORMALIZE, NativeDepth, check_images,
                                         depth_images, estimate_depth_and_native, estimate_steps,
                                         load_depth_estimator)
from ..myv_core.tensor_file import release_freed_memory
from .loaders import MODEL_FOLDER, register_model_folder

ESTIMATOR_FOLDER = "depth_estimators"
ESTIMATOR_TYPE = "MYV_DEPTH_ESTIMATOR"
NATIVE_DEPTH_TYPE = "MYV_NATIVE_DEPTH"  # a myv_core NativeDepth: the estimator's output before any resize
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# comfyui_controlnet_aux keeps its downloads in <its folder>/ckpts/<hub repository>/<file>.
AUX_PACK = "comfyui_controlnet_aux"
AUX_FILES = ("dpt_hybrid-midas-501f0c75.pt",)
AUX_PREFIX = AUX_PACK + "/"
MYV_PREFIX = MODEL_FOLDER + "/"
# MYV Estimate Depth's normalize: "estimator" (appended, the default for new nodes) takes the one the
# loaded estimator's depth fits best; saved workflows keep the value they were saved with.
ESTIMATOR_NORMALIZE = "estimator"

register_model_folder(ESTIMATOR_FOLDER, folder_paths.supported_pt_extensions)


def _aux_checkpoints():
    """{shown name: path} of the MiDaS files in comfyui_controlnet_aux's annotator cache, if installed."""
    found = {}
    for custom_nodes in folder_paths.get_folder_paths("custom_nodes"):
        ckpts = Path(custom_nodes) / AUX_PACK / "ckpts"
        if ckpts.is_dir():
            for name in AUX_FILES:
                for path in sorted(ckpts.rglob(name)):
                    found.setdefault(AUX_PREFIX + path.relative_to(ckpts).as_posix(), path)
    return found


def estimator_names():
    """depth_estimators files, then the controlnet_aux MiDaS file, then Make-Your-Video checkpoints
    (whose depth_stage_model is the MiDaS network)."""
    own = folder_paths.get_filename_list(ESTIMATOR_FOLDER)
    myv = [MYV_PREFIX + f for f in folder_paths.get_filename_list(MODEL_FOLDER)]
    return own + sorted(_aux_checkpoints()) + myv


def estimator_path(name):
    if name.startswith(AUX_PREFIX) and name in (aux := _aux_checkpoints()):
        return aux[name]
    if name.startswith(MYV_PREFIX):
        path = folder_paths.get_full_path(MODEL_FOLDER, name[len(MYV_PREFIX):])
        if path is not None:
            return path
    path = folder_paths.get_full_path(ESTIMATOR_FOLDER, name)
    if path is None:
        raise ValueError(f"model_name: '{name}' was not found in models/{ESTIMATOR_FOLDER}/; put "
                         "dpt_hybrid-midas-501f0c75.pt, video_depth_anything_vits.pth or a transformers model "
                         "folder there and refresh the browser.")
    return path


def torch_dtype(dtype, load_device, kind):
    """fp32 for the MiDaS network (its official precision) and on the CPU; auto gives Depth Anything
    and Video Depth Anything (whose official code runs in fp16 autocast on GPUs) fp16 on devices where
    ComfyUI uses fp16."""
    if dtype != "auto":
        return DTYPES[dtype]
    if kind in ("depth_anything", "video_depth_anything") and comfy.model_management.should_use_fp16(load_device):
        return torch.float16
    return torch.float32


class DepthEstimatorFile(NamedTuple):
    """What MYV Depth Estimator Loader hands on: a depth estimator file, checked (no weight read), and
    where and in which dtype it runs. MYV Estimate Depth reads the weights, runs and lets them go, so
    they take no memory through sampling (MiDaS: 0.46 GiB in fp32); ComfyUI reruns it, and so reads
    them again, only when its inputs change."""
    path: Path
    kind: str  # myv_core.depth_estimation.KINDS
    dtype: torch.dtype
    load_device: torch.device
    offload_device: torch.device

    def load(self):
        """The estimator as a ModelPatcher, its weights read now, on the CPU."""
        estimator = load_depth_estimator(self.path, self.dtype)
        return comfy.model_patcher.ModelPatcher(estimator, load_device=self.load_device,
                                                offload_device=self.offload_device)


def frames_that_fit(estimator, images, batch_size):
    """batch_size, or fewer frames where fewer fit in the free memory of the estimator's device (as
    core VAE Decode sizes its batches; on a CPU that is the available RAM): after a model is loaded,
    8 MiDaS frames at once would take 1.6 GiB more. estimator: a loaded ModelPatcher."""
    if batch_size < 1:
        return batch_size  # estimate_depth_and_native names the bad input
    per_frame = estimator.model.bytes_per_frame(images.shape[1], images.shape[2])
    free = comfy.model_management.get_free_memory(estimator.load_device)
    return max(1, min(batch_size, free // per_frame))


class MYVDepthEstimatorLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (estimator_names(), {"tooltip": f"dpt_hybrid-midas-501f0c75.pt (what Make-Your-Video was "
                                                          f"trained with), video_depth_anything_vits.pth (steady depth "
                                                          f"for videos), a transformers folder's model.safetensors "
                                                          f"(Intel/dpt-hybrid-midas, Depth Anything V2) in "
                                                          f"models/{ESTIMATOR_FOLDER}/, or a Make-Your-Video checkpoint"}),
            "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's GPU"}),
            "dtype": (["auto", *DTYPES], {"default": "auto", "tooltip": "auto: fp32 for MiDaS, fp16 for (Video) Depth "
                                                                        "Anything on GPUs"}),
        }}

    RETURN_TYPES = (ESTIMATOR_TYPE,)
    FUNCTION = "load"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = ("Loads a depth estimator: MiDaS DPT-Hybrid (as Make-Your-Video was trained), Depth Anything V2, "
                   "or Video Depth Anything (temporally consistent over the whole clip). The file is checked "
                   "here; MYV Estimate Depth reads its weights when it runs and frees them after.")

    def load(self, model_name, device, dtype):
        if device == "cpu":
            load_device = offload_device = torch.device("cpu")
        else:
            load_device = comfy.model_management.get_torch_device()
            offload_device = comfy.model_management.unet_offload_device()
        path = estimator_path(model_name)
        kind = load_depth_estimator(path, read_weights=False).kind
        return (DepthEstimatorFile(path, kind, torch_dtype(dtype, load_device, kind), load_device, offload_device),)


class MYVEstimateDepth:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "estimator": (ESTIMATOR_TYPE,),
            "images": ("IMAGE", {"tooltip": "the clip's frames"}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip":
                           "frames per network call at most (fewer when the free memory holds fewer). Video "
                           "Depth Anything always runs 32-frame windows (its temporal layers see all 32); "
                           "batch_size frames at a time go through its per-frame parts: lower uses less "
                           "memory, the depth is the same"}),
            "normalize": ([*NORMALIZE_MODES, ESTIMATOR_NORMALIZE], {"default": ESTIMATOR_NORMALIZE, "tooltip":
                          "per_frame: each map spans black..white, as the model was trained. per_clip: one "
                          "min/max for the whole clip, steadier brightness (use per_clip in MYV Apply Depth too). "
                          "estimator: what the loaded estimator fits best: per_clip for Video Depth Anything "
                          "(one consistent depth for the clip), per_frame for MiDaS and Depth Anything."}),
            "temporal_smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.95, "step": 0.05, "tooltip":
                                   "0 = off. Each frame becomes a weighted mean of the clip's frames, weight "
                                   "smoothing^distance (symmetric, no lag). 0.3 calms flicker; higher values "
                                   "blur fast motion."}),
        }}

    RETURN_TYPES = ("IMAGE", NATIVE_DEPTH_TYPE)
    RETURN_NAMES = ("depth", "native_depth")
    OUTPUT_TOOLTIPS = (
        "depth maps at the clip's resolution, near = bright, grey, in [0, 1]: for the samplers, previews, "
        "saving, ControlNets",
        "the same depth at the estimator's own output size (MiDaS: 384x384), before any resize: connect it "
        "to native_depth of MYV Video KSampler / MYV Long Video Sampler / MYV Apply Depth (with depth from "
        "this node too) for exactly the official depth channel (one resize to the latent size)",
    )
    FUNCTION = "estimate"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = ("Depth maps of a clip at its resolution, near = bright, grey, in [0, 1]; and the same depth "
                   "at the estimator's own size, for the official depth channel.")

    def estimate(self, estimator, images, batch_size, normalize, temporal_smoothing=0.0):
        check_images(images)
        if normalize == ESTIMATOR_NORMALIZE:
            normalize = PREFERRED_NORMALIZE[estimator.kind]
        raw, native = self.run(estimator.load(), images, batch_size)
        release_freed_memory()  # the estimator is gone: its weights and activations leave the process
        out = depth_images(raw, normalize, temporal_smoothing).to(comfy.model_management.intermediate_device())
        return out, NativeDepth(native, estimator.kind, normalize, temporal_smoothing, image=out)

    @staticmethod
    def run(patcher, images, batch_size):
        """(raw depth, native depth) of the frames, by the loaded estimator, with progress and cancel."""
        comfy.model_management.load_models_gpu([patcher])
        batch_size = frames_that_fit(patcher, images, batch_size)
        progress = comfy.utils.ProgressBar(estimate_steps(patcher.model, images.shape[0]))

        def steps_done(count):  # frames, or windows for Video Depth Anything
            for _ in range(count):
                progress.update(1)

        return estimate_depth_and_native(
            patcher.model, images, batch_size,
            before_batch=comfy.model_management.throw_exception_if_processing_interrupted, after_batch=steps_done)
