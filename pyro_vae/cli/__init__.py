"""The ``pyro-vae`` command line: ``pyro-vae COMMAND --help`` explains each command.

Every mistake a user can make ends the same way: one line ``pyro-vae COMMAND: error: <sentence>`` on stderr
and exit status 2, before any long work starts and without touching files already written. That covers
argparse's own errors (reduced to one line), :class:`~pyro_vae.errors.PyroVAEError` raised anywhere, and
file-system errors (read-only, full disk, permissions), which name the path and the cause.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path
from typing import Optional, Sequence

from pyro_vae.cli import estimators, runs
from pyro_vae.cli.common import HelpFormatter, Parser, _says, existing_run_dir, is_later_process  # noqa: F401
from pyro_vae.errors import PyroVAEError, first_line, user_frame
from pyro_vae.files import UncheckedCheckpointWarning, os_error_sentence

#: options whose value is a comma-separated list that may start with "-" (``--betas -1,2``): argparse
#: would take such a value for an option; they are glued to their option (``--betas=-1,2``) before parsing,
#: so that the value's own check says what is wrong with it
LIST_OPTIONS = ("--betas", "--sample-sizes", "--temperatures", "--hidden-dims", "--estimators")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyro-vae",
        description="Variational autoencoders written as Pyro programs: train with SVI, evaluate "
                    "(ELBO and importance-sampled log-likelihood), sample, and compare gradient estimators.",
        epilog="Run 'pyro-vae COMMAND --help' for the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    runs.add_subcommands(subparsers)
    estimators.add_subcommands(subparsers)
    return parser


def glue_list_values(argv: Sequence[str]) -> list[str]:
    """``["--betas", "-1,2"]`` -> ``["--betas=-1,2"]`` for the options in :data:`LIST_OPTIONS`."""
    argv, glued, i = list(argv), [], 0
    while i < len(argv):
        if argv[i] in LIST_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "--":
            glued.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    return glued


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, UncheckedCheckpointWarning):
        print(f"pyro-vae: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns its exit status. In a process of a distributed job (torchrun) it does not
    return: the process ends there with that status, its output flushed, without the interpreter's exit and its
    atexit handlers (:func:`pyro_vae.distributed.exit_process`)."""
    try:
        code = _main(argv)
    except BaseException:  # an error no sentence foresaw; a process of a distributed job must still end at once
        if not _in_a_job():
            raise
        traceback.print_exc()
        code = 1
    if _in_a_job():  # a process of a distributed job ends at once, with its status (not through gloo's destructors)
        sys.modules["pyro_vae.distributed"].exit_process(code)
    return code


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed: Python's MemoryError (numpy's included) or torch's allocators."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def _structure_mistake(command: str, err: Exception) -> int:
    """An error raised inside a structure file's programs (while evaluating, drawing, probing; training and the
    check at the door say theirs with more context): one sentence naming the file and line, exit 2. Any other
    error is ours, and stays a traceback."""
    where = user_frame(err)
    if where is None or _in_a_job():
        raise err
    if _says(err):
        # the file's name, not its folder: a source loaded once is one module wherever its copies lie
        print(f"pyro-vae {command}: error: the structure's own code raised {type(err).__name__} "
              f"({Path(where[0]).name}, line {where[1]}): {first_line(err)}"
              + (f"; {err.kept}" if getattr(err, "kept", None) else ""), file=sys.stderr)
    return 2


def _in_a_job() -> bool:
    distributed = sys.modules.get("pyro_vae.distributed")  # imported (with torch) only by commands that train
    return distributed is not None and distributed.joined()


def _main(argv: Optional[Sequence[str]] = None) -> int:
    argv = glue_list_values(sys.argv[1:] if argv is None else [str(a) for a in argv])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, which names the command and its --help
        commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv  # as given: train --nproc-per-node hands them on to the processes it starts
    warnings.showwarning = _one_line_warnings
    try:
        return args.handler(args)
    except PyroVAEError as err:
        # Pyro appends the trace's shapes to errors raised inside a model; the first line is the sentence.
        message = first_line(err)
        if _says(err):
            print(f"pyro-vae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:  # an allocation the estimates did not foresee: one sentence
        if not _out_of_memory(err):
            return _structure_mistake(args.command, err)
        if _says(err):
            print(f"pyro-vae {args.command}: error: ran out of memory ({first_line(err, type(err).__name__)[:200]}); choose smaller sizes, or "
                  "free memory (ulimit -v and containers count too)", file=sys.stderr)
        return 2
    except OSError as err:  # a file-system error that no check foresaw: still one sentence naming the path
        if _says(err):
            print(f"pyro-vae {args.command}: error: {os_error_sentence(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a structure file's own mistake, wherever its programs ran: one sentence
        return _structure_mistake(args.command, err)
    except KeyboardInterrupt as interrupt:  # training says what it kept and how to continue
        if _says(interrupt):
            print(f"pyro-vae {args.command}: {getattr(interrupt, 'sentence', 'interrupted; files already written are kept')}",
                  file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = _show_warning


if __name__ == "__main__":
    sys.exit(main())
