"""A private PostgreSQL server for the benchmarks (`--postgres`): initdb into a temporary
directory, `postgres` on a free loopback port with default durability (fsync on), stopped
and removed at the end. Needs Debian's `postgresql` package (/usr/lib/postgresql/<v>/bin);
as root the server runs as the `postgres` OS user (initdb refuses to run as root)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        sys.exit("PostgreSQL not found: apt-get install postgresql (or pass --broker postgresql://...)")
    return Path(found[-1]).parent


@contextlib.contextmanager
def private_postgres(settings: dict[str, str] | None = None) -> Iterator[str]:
    """Yields the server's URL (user celeriac, database postgres, no password). `settings`:
    extra server settings (`-c name=value`), e.g. pg_stat_statements for a profile."""
    bindir = _bindir()
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-bench-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd
        owner = pwd.getpwnam("postgres")
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = workdir / "data"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "celeriac", "--auth=trust",
                    "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    proc = subprocess.Popen([*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={workdir}",
                             *[a for k, v in (settings or {}).items() for a in ("-c", f"{k}={v}")]],
                            stdout=open(workdir / "server.log", "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"postgresql://celeriac@127.0.0.1:{port}/postgres"
    try:
        import psycopg
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.Error:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((workdir / "server.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
