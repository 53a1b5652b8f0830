"""The ``forgegrad`` command: train, eval, export, bench, quickstart, ops, compress, generate, serve, transcribe, depth.

``main(argv=None)`` returns the exit code: 0 success, 1 a runtime error, 2 a usage error (bad
arguments, unknown model or data set names, missing files), 130 interrupted. Expected errors are
printed as one line ``forgegrad: error: ...`` without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ._argtypes import positive_int
from ._errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, CLIError, UsageError

__all__ = ["main", "build_parser", "CLIError", "UsageError"]


# Every public module of this package with an ``add_parser(subparsers)`` is a subcommand (adding a
# command is adding its file); these come first in the help, the others follow by name.
_FIRST = ("train", "evaluate", "export", "compress", "bench", "quickstart", "ops")


def _command_modules():
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names = [n for n in _FIRST if n in names] + sorted(n for n in names if n not in _FIRST)
    mods = [importlib.import_module(f"{__name__}.{n}") for n in names]
    return [m for m in mods if hasattr(m, "add_parser")]


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__
    from . import compress, evaluate, export, train
    parser = argparse.ArgumentParser(prog="forgegrad", description="forgegrad: train, evaluate, export and "
                                     "benchmark models from the command line.")
    parser.add_argument("--version", action="version", version=f"forgegrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _command_modules():
        p = mod.add_parser(sub)
        if mod in (train, evaluate, export, compress):  # bench and quickstart pin threads per timed run themselves
            p.add_argument("--threads", type=positive_int, default=None,
                           help="forgegrad kernel threads (default: all cores or FORGEGRAD_NUM_THREADS)")
        if mod is train:
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help/--version exit 0
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    try:
        threads = getattr(args, "threads", None)
        if args.command in ("train", "eval", "export", "compress") and threads is not None:
            from .._runtime import set_num_threads
            set_num_threads(threads)
        args.argv = argv  # train --ranks re-runs the command line under mpiexec
        return int(args.run(args) or EXIT_OK)
    except CLIError as e:
        print(f"forgegrad: error: {e}", file=sys.stderr)
        _abort_job(e.code)
        return e.code
    except KeyboardInterrupt:
        print("forgegrad: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_RUNTIME


def _abort_job(code: int) -> None:
    """Under MPI, an error on one rank ends every rank (the others would wait in a collective)."""
    comm = sys.modules.get("forgegrad.distributed.comm")
    if comm is not None and comm.is_distributed():
        sys.stderr.flush()
        comm.abort(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
