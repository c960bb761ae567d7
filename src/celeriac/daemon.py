"""Running as a service, with Celery's command-line options: a log file (one per pool process
with `%I`), a pid file, detaching, dropping privileges.

A fleet's systemd units, supervisord programs and container commands start Celery with
`--logfile=/var/log/celery/%n%I.log --pidfile=/run/celery/%n.pid --detach --uid celery`; the
same command line starts a celeriac worker or beat. File names take Celery's node-name
patterns: `%p` the whole node name (`w1@host.example.com`), `%h` its host
(`host.example.com`), `%n` its name (`w1`), `%d` its domain (`example.com`), `%i` the pool
process index (0 in the main process) and `%I` the same with a separator (`-1`; empty in the
main process).
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import sys
import threading
from typing import Any

logger = logging.getLogger("celeriac.daemon")


def node_format(pattern: str, nodename: str, index: int | None = None) -> str:
    """`pattern` with Celery's %-keys of `nodename` filled in (`index`: a pool process's, 1-based)."""
    name, _, host = nodename.rpartition("@")
    host = host or nodename
    name = name or host.split(".")[0]
    keys = {"p": nodename, "h": host, "n": name, "d": host.partition(".")[2],
            "i": str(index or 0), "I": f"-{index}" if index else "", "%": "%"}
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "%":
            key = next(chars, "")
            out.append(keys.get(key, "%" + key))
        else:
            out.append(char)
    return "".join(out)


# --- log file ---

_logfile: tuple[str, str] | None = None  # (pattern, node name) of the worker's --logfile
_redirect_level: str | int | None = None  # with a log file, print() goes to the log at this level


def log_handler(pattern: str, nodename: str, index: int | None = None) -> logging.Handler:
    """A handler appending to the file the pattern names (its directory made if missing).
    WatchedFileHandler reopens the file when logrotate moves it away."""
    global _logfile
    _logfile = (pattern, nodename)
    path = os.path.abspath(node_format(pattern, nodename, index))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return logging.handlers.WatchedFileHandler(path, encoding="utf-8")


def redirect_stdouts_later(level: str | int | None) -> None:
    """With a log file: print() in a task will go to the log (Celery's `worker_redirect_stdouts`),
    from `apply_redirect()` on - once the banner is out."""
    global _redirect_level
    _redirect_level = level


def apply_redirect() -> None:
    """Called by the worker after its banner; pool processes inherit the redirected streams."""
    if _redirect_level is not None:
        redirect_stdouts(_redirect_level)


def logfile_in_pool_process(index: int) -> None:
    """In a pool process: a `--logfile` naming `%i`/`%I` gets a file of its own."""
    if _logfile is None:
        return
    pattern, nodename = _logfile
    root = logging.getLogger()
    if "%i" in pattern or "%I" in pattern:
        for old in [h for h in root.handlers if isinstance(h, logging.handlers.WatchedFileHandler)]:
            new = log_handler(pattern, nodename, index)
            new.setFormatter(old.formatter)
            new.setLevel(old.level)
            root.removeHandler(old)
            old.close()
            root.addHandler(new)


def redirect_stdouts(level: str | int = "WARNING") -> None:
    """print() and writes to stderr become log records (the log file is where a service's
    output is read; its stdout is often /dev/null)."""
    number = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    number = number if isinstance(number, int) else logging.WARNING
    sys.stdout = LogStream(logging.getLogger("celeriac.redirected"), number)
    sys.stderr = LogStream(logging.getLogger("celeriac.redirected"), number)


class LogStream:
    """A text stream whose complete lines become log records. What logging itself writes to
    stderr while handling one (a full disk: logging reports its own failure there) goes to the
    original stream instead of coming back here forever."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, log: logging.Logger, level: int) -> None:
        self.log, self.level = log, level
        self._partial = ""
        self._inside = threading.local()

    def write(self, text: str) -> int:
        if getattr(self._inside, "active", False):
            original = sys.__stderr__
            if original is not None:
                original.write(text)
            return len(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self._inside.active = True
        try:
            for line in lines:
                if line.strip():
                    self.log.log(self.level, line.rstrip())
        finally:
            self._inside.active = False
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial.strip():
            self.log.log(self.level, self._partial.rstrip())
        self._partial = ""

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("a log stream has no file descriptor")


# --- pid file ---

class PidfileError(Exception):
    pass


class Pidfile:
    """A pid file made with O_EXCL: a second worker given the same file refuses to start while
    the first runs; a file left by a process that is gone (kill -9, a crash) is replaced."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.pid = os.getpid()
            return
        raise PidfileError(f"could not create the pid file {self.path}: it keeps reappearing")

    def _remove_if_stale(self) -> None:
        try:
            with open(self.path) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return
        try:
            pid = int(text)
        except ValueError:
            logger.warning("pid file %s holds %r, not a pid: replacing it", self.path, text[:40])
            _unlink(self.path)
            return
        if pid != os.getpid() and alive(pid):
            raise PidfileError(f"pid file {self.path} names process {pid}, which is running: is another "
                               "worker already started with it? Stop it, or give this one another --pidfile")
        logger.warning("pid file %s names process %d, which is gone: replacing it", self.path, pid)
        _unlink(self.path)

    def release(self) -> None:
        """Removes the file, if it is still this process's (a pool process never removes it)."""
        if self.pid is None or self.pid != os.getpid():
            return
        try:
            with open(self.path) as f:
                if f.read().strip() == str(self.pid):
                    _unlink(self.path)
        except OSError:
            pass
        self.pid = None


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, run by another user
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- detaching and privileges ---

def detach(umask: int | None) -> None:
    """Becomes a daemon: returns in a grandchild in a session of its own, with stdin, stdout and
    stderr on /dev/null; the command's own process exits 0. It stays in the current directory
    (Celery goes to `/`; the global --workdir moves it before anything else), so relative paths
    such as the default SQLite file keep meaning what they meant on the command line."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    if umask is not None:
        os.umask(umask)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def parse_umask(value: str | None) -> int | None:
    """`--umask 022` (octal, as Celery and the shell read it)."""
    if value in (None, ""):
        return None
    try:
        return int(str(value), 8)
    except ValueError:
        raise ValueError(f"--umask {value!r}: give an octal mask such as 022") from None


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """`--uid`/`--gid` (names or numbers): run as that user and group from here on."""
    if not uid and not gid:
        return
    import grp
    import pwd

    user = None
    if uid:
        try:
            user = pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
        except KeyError:
            raise ValueError(f"--uid {uid}: no such user") from None
    group_id: int | None = None
    if gid:
        try:
            group_id = int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid
        except KeyError:
            raise ValueError(f"--gid {gid}: no such group") from None
    elif user is not None:
        group_id = user.pw_gid
    if os.geteuid() != 0:
        wanted_uid = user.pw_uid if user else os.getuid()
        if wanted_uid != os.getuid() or (group_id is not None and group_id != os.getgid()):
            raise ValueError("--uid/--gid need the worker to be started as root")
        return
    if group_id is not None:
        os.setgroups([group_id] + ([g.gr_gid for g in grp.getgrall() if user and user.pw_name in g.gr_mem]))
        os.setgid(group_id)
    if user is not None:
        os.setuid(user.pw_uid)
        os.environ["HOME"] = user.pw_dir

