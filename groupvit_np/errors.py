"""The errors of loading a checkpoint, in one place below everything that raises them.

Every failure to load a checkpoint is a `CheckpointError` (a ValueError), whichever step failed: a Hub repo id
that cannot be resolved (`HubError`), a torch file we refuse or cannot read (`TorchPickleError`), a safetensors
file that is corrupt, or tensors that do not match their config.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing/extra keys, wrong shapes, unreadable or corrupt files."""


class HubError(CheckpointError):
    """A repo id that cannot be resolved to local files: not cached and not downloadable."""


class TorchPickleError(CheckpointError):
    """A torch file we refuse or cannot read: a global off the allow-list, a corrupt archive, lying metadata."""
