"""A real PostgreSQL server for tests: Debian's `postgresql` binaries, a temporary data
directory, a loopback port, password (SCRAM) authentication; stopped at the end.

`make test` and `.ci/run` install Debian's postgresql package when it is missing. The
server refuses to run as root, so under root it runs as the package's `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

USER, PASSWORD = "proxal", "proxal-test-pw"


def bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian's layout, or PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError(
            "PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)"
        )
    return Path(pg_ctl).resolve().parent


def _major(path: str) -> int:
    return int(Path(path).parts[4]) if Path(path).parts[4].isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server on 127.0.0.1:`port`; `database()` makes a fresh database for a test."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="proxal-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> PostgresServer:
        """Start the server (a new cluster the first time; then on the same data)."""
        if not self.data.exists():
            self._init()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "60", "start",
                  "-l", str(self.root / "server.log"))  # fmt: skip
        return self

    def _init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if self._as_user:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip

    def stop(self, mode: str = "fast", remove: bool = True) -> None:
        """Stop the server (`mode` immediate: like a crash); remove its files if `remove`."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database -> its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as_user, str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            cwd=self.root,
            timeout=120,
        )
