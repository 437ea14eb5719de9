"""Targeted filters for library messages that are known, harmless and printed on every command.

Only these exact messages are dropped; every other warning still prints.

- transformers: "`CLIPImageProcessor` requires torchvision (not installed); falling back to
  `CLIPImageProcessorPil`" - printed when diffusers imports the Wan pipelines. No torchvision wheel
  imports beside the CPU build of torch this project installs, and the PIL processor is what the Wan
  pipelines use either way (same resize and normalisation).
- huggingface_hub: "The `local_dir_use_symlinks` argument is deprecated" - diffusers still passes it
  when it fetches a hub id.
"""

from __future__ import annotations

import logging
import warnings

TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"
TRANSFORMERS_IMPORT_LOGGER = "transformers.utils.import_utils"


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


_installed = False


def install() -> None:
    """Add the filters (once). Cheap: imports neither transformers nor huggingface_hub."""
    global _installed
    if _installed:
        return
    _installed = True
    # transformers' get_logger is logging.getLogger, so the filter waits on the logger it will use
    logging.getLogger(TRANSFORMERS_IMPORT_LOGGER).addFilter(_DropMessage(TORCHVISION_FALLBACK))
    warnings.filterwarnings("ignore", message=r"The `local_dir_use_symlinks` argument is deprecated",
                            category=UserWarning, module=r"huggingface_hub\.")
