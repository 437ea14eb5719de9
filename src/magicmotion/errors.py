"""Error types. Messages name the file, object and frame; the CLI prints one line and exits 2."""


class MagicMotionError(Exception):
    """Bad input from the user: the CLI prints the message and exits with code 2."""


class TrajectoryError(MagicMotionError):
    """A trajectory spec, mask or box that is malformed or does not fit."""


class MediaError(MagicMotionError):
    """An image or video that cannot be read or written."""


class DatasetError(MagicMotionError):
    """A dataset folder, index line, annotation or clip that is missing or malformed."""


class ConfigError(MagicMotionError):
    """A config file (YAML) with an unknown key, a missing value or a missing file."""


class ModelError(MagicMotionError):
    """A checkpoint or model folder that cannot be loaded or does not fit the base model."""


class PipelineError(MagicMotionError):
    """Inputs to generation that do not fit the pipeline (size, frames, kind)."""


class TrainingError(MagicMotionError):
    """A training run that cannot go on: a non-finite loss or gradient, an output folder in use or
    already finished, no intact checkpoint to resume from."""


class OutputLocked(MagicMotionError):
    """Another run holds the lock of the output (locks.py)."""


class BenchError(MagicMotionError):
    """A benchmark set, run or metric input that is missing or inconsistent."""
