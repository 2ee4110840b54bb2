"""Stable Audio for ComfyUI: drop this folder into ComfyUI/custom_nodes/.

ComfyUI reads the two mappings below. Nothing here imports ComfyUI; `set_host` lets another host
(stable_audio_host, which runs workflows without ComfyUI) supply progress, interruption and folders.
"""

from .stable_audio_core.acceleration import request_huge_pages

request_huge_pages()  # before any large tensor: torch reads the setting once

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes.hooks import set_host  # noqa: E402

WEB_DIRECTORY = "./nodes/web"  # a frontend extension: the audio player on our Save Audio node

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "set_host"]
