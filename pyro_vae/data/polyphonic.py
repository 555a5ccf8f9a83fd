"""Polyphonic music as sequences: the pickles of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012), that is JSB
chorales, Piano-midi.de, MuseData and Nottingham, as Pyro's ``examples/dmm.py`` reads them
(``pyro.contrib.examples.polyphonic_data_loader``).

Such a file is a pickled dict with the keys ``train``, ``valid`` and ``test``, each a list of sequences, each a list
of time steps, each a list, tuple or set of the MIDI note numbers sounding then, 21 to 108 (the piano's 88 keys).
:func:`load_polyphonic` reads one into a sequence data set of 88 binary features per step (feature ``note - 21``
on), T the longest sequence of the three splits, the lengths in ``Split.labels``, the steps after each end zeros.

Pickle can run code while it reads. The reader here takes only what this format holds (containers and numbers) and
refuses any class a file names, before building it; even so, open only files you trust.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.types import Dataset, Split
from pyro_vae.errors import InvalidDataError


LOWEST_NOTE, HIGHEST_NOTE = 21, 108
NUM_NOTES = HIGHEST_NOTE - LOWEST_NOTE + 1
SPLITS = ("train", "valid", "test")
SUFFIXES = (".pickle", ".pkl")
#: the only classes a polyphonic-music pickle may name (sets of notes, pickled by Python 2 or 3)
PLAIN_CLASSES = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("__builtin__", "frozenset")}


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler of containers and numbers: any other class a file names is refused, never imported."""

    def find_class(self, module: str, name: str):
        if (module, name) in PLAIN_CLASSES:
            return {"set": set, "frozenset": frozenset}[name]
        raise InvalidDataError(f"the pickle {self.path} names the class {module}.{name}; a polyphonic-music file holds "
                               "only lists of MIDI note numbers, and other classes are not read")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as file:
            unpickler = _PlainUnpickler(file, encoding="latin1")  # Python 2's pickles, as the original files are
            unpickler.path = path
            return unpickler.load()
    except InvalidDataError:  # a class refused (a ValueError too)
        raise
    except OSError as err:
        raise InvalidDataError(f"cannot read {path}: {err.strerror or err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise InvalidDataError(f"cannot read {path}: it is not a pickle ({err})") from None


def _piano_roll(sequences, num_steps: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T * 88) float32 binary steps and (N,) int64 lengths of a list of sequences of lists of notes."""
    roll = np.zeros((len(sequences), num_steps, NUM_NOTES), dtype=np.float32)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for n, sequence in enumerate(sequences):
        lengths[n] = len(sequence)
        for t, notes in enumerate(sequence):
            for note in _notes(notes, f"{where}, sequence {n}, step {t}"):
                roll[n, t, note - LOWEST_NOTE] = 1
    return torch.from_numpy(roll.reshape(len(sequences), -1)), torch.from_numpy(lengths)


def _notes(notes, where: str) -> list:
    if not isinstance(notes, (list, tuple, set, frozenset)):
        raise InvalidDataError(f"{where}: a {type(notes).__name__} where the MIDI notes of a step (a list) belong")
    for note in notes:
        if isinstance(note, bool) or not isinstance(note, (int, float)) or note != int(note) or \
                not LOWEST_NOTE <= note <= HIGHEST_NOTE:
            raise InvalidDataError(f"{where}: the note {note!r} is not one of the piano's MIDI notes "
                                   f"{LOWEST_NOTE} to {HIGHEST_NOTE}")
    return [int(note) for note in notes]


def load_polyphonic(path: str | Path) -> Dataset:
    """The polyphonic-music pickle at ``path`` as a sequence data set (see the module docstring)."""
    path = Path(path)
    content = _unpickle(path)
    if not isinstance(content, dict) or not all(isinstance(content.get(name), list) for name in SPLITS):
        what = f"a dict with the keys {', '.join(map(str, content))}" if isinstance(content, dict) else \
            f"a {type(content).__name__}"
        raise InvalidDataError(f"{path} holds {what}; a polyphonic-music pickle is a dict of train, valid and test "
                               "lists of sequences")
    for name in SPLITS:
        where = f"{path.name} [{name}]"
        if not content[name]:
            raise InvalidDataError(f"the {name} split of {path.name} is empty")
        for n, sequence in enumerate(content[name]):
            if not isinstance(sequence, (list, tuple)) or not sequence:
                raise InvalidDataError(f"{where}, sequence {n}: expected a non-empty list of time steps, got "
                                       f"{sequence!r:.60}")
    num_steps = max(len(sequence) for name in SPLITS for sequence in content[name])
    splits = [Split(*_piano_roll(content[name], num_steps, f"{path.name} [{name}]")) for name in SPLITS]
    lengths = torch.cat([split.labels for split in splits])
    sizes = " / ".join(str(len(split)) for split in splits)
    description = (f"{path.name}: {sizes} train / valid / test sequences of up to {num_steps} steps of {NUM_NOTES} "
                   f"notes (MIDI {LOWEST_NOTE} to {HIGHEST_NOTE}), lengths {lengths.min().item()} to "
                   f"{lengths.max().item()}, polyphonic music in the format of Boulanger-Lewandowski et al. 2012, read "
                   "with pickle (classes refused; open only files you trust)")
    return Dataset(str(path), *splits, image_shape=(num_steps, NUM_NOTES), description=description, kind="sequences")
