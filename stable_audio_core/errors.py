"""Typed errors: every message names the thing that is wrong and what to do about it."""


class StableAudioError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(StableAudioError):
    """A model config is malformed, names an unknown type, or has unknown keys."""


class CheckpointError(StableAudioError):
    """A checkpoint does not match the model built from its config (keys or shapes)."""


class InputError(StableAudioError, ValueError):
    """A user-supplied argument is out of range or of the wrong kind."""


class AudioFileError(StableAudioError):
    """An audio file cannot be read, or is not audio."""


class NonFiniteError(StableAudioError, FloatingPointError):
    """NaN or Inf appeared in a tensor at a named stage of the pipeline."""


class OutputFileError(StableAudioError):
    """An output file cannot be written: its name is taken, its folder is not writable, the disk is full."""
