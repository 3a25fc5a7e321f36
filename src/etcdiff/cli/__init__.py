"""The ``etcdiff`` command line: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import bench, calibrate, demo, generate

#: Subcommand modules; each defines ``register(subparsers)`` and sets ``func`` on its parser.
COMMANDS = [demo, generate, calibrate, bench]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="etcdiff",
        description="Faster diffusion sampling without training: ETC and its peers on diffusers pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"etcdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"etcdiff {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"etcdiff {args.command}: interrupted", file=sys.stderr)
        return 130
