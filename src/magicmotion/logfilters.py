"""Targeted filters for library messages that are known, harmless and printed on every command.

Only these exact messages are dropped; every other warning still prints.

- transformers: "`CLIPImageProcessor` requires torchvision (not installed); falling back to
  `CLIPImageProcessorPil`" - printed when diffusers imports the Wan pipelines. No torchvision wheel
  imports beside the CPU build of torch this project installs, and the PIL processor is what the Wan
  pipelines use either way (same resize and normalisation).
- huggingface_hub: "The `local_dir_use_symlinks` argument is deprecated" - diffusers still passes it
  when it fetches a hub id.

`quiet_loading()` (the commands that load models call it): one progress bar per long step. diffusers'
"Loading pipeline components" and transformers' "Loading weights" bars (a second or less each, several
per model) and those libraries' informational log lines are off; downloads, denoising steps and
warnings a user can act on still show. `magicmotion ... --verbose` (`VERBOSE`) shows everything.
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
VERBOSE = False  # set by `magicmotion --verbose`: every library bar and message shows


def quiet_loading() -> None:
    """Unless VERBOSE: no model-loading progress bars, diffusers/transformers logs at error level only;
    huggingface_hub's download bars stay (a download is a long step)."""
    if VERBOSE:
        return
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # this also turns the hub's off ...
    transformers_logging.set_verbosity_error()
    enable_progress_bars()  # ... whose download bars stay


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
