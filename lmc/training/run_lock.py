"""One run, one trainer: an exclusive lock per run directory.

The lock is a file created with O_CREAT | O_EXCL that holds its owner's pid, host and a
random token. Exclusive creation is atomic on local file systems and on NFS (v3 and
later), and the file says who holds the lock; flock() is not shared between hosts on
every shared file system (NFS mounted with `nolock`, Lustre without `flock`, many FUSE
file systems) and there it fails silently: two hosts would both train. The price is
that a lock of a killed process stays behind; it is taken over when its pid no longer
runs on this host (a lock held on another host can only be waited for).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

LOCK_NAME = ".lock"  # in a run directory while a process trains it
POLL_SECONDS = 1.0  # how often a waiting process looks at the lock again
REPORT_SECONDS = 60.0  # how often it says that it is still waiting

_held: dict[Path, tuple[str, int]] = {}  # lock path -> (token, depth) held by this process
_held_guard = threading.Lock()


def _host() -> str:
    return socket.gethostname()


def _read_lock(path: Path) -> dict | None:
    """The holder recorded in a lock file; {} if it is unreadable, None if it is gone."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_stale(path: Path, holder: dict) -> bool:
    """Whether the holder of a lock is known to be gone."""
    if not holder:  # unreadable: its writer died between creating and writing it
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > 30
        return False
    if holder.get("host") != _host() or not isinstance(holder.get("pid"), int):
        return False  # another host: its processes cannot be seen from here
    if holder["pid"] == os.getpid():  # this pid, but not a lock this process holds: a
        with _held_guard:             # process before a restart (e.g. of a container)
            return all(token != holder.get("token") for token, _ in _held.values())
    return not _pid_running(holder["pid"])


def _take_over(path: Path, holder: dict) -> bool:
    """Remove a stale lock, racing other processes that found it stale too; False if
    another process is removing it.

    Only the process that creates the takeover marker of this lock's token removes it,
    and only while the lock still holds that token (a lock once removed is never
    recreated with the same token), so a live lock that replaced it is never removed.
    """
    marker = path.with_name(f"{path.name}.{holder.get('token', 'unreadable')}.takeover")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(OSError):  # a takeover takes milliseconds: this one died
            if time.time() - marker.stat().st_mtime > 30:
                marker.unlink(missing_ok=True)
        return False
    try:
        if _read_lock(path) == holder:
            path.unlink(missing_ok=True)
    finally:
        marker.unlink(missing_ok=True)
    return True


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (its lock file is unreadable)"
    return f"pid {holder.get('pid')} on {holder.get('host')}"


def _acquire(directory: Path) -> bool:
    """Lock a run directory, waiting for its holder; True if it had to wait."""
    path = directory / LOCK_NAME
    with _held_guard:
        if path in _held:  # re-entered (ensure_checkpoint -> train_runs): already ours
            token, depth = _held[path]
            _held[path] = (token, depth + 1)
            return False
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    record = json.dumps({"pid": os.getpid(), "host": _host(), "token": token,
                         "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    waited_since, reported = None, 0.0
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:  # released just now
                continue
            if _is_stale(path, holder):
                if _take_over(path, holder):
                    notice(f"took over the lock of run {directory.name} from "
                            f"{_describe(holder)}, which is no longer running")
                else:
                    time.sleep(POLL_SECONDS)
                continue
            now = time.monotonic()
            if waited_since is None or now - reported >= REPORT_SECONDS:
                what = "waiting for" if waited_since is None else \
                    f"still waiting ({now - waited_since:.0f} s) for"
                notice(f"run {directory.name} is being trained by {_describe(holder)}; "
                        f"{what} it to finish (lock file {path})")
                waited_since = now if waited_since is None else waited_since
                reported = now
            time.sleep(POLL_SECONDS)
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        with _held_guard:
            _held[path] = (token, 1)
        return waited_since is not None


def _release(directory: Path) -> None:
    path = directory / LOCK_NAME
    with _held_guard:
        token, depth = _held.pop(path)
        if depth > 1:
            _held[path] = (token, depth - 1)
            return
    holder = _read_lock(path)
    if holder is not None and holder.get("token") == token:  # never remove another's lock
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_locks(directories: Sequence[Path]) -> Iterator[bool]:
    """Hold the locks of run `directories` (taken in a fixed order, so that processes
    locking overlapping sets of runs cannot deadlock); yields whether it had to wait."""
    taken: list[Path] = []
    waited = False
    try:
        for directory in sorted(set(directories)):
            waited |= _acquire(directory)
            taken.append(directory)
        yield waited
    finally:
        for directory in reversed(taken):
            _release(directory)


def notice(message: str) -> None:
    print(f"lmc: {message}", file=sys.stderr, flush=True)
