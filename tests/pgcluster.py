"""A PostgreSQL cluster of a test's own, for server settings the shared server cannot have
without a restart (`max_prepared_transactions`): `initdb` and `pg_ctl` of the installed
server, in a temporary directory, on a free loopback port, stopped and removed when the
block ends. As root they run as the `postgres` user (the server refuses root), in a
directory under the system's temporary one (pytest's are private to root)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess  # nosec B404 - the installed server's own tools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ClusterUnavailableError", "private_cluster"]


class ClusterUnavailableError(RuntimeError):
    """No server binaries here, or no user to run them as."""


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(  # nosec B603
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        found.insert(0, Path(out.stdout.strip()))
    for bindir in found:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ClusterUnavailableError("no initdb and pg_ctl found")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_cluster(*settings: str) -> Iterator[str]:
    """A running cluster with `settings` (`name=value`), trust authentication for the
    `postgres` user; yields its SQLAlchemy URL (database `postgres`)."""
    bindir = _bindir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailableError("running as root and no `postgres` user") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ClusterUnavailableError("running as root and no `runuser`")
        prefix = [runuser, "-u", "postgres", "--"]
    workdir = Path(tempfile.mkdtemp(prefix="closedloop-pg-"))
    data = workdir / "pgdata"
    data.mkdir(mode=0o700)
    if prefix:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        os.chown(data, owner.pw_uid, owner.pw_gid)

    def run(*args: str) -> None:
        done = subprocess.run(  # nosec B603 - fixed tools, arguments of this module
            [*prefix, *args], check=False, capture_output=True, text=True, timeout=60
        )
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr or done.stdout}")

    port = _free_port()
    options = " ".join(
        [
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={data}",
            "-c fsync=off",
            "-c autovacuum=off",  # no transaction of its own beside the test's
            "-c shared_buffers=16MB",
            *(f"-c {setting}" for setting in settings),
        ]
    )
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(workdir / "log"), "-o", options,
            "-w", "-t", "30", "start")  # fmt: skip
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
