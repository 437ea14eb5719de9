"""MagicMotion: trajectory-controlled image-to-video generation with dense-to-sparse guidance."""

__version__ = "0.1.0"

from . import logfilters

logfilters.install()
