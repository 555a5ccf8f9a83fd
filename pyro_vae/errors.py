"""Errors a user can cause. The command line prints their message as one sentence and exits non-zero."""
from __future__ import annotations


class PyroVAEError(Exception):
    """Base class for every error whose message is meant for the user."""


class InvalidDataError(PyroVAEError, ValueError):
    """Data of the wrong shape, with NaN/Inf, or not binary where a Bernoulli likelihood needs it."""


class CheckpointError(PyroVAEError):
    """A checkpoint that is missing, corrupt, or does not match the run it is resumed into."""


class TrainingDiverged(PyroVAEError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def first_line(err: BaseException, default: str = "(no message)") -> str:
    """The first line of an error's message, for a sentence (Pyro appends trace shapes on later lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else default


#: the prefix of the module names that structure files are executed as (pyro_vae.models)
USER_MODULE_PREFIX = "pyro_vae_user_"


def user_frame(err: BaseException) -> tuple[str, int] | None:
    """(file, line) of the innermost frame of ``err`` that runs in a structure file's module, or None when the
    error did not pass through a structure file: what lets the command line say a structure's own mistake, made
    anywhere (evaluating, drawing, probing), as one sentence instead of a traceback."""
    return _innermost_user_frame(err)


def _innermost_user_frame(err: BaseException, file: str | None = None) -> tuple[str, int] | None:
    """(file, line) of the innermost frame of ``err`` compiled from ``file`` or running in the module a structure
    file was executed as, or None."""
    tb, found = err.__traceback__, None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == file or frame.f_globals.get("__name__", "").startswith(USER_MODULE_PREFIX):
            found = (frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def user_line(err: BaseException, file: str) -> str:
    """" (line N)" of the innermost frame of ``err`` in the user's ``file`` (a structure file), or "": a frame compiled
    from ``file``, or running in the module a structure file was executed as (which keeps the path it was first
    loaded from, when the same source comes again from another folder)."""
    found = _innermost_user_frame(err, file)
    return "" if found is None else f" (line {found[1]})"
