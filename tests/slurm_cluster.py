"""A real one-node SLURM cluster on this machine, for the tests: munged, MariaDB, slurmdbd, slurmctld, slurmd.

Everything lives under one directory (configs, state, sockets, logs, the accounting database),
on ports of its own, so it neither needs nor touches a system-wide SLURM or MariaDB. It needs
root (slurmd starts the jobs) and Debian's packages:

    apt-get install slurm-wlm slurmdbd munge mariadb-server

`start` raises `Unavailable` saying which of these is missing; the fixture turns that into a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import daemons
from .daemons import Unavailable, _free_port, _succeeds, _wait

PACKAGES = "apt-get install slurm-wlm slurmdbd munge mariadb-server"
PROGRAMS = (
    "munge",
    "munged",
    "mungekey",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
    "scancel",
    "sinfo",
)
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
DATABASE_USER, DATABASE_PASSWORD = "slurm", "slurm-test-only"


@dataclass
class Cluster:
    """A running cluster: the environment its client commands need, and the daemons to stop."""

    root: Path
    env: dict[str, str]
    daemons: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, timeout: float = 60) -> str:
        """A SLURM client command (sacct, scancel, ...) against this cluster; its stdout."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def accounting(self) -> list[dict[str, str]]:
        """Every job sacct knows of (steps left out): JobIDRaw (what $SLURM_JOB_ID says), JobID, State, ExitCode."""
        fields = ["JobIDRaw", "JobID", "JobName", "State", "ExitCode"]
        out = self.run(
            "sacct",
            "--allusers",
            "--parsable2",
            "--noheader",
            f"--format={','.join(fields)}",
            "--starttime=now-1day",
            "--allocations",
        )
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _munge(root: Path, env: dict[str, str]) -> subprocess.Popen | None:
    """munged on its standard socket (SLURM's client commands know no other); None when one already answers."""
    if _succeeds(["munge", "--no-input"], env):
        return None
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        key = root / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
    MUNGE_SOCKET.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    daemon = subprocess.Popen(
        [
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={MUNGE_SOCKET}",
            f"--pid-file={root / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait(lambda: _succeeds(["munge", "--no-input"], env), "munged", root / "log" / "munged.log")
    return daemon


def _mariadb(root: Path) -> tuple[subprocess.Popen, int]:
    """MariaDB for slurmdbd's accounting, with its user."""
    daemon, port, client = daemons.mariadb(root)
    grants = "".join(
        f"CREATE USER '{DATABASE_USER}'@'{host}' IDENTIFIED BY '{DATABASE_PASSWORD}';"
        f"GRANT ALL ON slurm_acct_db.* TO '{DATABASE_USER}'@'{host}';"
        for host in ("127.0.0.1", "localhost")
    )
    subprocess.run([*client, "-e", grants], check=True, capture_output=True, timeout=30)
    return daemon, port


def _configs(root: Path, database_port: int) -> tuple[Path, int]:
    """slurmdbd.conf and slurm.conf; this host reached at 127.0.0.1, so no name needs to resolve."""
    host = socket.gethostname().split(".")[0]
    dbd_port, ctld_port, slurmd_port = _free_port(), _free_port(), _free_port()
    cpus = os.cpu_count() or 1
    auth = "AuthType=auth/munge\n"
    _write(
        root / "slurmdbd.conf",
        f"{auth}DbdHost=localhost\nDbdPort={dbd_port}\nSlurmUser=root\nStorageType=accounting_storage/mysql\n"
        f"StorageHost=127.0.0.1\nStoragePort={database_port}\nStorageUser={DATABASE_USER}\n"
        f"StoragePass={DATABASE_PASSWORD}\nStorageLoc=slurm_acct_db\nPidFile={root / 'slurmdbd.pid'}\n"
        f"LogFile={root / 'log' / 'slurmdbd.log'}\n",
        0o600,
    )
    _write(
        root / "slurm.conf",
        f"ClusterName=qatest\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctld_port}\nSlurmdPort={slurmd_port}\n"
        f"SlurmUser=root\nSlurmdUser=root\n{auth}StateSaveLocation={root / 'state'}\n"
        f"SlurmdSpoolDir={root / 'spool'}\nSlurmctldPidFile={root / 'slurmctld.pid'}\n"
        f"SlurmdPidFile={root / 'slurmd.pid'}\nSlurmctldLogFile={root / 'log' / 'slurmctld.log'}\n"
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "ReturnToService=2\nSchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n"
        "JobAcctGatherType=jobacct_gather/linux\nAccountingStorageType=accounting_storage/slurmdbd\n"
        f"AccountingStorageHost=localhost\nAccountingStoragePort={dbd_port}\nKillWait=10\nMpiDefault=none\n"
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\nPartitionName=debug Nodes={host} Default=YES "
        "MaxTime=INFINITE State=UP\n",
    )
    return root / "slurm.conf", dbd_port


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise Unavailable(f"a one-node SLURM cluster needs root (slurmd starts jobs as their user); {PACKAGES} as root")
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed; {PACKAGES} (as root) to run it")


@contextmanager
def running(root: Path) -> Iterator[Cluster]:
    """A cluster under `root`, up until the block ends; raises Unavailable where it cannot come up."""
    _check_prerequisites()
    for directory in ("log", "state", "spool"):
        (root / directory).mkdir(parents=True)
    cluster = Cluster(root, dict(os.environ))
    try:
        munged = _munge(root, cluster.env)
        if munged is not None:
            cluster.daemons.append(munged)
        database, database_port = _mariadb(root)
        cluster.daemons.append(database)
        conf, _ = _configs(root, database_port)
        cluster.env["SLURM_CONF"] = str(conf)
        slurmdbd = subprocess.Popen(
            ["slurmdbd", "-D"], env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        cluster.daemons.append(slurmdbd)
        _wait(
            lambda: _succeeds(["sacctmgr", "-n", "list", "cluster"], cluster.env),
            "slurmdbd",
            root / "log" / "slurmdbd.log",
        )
        cluster.run("sacctmgr", "-i", "add", "cluster", "qatest")
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            cluster.daemons.append(
                subprocess.Popen(daemon, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            )
        _wait(
            lambda: _succeeds(["sinfo"], cluster.env) and "idle" in cluster.run("sinfo", "-h", "-o", "%t"),
            "slurmctld and slurmd",
            root / "log" / "slurmctld.log",
        )
        yield cluster
    finally:
        for daemon in reversed(cluster.daemons):
            daemons.stop(daemon)
