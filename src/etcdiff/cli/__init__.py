"""The ``etcdiff`` command line: one module per subcommand, each with ``register(subparsers)``.

Every user mistake ends in one line on stderr that names the problem and the fix, exit status 2 (argparse's
usage errors too); an unexpected failure is one line with exit status 1 (``ETCDIFF_DEBUG=1`` shows the
traceback). Subcommand modules import torch and diffusers only when they run, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from . import bench, calibrate, demo, generate
from .common import CLIError

#: Subcommand modules; each defines ``register(subparsers)`` and sets ``func`` on its parser.
COMMANDS = [demo, generate, calibrate, bench]

#: exceptions that mean the input was wrong (the message says what and how to fix it)
USER_ERRORS = (CLIError, ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, NotImplementedError, ImportError)

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .._package import __version__

    parser = argparse.ArgumentParser(
        prog="etcdiff",
        description="Faster diffusion sampling without training: ETC and its peers on diffusers pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"etcdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A warning as one line of its own, above any progress bar that is drawing (not glued to its end)."""
    from tqdm import tqdm

    tqdm.write(f"etcdiff: warning: {message}", file=file or sys.stderr)


def _message(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(msg).split()) or type(e).__name__


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing after the reader closed the pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # not transformers' notes on image processors we never use
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("ETCDIFF_DEBUG") == "1"
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning  # warnings read as messages, without source lines
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"etcdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `etcdiff calibrate | head -1`: the reader left; nothing more to say to anyone
        _quiet_stdout()
        return 141  # as a shell reports a command ended by SIGPIPE
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"etcdiff {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a newcomer gets one line; ETCDIFF_DEBUG=1 gives the traceback
        if debug:
            raise
        print(f"etcdiff {args.command}: error: {type(e).__name__}: {_message(e)} "
              "(this looks like a bug in etcdiff or the model; rerun with ETCDIFF_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
