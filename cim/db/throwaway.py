"""A throwaway PostgreSQL + PostGIS cluster (tests and benchmarks): started in about a second.

``initdb`` into a temporary folder, a private port and socket folder, ``fsync=off``: nothing touches the
machine's own clusters. initdb and postgres refuse to run as root, so as root the cluster runs as the
``postgres`` system user (created by Debian's postgresql package).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostGISUnavailable(RuntimeError):
    """No PostgreSQL server binaries with PostGIS are installed."""


def find_pg_bindir() -> Path:
    """The newest installed PostgreSQL whose extension folder has PostGIS."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        major = Path(bindir).parent.name
        if Path(f"/usr/share/postgresql/{major}/extension/postgis.control").exists() and Path(bindir, "initdb").exists():
            return Path(bindir)
    raise PostGISUnavailable(
        "no PostgreSQL with PostGIS found under /usr/lib/postgresql (run scripts/install.sh)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostGIS:
    """A private PostGIS server; use as a context manager or call start()/stop()."""

    def __init__(self, database: str = "cim") -> None:
        self.database = database
        self.bindir = find_pg_bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cim-pg-"))
        self.as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(args[:1])} failed: {proc.stderr.strip()}\n{log[-2000:]}")

    def start(self) -> "ThrowawayPostGIS":
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale")
        opts = (
            f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._opts = opts
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.root / "server.log"), "-w", "start")
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                     autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=self.database,
                             autocommit=True) as conn:
            conn.execute("CREATE EXTENSION postgis")
        return self

    def create_database(self, name: str) -> str:
        """A fresh database (with PostGIS) on this server; returns its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=name, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION postgis")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def halt(self) -> None:
        """Stop the server, keeping its data (fault tests: a database restart); :meth:`resume` starts it again."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again, on the same port with the same data."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", self._opts, "-l", str(self.root / "server.log"),
                  "-w", "start")

    def replica(self) -> "ThrowawayPostGIS":
        """A streaming replica of this server (``pg_basebackup -R``: a hot standby that follows it), started
        on a port of its own; stop it before this one."""
        standby = ThrowawayPostGIS(self.database)
        sock = standby.root / "sock"
        sock.mkdir()
        if standby.as_root:
            shutil.chown(standby.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        standby._run("pg_basebackup", "-D", str(standby.root / "data"), "-R", "-X", "stream", "-c", "fast",
                     "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres")
        standby._opts = (f"-p {standby.port} -k {sock} -c listen_addresses=127.0.0.1 -c hot_standby=on "
                         "-c max_connections=200")
        standby.resume()
        return standby

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ThrowawayPostGIS":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
