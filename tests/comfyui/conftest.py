"""In-process ComfyUI for the ComfyUI tier: CPU mode, the pack imported the way ComfyUI does it."""

import importlib.util
import sys

import pytest

from conftest import ADE, ADE_MISSING, COMFYUI, ROOT

# ComfyUI's own top-level modules (nodes.py, folder_paths.py, ...) must win over this repository's
# nodes/ package, exactly as in a real ComfyUI process.
sys.path.insert(0, str(COMFYUI))
from comfy.cli_args import args  # noqa: E402

args.cpu = True
PACK_NAME = "comfyui_makeyourvideo"


@pytest.fixture(scope="session")
def pack():
    """This repository loaded as a custom-node package (relative imports, like ComfyUI's loader)."""
    import nodes  # noqa: F401  ComfyUI's nodes.py, imported first as in main.py
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


class NodeCaller:
    """Calls V1 nodes by class key, as a graph with each required widget left at its default would."""

    def __init__(self, mappings):
        self.mappings = mappings

    def __call__(self, key, **inputs):
        """The node's first output; required inputs not given take their widget default (a combo its first entry)."""
        node = self.mappings[key]()
        for name, spec in node.INPUT_TYPES().get("required", {}).items():
            if name not in inputs:
                options = spec[1] if len(spec) > 1 else {}
                if isinstance(spec[0], list):
                    inputs[name] = options.get("default", spec[0][0])
                elif "default" in options:
                    inputs[name] = options["default"]
        return getattr(node, node.FUNCTION)(**inputs)[0]


@pytest.fixture(scope="session")
def ade(tmp_path_factory):
    """ComfyUI-AnimateDiff-Evolved (conftest.ADE) loaded in-process like a custom node: a NodeCaller over its
    NODE_CLASS_MAPPINGS. Skips where it is absent.

    It writes nothing into its own folder or the ComfyUI tree: no bytecode while it loads, and while it
    registers (and creates) its animatediff_models and animatediff_motion_lora folders, ComfyUI's
    models_dir is a temporary folder; both are restored afterwards.
    """
    if not ADE:
        pytest.skip(f"AnimateDiff-Evolved: {ADE_MISSING}")
    import nodes  # noqa: F401  ComfyUI's nodes.py, imported first as in main.py
    import folder_paths
    models_dir, no_bytecode = folder_paths.models_dir, sys.dont_write_bytecode
    folder_paths.models_dir = str(tmp_path_factory.mktemp("ade_models"))
    sys.dont_write_bytecode = True
    try:
        spec = importlib.util.spec_from_file_location("comfyui_animatediff_evolved", ADE / "__init__.py",
                                                      submodule_search_locations=[str(ADE)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        folder_paths.models_dir = models_dir
        sys.dont_write_bytecode = no_bytecode
    return NodeCaller(module.NODE_CLASS_MAPPINGS)


@pytest.fixture()
def model_dir(tmp_path, pack):
    """A temporary folder registered as the pack's 'makeyourvideo' model folder."""
    import folder_paths
    folder_paths.add_model_folder_path("makeyourvideo", str(tmp_path), is_default=True)
    yield tmp_path
    folder_paths.folder_names_and_paths["makeyourvideo"][0].remove(str(tmp_path))


@pytest.fixture()
def unthrottled_progress(monkeypatch):
    """comfy.utils.ProgressBar hands every update to the progress hook, as ComfyUI 0.3.64 does.

    ComfyUI 0.33 throttles: an update reaches the hook only if PROGRESS_THROTTLE_MIN_INTERVAL (0.1 s)
    has passed since the last one sent and it moved PROGRESS_THROTTLE_MIN_PERCENT (0.5 %) of the total;
    the first, the last (value >= total) and those with a preview always go. Both limits are module
    globals read at each update, so zero turns the throttling off. Yields whether ComfyUI throttles.
    """
    import comfy.utils
    throttles = hasattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL")
    if throttles:
        monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)
        monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_PERCENT", 0.0)
    yield throttles


@pytest.fixture()
def dynamic_vram(monkeypatch):
    """ComfyUI 0.33 on an NVIDIA GPU with native fp16/bf16, as far as loading is concerned.

    main.py sets comfy.memory_management.aimdo_enabled and makes CoreModelPatcher the dynamic
    patcher when comfy-aimdo works (the dynamic patcher itself falls back to ModelPatcher on a CPU
    load device); unet_manual_cast returns None where the GPU computes in the weight dtype.
    Skips on a ComfyUI without dynamic VRAM (comfy-aimdo).
    """
    import comfy.model_management
    import comfy.model_patcher
    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        pytest.skip("this ComfyUI has no dynamic VRAM (comfy-aimdo)")
    import comfy.memory_management
    monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", True)
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcherDynamic)
    monkeypatch.setattr(comfy.model_management, "unet_manual_cast", lambda *args, **kwargs: None)


@pytest.fixture()
def dynamic_patchers(monkeypatch):
    """CoreModelPatcher as a GPU load device gets it under dynamic VRAM, as far as cloning goes.

    ModelPatcherDynamic reroutes CPU load devices to ModelPatcher in __new__, so on the CPU this
    stand-in keeps ModelPatcher's loading and takes from ModelPatcherDynamic what the rest of ComfyUI
    sees when it clones: is_dynamic() and get_non_dynamic_delegate() (clone(disable_dynamic=True),
    which rebuilds the model through the loader's cached_patcher_init). Skips without dynamic VRAM.
    """
    import comfy.model_patcher
    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        pytest.skip("this ComfyUI has no dynamic VRAM (comfy-aimdo)")

    class DynamicOnCpu(comfy.model_patcher.ModelPatcher):
        get_non_dynamic_delegate = comfy.model_patcher.ModelPatcherDynamic.get_non_dynamic_delegate

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.non_dynamic_delegate_model = None

        def is_dynamic(self):
            return True

    return lambda: monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", DynamicOnCpu)
