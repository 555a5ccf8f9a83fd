"""What the command line's modules share: the parser that says its errors in one line, the help formatter, and
the check of a run directory a command reads. Below :mod:`pyro_vae.cli` and its command modules, so that none of
them imports the package that imports it."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pyro_vae.errors import PyroVAEError


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: ``pyro-vae train: error: ... (see pyro-vae train --help)``."""

    def error(self, message: str):
        if is_later_process():  # the first process of the job says it
            _let_the_first_speak()
            self.exit(2)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def is_later_process() -> bool:
    """Whether this process is one of a distributed job's processes after the first on its machine
    (``LOCAL_RANK`` > 0, as torchrun and ``train --nproc-per-node`` set it). It ends with status 2 without a
    word on a mistake that every process of the job meets alike (an option, the run directory, a divergence),
    which the first one says, so that the mistake is said once; it still says that it lost the others
    (:class:`pyro_vae.distributed.CollectiveFailure`), which only the processes left can say."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("LOCAL_RANK", "0")) > 0
    except ValueError:
        return False


#: seconds a later process of a job waits before it ends silently (:func:`_let_the_first_speak`)
QUIET_EXIT_SECONDS = 3.0


def _says(err: BaseException) -> bool:
    """Whether this process reports ``err`` (:func:`is_later_process`); one that does not has waited first."""
    if not is_later_process():
        return True
    distributed = sys.modules.get("pyro_vae.distributed")
    if distributed is not None and isinstance(err, distributed.CollectiveFailure):
        return True
    if not isinstance(err, KeyboardInterrupt):  # Ctrl-C: the launcher is ending every process already
        _let_the_first_speak()
    return False


def _let_the_first_speak() -> None:
    """Wait a moment before this later process ends silently on a mistake that the first process meets too: the
    launcher (torchrun's agent, or train --nproc-per-node) ends the other processes as soon as it sees one
    end, which could cut the first one's sentence by a few milliseconds; the wait costs nothing when the first one
    ends too, since the launcher then ends this one at once."""
    time.sleep(QUIET_EXIT_SECONDS)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to an option's help unless the help already says its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default" in (action.help or "") or action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def existing_run_dir(run_dir: str, option: str = "") -> Path:
    """The run directory a command reads, or one sentence: ``option`` (e.g. "--run-dir ") prefixes its name."""
    path = Path(run_dir)
    if not path.is_dir():
        why = "it is a file" if path.exists() else "no such folder"
        raise PyroVAEError(f"{option}{run_dir} is not a run directory ({why})")
    return path
