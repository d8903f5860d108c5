"""ComfyUI glue: thin nodes that adapt ComfyUI types to myv_core calls."""

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
