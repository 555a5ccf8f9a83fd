"""The ``pyro-vae`` command line: ``pyro-vae COMMAND --help`` explains each command."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pyro_vae.errors import PyroVAEError


def build_parser() -> argparse.ArgumentParser:
    from pyro_vae.cli import estimators, runs

    parser = argparse.ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders written as Pyro programs: train with SVI, evaluate "
                    "(ELBO and importance-sampled log-likelihood), sample, and compare gradient estimators.",
        epilog="Run 'pyro-vae COMMAND --help' for the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runs.add_subcommands(subparsers)
    estimators.add_subcommands(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except PyroVAEError as err:
        # Pyro appends the trace's shapes to errors raised inside a model; the first line is the sentence.
        message = str(err).strip().splitlines()[0]
        print(f"pyro-vae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyro-vae {args.command}: interrupted; the last completed epoch's checkpoint is kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
