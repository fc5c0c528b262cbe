"""Output files that are complete or absent: every file is written under a temporary name next to its target and
renamed onto it when complete, so a run stopped at any moment (a signal, ``kill -9``, a full disk) never leaves a
partial file under a final name. Also: outputs never overwrite an input (by file identity, whatever the path),
a check that a directory takes new files, the removal of temporary files a killed run left behind, and an
exclusive lock on an output directory (two runs writing one directory would undo each other's work).

Files get the mode ``open(path, "w")`` would give them: an existing file keeps its own, a new one 0o666 less the
umask (tempfile.mkstemp would give 0o600). A symlink at the target is followed, not replaced.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Mapping, Sequence

TEMP_SUFFIX = ".part"
# write_atomic's temporary names: "." + the target's name + "." + 12 hex digits + ".part"
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX) + "$")


class OutputError(OSError):
    """An output that cannot be written (the message names it and says why)."""


def oserror_text(e: OSError) -> str:
    return e.strerror or str(e)


def link_target(path: Path) -> Path:
    """Where writing to path lands: a symlink's (final) target, else path itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _new_file_mode(path: Path) -> int | None:
    """The permission bits open(path, "w") would leave: an existing file keeps its own; None for a new file
    (os.open(..., 0o666) then applies the umask, as open() does)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None


def temp_name(directory: Path, prefix: str, suffix: str = "") -> Path:
    """A random name for a temporary file, chosen before the file exists so that whatever stops its
    creation half-way (a signal) still finds it to remove it."""
    return directory / f"{prefix}{secrets.token_hex(6)}{suffix}"


def open_new(path: Path) -> int:
    """Create path (never an existing file) with mode 0o666 less the umask, what open(..., "w") gives."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to a temporary file next to path's target (a symlink at path is followed, not replaced)
    and rename it there when complete. The file gets the mode open(path, "w") would give it."""
    target = link_target(path)
    mode = _new_file_mode(target)
    tmp = temp_name(target.parent, f".{target.name}.", TEMP_SUFFIX)
    try:
        with os.fdopen(open_new(tmp), "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except FileExistsError:  # the random name was taken: not ours to remove
        raise
    except BaseException:
        unlink_quietly(tmp)
        raise


def write_if_changed(path: Path, data: bytes) -> bool:
    """write_atomic unless the file already holds exactly these bytes (its mtime then stays); True if written."""
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_atomic(path, data)
    return True


def remove_stale_temps(directory: Path) -> int:
    """Remove the temporary files write_atomic left in directory when its process was killed (kill -9 runs no
    clean-up); only names of write_atomic's pattern. Call it only while holding the directory's lock. Returns
    how many were removed."""
    n = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for e in entries:
        if _TEMP_RE.match(e.name) and e.is_file(follow_symlinks=False):
            unlink_quietly(Path(e.path))
            n += 1
    return n


def check_writable_dir(d: Path, what: str) -> None:
    """OutputError unless d is a directory where a new file can be created (a real attempt: os.access ignores
    read-only mounts and is always true for root)."""
    if not d.exists():
        raise OutputError(f"{what} {d}: directory does not exist")
    if not d.is_dir():
        raise OutputError(f"{what} {d}: not a directory")
    tmp = temp_name(d, ".tilepass-write-test.")
    try:
        os.close(open_new(tmp))
    except OSError as e:
        raise OutputError(f"{what} {d}: cannot write there ({oserror_text(e)})") from None
    finally:
        unlink_quietly(tmp)


class DirectoryLock:
    """An exclusive flock on a directory, held while a run writes there; the kernel drops it when the process
    ends, however it ends (kill -9 included), so it is never stale. OutputError if another process holds it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{self.directory}: another tilepass-cli run is writing to this directory; "
                                  "wait for it to finish") from None
            raise OutputError(f"{self.directory}: cannot lock the directory ({oserror_text(e)})") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---- outputs never overwrite inputs ----------------------------------------------------------------------
FileId = tuple[int, int]  # (st_dev, st_ino): the same file whatever the path, symlink or hard link


def file_id(path: str | os.PathLike[str]) -> FileId | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def input_ids(labelled: Sequence[tuple[str, str]]) -> dict[FileId, str]:
    """{file id: "--image page.png"} for each input (option, path) that exists."""
    out: dict[FileId, str] = {}
    for option, path in labelled:
        fid = file_id(path)
        if fid is not None:
            out.setdefault(fid, f"{option} {path}")
    return out


class OverwriteRefused(OSError):
    """An output that is one of the inputs (found while writing: the crops of images/)."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{path} is the same file as the input {what}; not overwriting it")
        self.filename = str(path)
        self.strerror = f"it is the same file as the input {what}; not overwriting it"


def refuse_input(path: Path, inputs: Mapping[FileId, str]) -> None:
    fid = file_id(path)
    if fid is not None and fid in inputs:
        raise OverwriteRefused(path, inputs[fid])


__all__ = ["DirectoryLock", "FileId", "OutputError", "OverwriteRefused", "check_writable_dir", "file_id",
           "input_ids", "link_target", "open_new", "oserror_text", "refuse_input", "remove_stale_temps",
           "temp_name", "unlink_quietly", "write_atomic", "write_if_changed"]
