"""Atomic file writes shared by checkpoints (``forgegrad.save``), ``forgegrad train``'s model.json and
ONNX export.

``atomic_write(path, write)`` writes to a temporary file beside the target, fsyncs it, renames it over
the target and fsyncs the directory, so a reader sees the old file or the new one, never a torn one.
On top of that:

* The result has the permissions a plain ``open(path, "wb")`` would give: an existing target keeps
  its mode; a new file gets ``0o666`` less the umask (not ``mkstemp``'s ``0o600``).
* A symlink is written through: the link's target is replaced and the link is kept.
* Temporary files are named ``.<name>.forgegrad-tmp.<pid>.<random>``. Any exception removes ours;
  a process killed mid-save (SIGKILL, power loss) cannot, so the next save to the same target removes
  leftovers of that pattern whose writing process no longer exists on this machine. A temp file
  of a live process (a concurrent save) is left alone.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "TMP_TAG"]

TMP_TAG = "forgegrad-tmp"


def _tmp_name(base: str) -> str:
    return f".{base}.{TMP_TAG}.{os.getpid()}.{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def remove_stale_temps(target: str) -> None:
    """Delete temp files of our own pattern for ``target`` left by processes that no longer exist."""
    directory, base = os.path.split(target)
    pattern = re.compile(r"\." + re.escape(base) + r"\." + re.escape(TMP_TAG) + r"\.(\d+)\.[0-9a-f]{8}")
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:  # raced with another cleaner, or not ours to delete: harmless
                pass


def _fsync_dir(directory: str) -> None:
    """Make the rename durable. Some filesystems/OSes cannot open a directory; that is not fatal."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[BinaryIO], None], who: str = "") -> str:
    """Call ``write(f)`` on a binary temp file, then rename it over ``path`` (through a symlink).

    Returns the path actually replaced (the symlink's target when ``path`` is a link). The
    destination directory must exist (FileNotFoundError otherwise). Nothing is left behind when
    ``write`` or any later step raises, including KeyboardInterrupt. ``who`` prefixes error messages.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)  # write through symlinks rather than replacing the link
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{who + ': ' if who else ''}directory {directory!r} does not exist")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None  # a new file: os.open's 0o666 less the umask, as open(path, "wb") would give
    remove_stale_temps(target)
    tmp = os.path.join(directory, _tmp_name(os.path.basename(target)))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1  # owned by f now
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written temp file
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return target
