"""The embedded PostgreSQL + PostGIS cluster mujun runs when no ``DATABASE_URL`` is set.

A plain ``initdb``/``pg_ctl`` cluster in a project-local directory: its Unix socket lives inside
that directory, it listens on 127.0.0.1 only, and it trusts only the socket and loopback. Any
command that needs the database starts it on demand; ``mujun db stop`` stops it; its data
survives a stop and start. PostgreSQL refuses to run as root, so when mujun runs as root the
server runs as the ``postgres`` system user (created by Debian's ``postgresql`` package).

Example
-------
>>> cluster = EmbeddedCluster(Path("var/pg"))       # doctest: +SKIP
>>> url = cluster.ensure_running()                  # doctest: +SKIP
'postgresql+psycopg://mujun@127.0.0.1:54321/mujun'
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SERVER_USER = "postgres"
# Unix socket paths are limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be set up or started; the message says what to do."""


@dataclass
class ClusterStatus:
    running: bool
    directory: Path
    port: int | None
    pid: int | None
    initialised: bool

    def describe(self) -> str:
        if not self.initialised:
            return f"embedded PostgreSQL: not initialised (would live in {self.directory})"
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"embedded PostgreSQL: {state}; directory {self.directory}; 127.0.0.1 port {self.port}"


def find_pg_bindir(configured: Path | None = None) -> Path:
    """The newest PostgreSQL server binaries on this machine (Debian keeps them off PATH)."""
    if configured:
        if (Path(configured) / "postgres").exists():
            return Path(configured)
        raise EmbeddedError(f"MUJUN_PG_BINDIR={configured} has no 'postgres' binary")
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0),
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise EmbeddedError(
        "PostgreSQL server binaries not found. Run scripts/bootstrap.sh (installs postgresql and "
        "postgis from the OS packages), or set DATABASE_URL to an existing PostGIS."
    )


def server_can_reach(path: Path) -> bool:
    """Whether the server user could reach ``path``: every existing ancestor searchable by it.

    Only matters as root (the server then runs as ``postgres``): a project cloned under /root
    (mode 700) cannot hold the cluster, so :func:`cluster_home` puts it elsewhere.
    """
    if os.geteuid() != 0:
        return True
    try:
        pw = pwd.getpwnam(_SERVER_USER)
    except KeyError:
        return True  # nothing to check against; init() will say what to install
    p = Path(path).absolute()
    for anc in [p, *p.parents]:
        if not anc.exists():
            continue
        st = anc.stat()
        if st.st_uid == pw.pw_uid:
            continue
        if st.st_gid == pw.pw_gid and st.st_mode & 0o010:
            continue
        if not st.st_mode & 0o001:
            return False
    return True


def cluster_home(preferred: Path) -> Path:
    """Where the cluster lives: ``preferred`` if the server user can reach it, else a directory
    under /var/lib/mujun named after ``preferred`` (stable, so data survives between commands)."""
    preferred = Path(preferred).absolute()
    if server_can_reach(preferred.parent):
        return preferred
    digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:12]
    return Path("/var/lib/mujun") / digest / preferred.name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedCluster:
    """One project-local cluster: ``directory/data`` (PGDATA), ``directory/run`` (socket), log."""

    def __init__(self, directory: Path, *, port: int | None = None, db_name: str = "mujun",
                 db_user: str = "mujun", bindir: Path | None = None, durable: bool = True):
        self.directory = Path(directory).absolute()
        self.requested_port = port
        self.db_name = db_name
        self.db_user = db_user
        self._bindir = bindir
        # Test clusters trade crash safety for speed (fsync off); a real one never does.
        self.durable = durable

    # -- paths -------------------------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def logfile(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def bindir(self) -> Path:
        if self._bindir is None or not (Path(self._bindir) / "postgres").exists():
            self._bindir = find_pg_bindir(self._bindir)
        return self._bindir

    @property
    def port(self) -> int | None:
        conf = self.pgdata / "postgresql.auto.conf"
        if conf.exists():
            m = re.search(r"^port\s*=\s*'?(\d+)", conf.read_text(), re.M)
            if m:
                return int(m.group(1))
        return None

    def url(self, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.db_user}@127.0.0.1:{self.port}/{self.db_name}"

    # -- running commands as the server user ---------------------------------------------------
    def _as_server_user(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        try:
            pwd.getpwnam(_SERVER_USER)
        except KeyError as exc:
            raise EmbeddedError(
                "running as root, but there is no 'postgres' user to run the server as. "
                "Install Debian's postgresql package (scripts/bootstrap.sh does) or run mujun "
                "as an ordinary user."
            ) from exc
        return ["runuser", "-u", _SERVER_USER, "--", *cmd]

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._as_server_user(cmd), capture_output=True, text=True)
        if check and proc.returncode != 0:
            tail = ""
            if self.logfile.exists():
                tail = "\n".join(self.logfile.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedError(
                f"{' '.join(cmd[:2])} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
                + (f"\n--- {self.logfile} ---\n{tail}" if tail else "")
            )
        return proc

    @contextmanager
    def _lock(self):
        # Two commands starting the cluster at once (serve + a CLI call) must not race.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _give_to_server_user(self) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(_SERVER_USER)
        for path in [self.directory, *self.directory.rglob("*")]:
            try:
                os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
            except FileNotFoundError:
                pass
        # The server user must be able to reach the directory through its parents.
        probe = self._run(["test", "-w", str(self.directory)], check=False)
        if probe.returncode != 0:
            raise EmbeddedError(
                f"the '{_SERVER_USER}' user cannot write {self.directory} (a parent directory is "
                "not traversable). Set MUJUN_DATA_DIR to a directory under /srv, /var or /tmp."
            )

    # -- lifecycle -----------------------------------------------------------------------------
    def status(self) -> ClusterStatus:
        initialised = (self.pgdata / "PG_VERSION").exists()
        pid = None
        running = False
        if initialised:
            pidfile = self.pgdata / "postmaster.pid"
            if pidfile.exists():
                try:
                    pid = int(pidfile.read_text().splitlines()[0])
                    os.kill(pid, 0)
                    running = True
                except (ValueError, IndexError, ProcessLookupError, PermissionError):
                    running = False
                    pid = None
        return ClusterStatus(running, self.directory, self.port, pid, initialised)

    def init(self) -> None:
        """initdb with trust on the socket and loopback only, then the server settings."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        sock = self.socket_dir / ".s.PGSQL.65535"
        if len(str(sock)) > _MAX_SOCKET_PATH:
            raise EmbeddedError(f"{self.directory} is too deep for a Unix socket path; set a shorter MUJUN_DATA_DIR")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user()
        self._run([str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", self.db_user,
                   "-E", "UTF8", "--no-locale", "--auth=trust", "--no-instructions"])
        hba = (
            "# mujun embedded cluster: trust only the Unix socket and loopback.\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n"
            "host  all all ::1/128 trust\n"
        )
        self._write_server_file(self.pgdata / "pg_hba.conf", hba)
        self._write_settings(self.requested_port or _free_port())

    def _write_server_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(_SERVER_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _write_settings(self, port: int) -> None:
        lines = [
            f"port = {port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.socket_dir}'",
            "shared_buffers = '256MB'",
            "work_mem = '32MB'",
            "maintenance_work_mem = '256MB'",
            "max_connections = 100",
            "jit = off",
        ]
        if not self.durable:
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        self._write_server_file(self.pgdata / "postgresql.auto.conf", "\n".join(lines) + "\n")

    def start(self) -> None:
        st = self.status()
        if st.running:
            return
        port = self.port or self.requested_port or _free_port()
        if _port_in_use(port):
            # Another program took our port since last time: move, the URL is derived anyway.
            port = self.requested_port if self.requested_port and not _port_in_use(self.requested_port) else _free_port()
        self._write_settings(port)
        self._give_to_server_user()
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.logfile),
                   "-w", "-t", "60", "start"])

    def stop(self) -> bool:
        if not self.status().running:
            return False
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
        return True

    def ensure_running(self) -> str:
        """Initialise, start and create the database with PostGIS if needed; return its URL."""
        with self._lock():
            self.init()
            self.start()
            self._ensure_database()
        return self.url()

    def _psql(self, sql: str, db: str = "postgres") -> str:
        cmd = [str(self.bindir.parent / "bin" / "psql") if (self.bindir / "psql").exists() else "psql",
               "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.db_user, "-d", db,
               "-v", "ON_ERROR_STOP=1", "-tAc", sql]
        return self._run(cmd).stdout.strip()

    def _ensure_database(self) -> None:
        for _ in range(50):
            if _port_in_use(self.port):
                break
            time.sleep(0.1)
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.db_name}'")
        if exists != "1":
            self._psql(f'CREATE DATABASE "{self.db_name}"')
        try:
            self._psql("CREATE EXTENSION IF NOT EXISTS postgis", db=self.db_name)
        except EmbeddedError as exc:
            raise EmbeddedError(
                f"PostGIS is not installed for this PostgreSQL ({self.bindir}): run "
                "scripts/bootstrap.sh, or `apt-get install postgresql-<version>-postgis-3`.\n"
                f"{exc}"
            ) from exc

    def destroy(self) -> None:
        """Stop and delete the cluster (tests use throwaway clusters)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
