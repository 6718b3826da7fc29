"""The ``--out`` folder: what may be replaced, who may write it, and what a dead build left.

A build writes into a staging folder beside ``--out`` (``.<name>.tmp-*``, holding ``bundle/``,
``scratch/`` and the owner's pid) and renames ``bundle/`` into place at the end. An exclusive
``flock`` on ``.<name>.lock`` beside ``--out`` is held for the whole build, so two builds into one
folder cannot interleave; while holding it, staging folders whose owner process is gone (a build
killed by SIGKILL or the OOM killer) are removed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekit.errors import DiskFullError, OutputBusyError, OutputExistsError, OutputLocationError

OWNER_FILE = "owner.json"
_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_bundle(folder: Path) -> bool:
    """An edgekit bundle is a folder whose manifest.json is JSON with "schema" and an "artifacts" list."""
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "schema" in data and isinstance(data.get("artifacts"), list)


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that a build must not replace, before any work."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputExistsError(f"{out} exists and is not a folder", "choose another --out; edgekit never replaces files")
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise OutputExistsError(f"--out {out} is the current folder or one of its parents",
                                "choose a new folder, e.g. --out dist/NAME")
    if not out.exists():
        return
    if not force:
        raise OutputExistsError(f"{out} already exists", "pass --force to replace it, or choose another --out")
    if not is_bundle(out):
        raise OutputExistsError(f"{out} is not an edgekit bundle (no manifest.json with 'schema' and 'artifacts')",
                                "--force only replaces a bundle edgekit wrote; choose another --out")


def _owner_alive(staging: Path) -> bool:
    try:
        owner = json.loads((staging / OWNER_FILE).read_text(encoding="utf-8"))
        pid, started = int(owner["pid"]), owner.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable: only a build that died while creating it writes none
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) == started  # a reused pid is not the owner


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def remove_stale(out: Path) -> list[Path]:
    """Remove the staging folders of ``out`` whose owner is gone; call with the lock held."""
    removed = []
    for staging in out.parent.glob(f".{out.name}.tmp-*"):
        if staging.is_dir() and not staging.is_symlink() and not _owner_alive(staging):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def make_staging(out: Path) -> Path:
    """A fresh staging folder beside ``out`` with ``bundle/``, ``scratch/`` and the owner's pid."""
    # absolute: converters run with their own working folder inside it
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent.resolve()))
    owner = {"pid": os.getpid(), "started": _start_time(os.getpid())}
    try:
        (staging / OWNER_FILE).write_text(json.dumps(owner) + "\n", encoding="utf-8")
        (staging / "bundle").mkdir()
        (staging / "scratch").mkdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for the block; refuse at once if another build holds it.

    The lock file is removed on release; a waiter that locked the removed file notices (its
    inode is no longer the one at the path) and retries, so removal cannot let two builds in.
    """
    path = _lock_path(out)
    while True:
        fd = _open_lock(path, out)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputBusyError(f"another edgekit build (pid {holder}) is writing {out}",
                                  "wait for it to finish, or choose another --out") from None
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # only for the refusal message; a full disk is reported later
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _open_lock(path: Path, out: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise location_error(exc, out) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def prepare_parent(out: Path) -> None:
    """Create ``out``'s parent; a read-only or unwritable one is refused in one line."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise location_error(exc, out) from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        read_only = os.statvfs(out.parent).f_flag & os.ST_RDONLY
        raise OutputLocationError(f"cannot write in {out.parent} ({'read-only file system' if read_only else 'permission denied'})",
                                  "choose an --out in a folder you can write")


def location_error(exc: OSError, out: Path) -> OutputLocationError:
    """The one-line error for an OSError met while writing beside ``out``."""
    if exc.errno in _FULL:
        return disk_full(out)
    reason = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}.get(exc.errno, exc.strerror or str(exc))
    return OutputLocationError(f"cannot write in {out.parent} ({reason})", "choose an --out in a folder you can write")


def disk_full(out: Path) -> DiskFullError:
    """The one-line error for a full disk (or quota) under ``out``'s parent."""
    where = out.parent.resolve()
    mount = where
    while not mount.is_mount() and mount != mount.parent:
        mount = mount.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = 0
    return DiskFullError(f"the disk holding {where} (mounted at {mount}) is full: {free // 1024} KiB free",
                         "free some space or choose an --out on another disk; no earlier bundle was touched")


def is_disk_full(exc: BaseException, staging: Path) -> bool:
    """Whether ``exc`` comes from a full disk: an ENOSPC/EDQUOT OSError anywhere in its chain, or
    any failure while the staging disk has (almost) no space left, which converters running in a
    child process or C++ report only as a generic failure."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(staging).free < 64 * 1024
    except OSError:
        return False
