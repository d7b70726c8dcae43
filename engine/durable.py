"""Files the engine writes: durable, atomic, and never through someone else's symlink.

* ``create_exclusive(path, mode)``: a new file opened for writing with
  ``O_CREAT | O_EXCL | O_NOFOLLOW``: it fails rather than write through a
  symlink or into a file that is already there; its mode is set explicitly
  (not left to the umask).
* ``publish(tmp, final)``: make a complete, fsynced file appear under its final
  name atomically (rename) and durably (fsync of the directory).
* ``fsync_dir(path)``: make a directory's entries durable.
* ``private_dir(path, label)``: a directory only this user can use (0700),
  created if missing; a symlink or another user's directory is refused.
* ``check_not_shared(path, label)``: refuse a directory other users may write
  into, unless it is ours and sticky (like /tmp): another user could plant a
  symlink where we are about to write.

Errors are ``ConnectorError``/``CheckpointError`` raised by the callers, or
``ConfigError`` here for a directory that must not be used, naming the path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.errors import ConfigError

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_exclusive(path: Path, mode: int = 0o600) -> int:
    """A file descriptor of a new file at ``path`` (see the module docstring)."""
    fd = os.open(path, _FLAGS, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (a directory) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Atomically make the complete file ``tmp`` appear as ``final``, durably.

    ``tmp`` must be in the same directory as ``final``; its data must already be
    fsynced. A rename replaces a symlink at ``final``; it never writes through one.
    """
    os.replace(tmp, final)
    fsync_dir(final.parent)


def private_dir(path: Path, label: str) -> None:
    """``path`` as a directory only this user can use (mode 0700, created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{label}: {path} is not a directory (a symlink?); refusing to use it")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{label}: {path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def check_not_shared(path: Path, label: str) -> None:
    """Refuse ``path`` if other users may write into it, unless it is ours and sticky."""
    st = os.stat(path)
    if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return
    if st.st_uid == os.geteuid() and st.st_mode & stat.S_ISVTX:
        return
    raise ConfigError(
        f"{label}: {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}, owner "
        f"uid {st.st_uid}): one of them could plant a file or symlink where this sink writes; "
        "use a directory only you can write to (or one of yours with the sticky bit set)"
    )
