"""Exceptions raised by lfp_mech. Each message names the problem and the fix."""


class LfpMechError(Exception):
    """Base class of every error lfp_mech raises on purpose."""


class UnknownModelError(LfpMechError, ValueError):
    """A model name that is neither registered nor a local HF checkpoint directory."""


class HubUnavailableError(LfpMechError, RuntimeError):
    """A model or dataset needs the Hugging Face hub, which cannot be reached."""


class MissingPackageError(LfpMechError, ImportError):
    """An optional package that ships data or weights is not installed."""


class ConfigError(LfpMechError, ValueError):
    """A configuration value is invalid (unknown key, out of range, inconsistent)."""


class UnsupportedModelError(LfpMechError, ValueError):
    """A model whose architecture TransformerLens cannot convert (so no stage can hook it)."""


class NotARunError(LfpMechError, FileNotFoundError):
    """A folder given as a run directory that holds no ``manifest.json``."""
