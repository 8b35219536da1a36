"""Real services the tests bring up on this machine, each under a directory and on ports of its own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

MARIADB_PROGRAMS = ("mariadbd", "mariadb-install-db", "mariadb")


class Unavailable(RuntimeError):
    """A service cannot be brought up here; the message says why and what would fix it."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, log: Path | None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = log.read_text()[-1500:] if log is not None and log.is_file() else ""
    raise Unavailable(f"{what} did not come up within {timeout_s:.0f} s: {tail}")


def _succeeds(command: list[str], env: dict[str, str] | None = None) -> bool:
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0


def mariadb(root: Path) -> tuple[subprocess.Popen, int, list[str]]:
    """MariaDB with its data under `root`, on 127.0.0.1: the daemon, its port, and a root client command."""
    missing = [program for program in MARIADB_PROGRAMS if shutil.which(program) is None]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed; apt-get install mariadb-server (as root) to run it")
    (root / "log").mkdir(parents=True, exist_ok=True)
    data, sock, port = root / "db", root / "db.sock", _free_port()
    result = subprocess.run(
        [
            "mariadb-install-db",
            "--user=root",
            f"--datadir={data}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise Unavailable(f"mariadb-install-db failed: {result.stderr.strip()[-500:]}")
    log = root / "log" / "mariadb.log"
    daemon = subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={data}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={root / 'mariadb.pid'}",
            f"--log-error={log}",
            "--innodb-buffer-pool-size=64M",
            "--skip-name-resolve",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot"]
    try:
        _wait(lambda: _succeeds([*client, "-e", "SELECT 1"]), "MariaDB", log)
    except Unavailable:
        stop(daemon)
        raise
    return daemon, port, client


def stop(daemon: subprocess.Popen) -> None:
    daemon.terminate()
    try:
        daemon.wait(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def _postgres_bin() -> Path | None:
    """The newest server Debian installed (its programs are not on PATH), else the one on PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def postgres(root: Path, user: str) -> tuple[subprocess.Popen, int]:
    """PostgreSQL with its data under `root`, on 127.0.0.1, `user` its superuser (no password): daemon and port.

    PostgreSQL refuses to run as root; as root, the server runs as the `postgres` account Debian's package adds.
    """
    import os

    binaries = _postgres_bin()
    if binaries is None:
        raise Unavailable("PostgreSQL is not installed; apt-get install postgresql (as root) to run it")
    as_account: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            raise Unavailable("PostgreSQL cannot run as root and there is no postgres account to run it as")
        as_account = ["runuser", "-u", "postgres", "--"]
    data, port = root / "pg", _free_port()
    root.mkdir(parents=True, exist_ok=True)
    if as_account:
        shutil.chown(root, "postgres")
    result = subprocess.run(
        [*as_account, str(binaries / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise Unavailable(f"initdb failed: {result.stderr.strip()[-500:]}")
    log = root / "postgres.log"
    daemon = subprocess.Popen(
        [
            *as_account,
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(root),
            "-c",
            "fsync=off",
            "-c",
            f"log_directory={root}",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    ready = [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user]
    try:
        _wait(lambda: _succeeds(ready), "PostgreSQL", log)
    except Unavailable:
        stop(daemon)
        raise
    return daemon, port
