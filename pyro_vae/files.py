"""The files of a run: atomic writes, checksummed checkpoints, the run directory's lock, and file-system
errors as one sentence.

* Every file is written through a temporary file in the same folder and renamed over the old one, so a
  crash, a full disk or a ``kill -9`` leaves either the old file or the new one, never half of one; the
  temporary file is removed when the write fails.
* A checkpoint is a header line ``pyro-vae checkpoint sha256 <hex digest> <length>`` followed by the bytes
  of ``torch.save``. Loading recomputes the SHA-256 of those bytes, so damage anywhere in them (a flipped
  byte, a truncated copy) is refused with one sentence instead of resuming from garbage. Checkpoints
  written before the header existed (plain ``torch.save`` files) are still read, with a warning.
* A run directory is locked (``flock`` on the directory itself, so read-only runs can be locked too)
  while a process trains, resumes, evaluates or samples in it. The kernel drops the lock when the process
  ends, however it ends, so a crashed run never leaves a stale lock.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Callable, Iterator

from pyro_vae.errors import CheckpointError, PyroVAEError

CHECKSUM_HEADER = b"pyro-vae checkpoint sha256 "
#: the longest header line: the prefix, 64 hex digits, a space, a length and a newline
MAX_HEADER = len(CHECKSUM_HEADER) + 64 + 1 + 20 + 1


class RunDirectoryBusy(PyroVAEError):
    """Another process holds the lock of a run directory."""


class FileSystemError(PyroVAEError):
    """An ``OSError`` at the boundary (read-only, no space, not a directory, permission), as one sentence."""


class UncheckedCheckpointWarning(UserWarning):
    """A checkpoint written before checksums existed: read, but damage to it cannot be detected."""


def os_error_sentence(err: OSError, action: str = "use", path: str | os.PathLike | None = None) -> str:
    """E.g. "cannot write runs/a/checkpoint.pt: no space left on device"."""
    where = path if path is not None else (err.filename if err.filename is not None else "a file")
    cause = (err.strerror or str(err) or type(err).__name__).rstrip(".")
    return f"cannot {action} {where}: {cause[:1].lower()}{cause[1:]}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure of any kind removes the temporary file and leaves ``path`` as it was; an ``OSError`` becomes
    a :class:`FileSystemError` that names ``path`` and the cause.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise FileSystemError(os_error_sentence(err, "write", path)) from None
        raise


def write_bytes(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``sync`` also flushes it to the disk before the rename."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(data, path: Path) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    """The JSON in ``path``; a file that cannot be read, or is not JSON, is one sentence naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FileSystemError(os_error_sentence(err, "read", path)) from None
    try:
        return json.loads(data.decode())
    except ValueError as err:
        raise PyroVAEError(f"{path} is not valid JSON ({err}); it was damaged or written by something else") from None


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows of plain values as CSV; the columns are every key in order of first appearance."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def save_checkpoint(data: dict, path: Path) -> None:
    """``torch.save(data)`` behind a header with the SHA-256 of its bytes, written atomically and synced."""
    import torch

    buffer = io.BytesIO()
    torch.save(data, buffer)
    payload = buffer.getvalue()
    header = CHECKSUM_HEADER + hashlib.sha256(payload).hexdigest().encode() + b" %d\n" % len(payload)
    write_bytes(path, header + payload, sync=True)


def read_checkpoint_payload(path: Path) -> bytes:
    """The ``torch.save`` bytes of a checkpoint after checking them against their checksum."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise CheckpointError(os_error_sentence(err, "read the checkpoint", path)) from None
    if not raw.startswith(CHECKSUM_HEADER):
        if raw.startswith(b"PK\x03\x04"):  # a zip archive: torch.save without our header
            warnings.warn(f"the checkpoint {path} has no checksum (written by an older pyro-vae); it is read, "
                          "but damage to it cannot be detected", UncheckedCheckpointWarning, stacklevel=3)
            return raw
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint (no checksum header); it is damaged or "
                              "another kind of file")
    end = raw.find(b"\n", 0, MAX_HEADER)
    fields = raw[len(CHECKSUM_HEADER):end].split(b" ") if end > 0 else []
    if len(fields) != 2 or len(fields[0]) != 64 or not fields[1].isdigit():
        raise CheckpointError(f"the checkpoint {path} is damaged: its checksum header cannot be read")
    digest, length = fields[0].decode("ascii", "replace"), int(fields[1])
    payload = raw[end + 1:]
    if len(payload) != length:
        raise CheckpointError(f"the checkpoint {path} is damaged: it holds {len(payload)} bytes after its header "
                              f"where {length} were written (truncated or appended to)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"the checkpoint {path} is damaged: its bytes do not match the SHA-256 checksum "
                              "written with them; restore it from a copy or start a new run")
    return payload


def load_checkpoint_file(path: Path) -> object:
    """The object saved by :func:`save_checkpoint` (tensors and plain data only: ``weights_only=True``)."""
    import torch

    payload = read_checkpoint_payload(path)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError, KeyError) as err:
        raise CheckpointError(f"the checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None


# -- the run directory's lock ------------------------------------------------------------------------------

_held: dict[str, list] = {}  # real path -> [file descriptor, depth]: the lock is re-entrant within a process


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of the existing directory ``run_dir``; another process that asks for it gets
    :class:`RunDirectoryBusy` at once. Re-entrant: the same process may nest it (``train`` holds it for the
    whole command, ``Trainer.fit`` again for its epochs)."""
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise FileSystemError(os_error_sentence(err, "open the run directory", run_dir)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirectoryBusy(f"another pyro-vae process is training, evaluating or sampling in {run_dir}; "
                                   "wait for it to finish, or use another run directory") from None
        raise FileSystemError(os_error_sentence(err, "lock the run directory", run_dir)) from None
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            os.close(fd)  # closing the descriptor drops the lock


# -- checks before any work -------------------------------------------------------------------------------

def check_can_create_dir(path: str | os.PathLike, option: str) -> None:
    """Refuse, with one sentence, a directory that cannot be created or written: ``path`` names a file, or
    its nearest existing ancestor is not a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileSystemError(f"{option} {path} is a file, not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FileSystemError(f"cannot create {option} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileSystemError(f"cannot write into {existing} for {option} {path}: "
                              f"{_why_not_writable(existing)}")


def check_can_write_file(path: str | os.PathLike, option: str) -> None:
    """Refuse a file that cannot be written: its folder is missing or read-only, or it is a directory."""
    path = Path(path)
    if path.is_dir():
        raise FileSystemError(f"{option} {path} is a directory; name a file")
    folder = path.parent
    if not folder.is_dir():
        raise FileSystemError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise FileSystemError(f"cannot write {path}: {_why_not_writable(folder)}")


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def remove_if_empty(path: Path) -> None:
    """Remove ``path`` if it is an empty directory (what a run that failed before its first epoch leaves)."""
    with contextlib.suppress(OSError):
        path.rmdir()


def make_dir(path: Path, option: str) -> None:
    """Create the folder ``path`` (and its parents); one sentence naming it where that fails."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileSystemError(os_error_sentence(err, f"create {option}", path)) from None


@contextlib.contextmanager
def locked_run_dir(path: str | os.PathLike, option: str = "the run directory") -> Iterator[Path]:
    """Create the run directory ``path`` if needed and hold its lock (:func:`run_lock`) inside the block.

    Refuses, with one sentence, a directory that cannot be created; a directory this call created and that
    is still empty when the block ends (a run that failed before its first checkpoint) is removed again.
    """
    path = Path(path)
    check_can_create_dir(path, option)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileSystemError(os_error_sentence(err, f"create {option}", path)) from None
    try:
        with run_lock(path):
            yield path
    finally:
        if created:
            remove_if_empty(path)
