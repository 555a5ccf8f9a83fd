"""Errors a user can cause. The command line prints their message as one sentence and exits non-zero."""


class PyroVAEError(Exception):
    """Base class for every error whose message is meant for the user."""


class InvalidDataError(PyroVAEError, ValueError):
    """Data of the wrong shape, with NaN/Inf, or not binary where a Bernoulli likelihood needs it."""


class CheckpointError(PyroVAEError):
    """A checkpoint that is missing, corrupt, or does not match the run it is resumed into."""


class TrainingDiverged(PyroVAEError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
