"""A throwaway PostgreSQL cluster a test owns: its own data directory and free port.

Fault tests stop and restart the database under running processes, which they must never
do to the shared server on 5432. ``PgCluster`` runs ``initdb`` / ``pg_ctl`` from the
PostgreSQL binaries (as the ``postgres`` OS user when we are root: the server refuses to
run as root), trusts connections on 127.0.0.1 only, and removes everything on ``destroy()``.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

WAIT_S = 15.0
SHARED_PORT = 5432
SUPERUSER = "postgres"
BINDIR_ENV = "VENDORSYNC_TEST_PG_BINDIR"
_NEEDED = ("initdb", "pg_ctl", "postgres", "createdb")


class PgUnavailable(Exception):
    """The binaries (or a user allowed to run them) are missing on this machine."""


def find_bindir() -> Path:
    """``$VENDORSYNC_TEST_PG_BINDIR``, else ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/*/bin``; raise ``PgUnavailable`` when none has the binaries."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=WAIT_S
            )
            candidates.append(Path(out.stdout.strip()))

    def version(p: Path) -> tuple[int, ...]:
        name = p.parent.name
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True))
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in _NEEDED):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise PgUnavailable(
        f"PostgreSQL server binaries not found (looked in {looked}; set {BINDIR_ENV})"
    )


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now (never the shared 5432)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != SHARED_PORT:
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def _server_user() -> str | None:
    """The OS user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PgUnavailable("running as root and there is no 'postgres' OS user") from None
    return SUPERUSER


class PgCluster:
    """``PgCluster.create()`` → initialised and started; ``destroy()`` stops and removes it."""

    def __init__(self, bindir: Path, root: Path, port: int, os_user: str | None) -> None:
        self.bindir = bindir
        self.root = root  # owned by the server user; holds data/, the socket and the log
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self.os_user = os_user
        assert port != SHARED_PORT, "never the shared server's port"

    # --- lifecycle --------------------------------------------------------------------------
    @classmethod
    def create(cls, bindir: Path | None = None) -> PgCluster:
        bindir = bindir or find_bindir()
        os_user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="vendorsync-pg-"))
        cluster = cls(bindir, root, free_port(), os_user)
        try:
            if os_user is not None:
                entry = pwd.getpwnam(os_user)
                os.chown(root, entry.pw_uid, entry.pw_gid)
            cluster._initdb()
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        # Settings live in the cluster, so a plain `pg_ctl start` after a stop reuses them.
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 60\n"
                "shared_buffers = '16MB'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        # Trust only loopback TCP and the private socket: the cluster lives for one test run.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )

    def start(self, timeout_s: float = WAIT_S) -> None:
        """Start and wait (bounded) until it accepts connections; retries on a taken port."""
        for attempt in range(3):
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    str(int(timeout_s)),
                    timeout_s=timeout_s,
                )
                return
            except RuntimeError:
                if attempt == 2 or not self._port_taken():
                    raise
                # Someone took our port between free_port() and now: move to another one.
                self.port = free_port()
                with (self.data / "postgresql.auto.conf").open("a") as conf:
                    conf.write(f"port = {self.port}\n")

    def stop(self, mode: str = "fast", timeout_s: float = WAIT_S) -> None:
        """``pg_ctl stop -m fast|immediate|smart``, waiting (bounded) until it is down."""
        assert mode in ("smart", "fast", "immediate"), mode
        self._run(
            "pg_ctl",
            "stop",
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout_s)),
            timeout_s=timeout_s,
        )

    def restart(self, mode: str = "fast", timeout_s: float = WAIT_S) -> None:
        self.stop(mode, timeout_s)
        self.start(timeout_s)

    def is_running(self) -> bool:
        proc = subprocess.run(
            [str(self.bindir / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            cwd="/",
            **self._as_user(),
        )
        return proc.returncode == 0

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def destroy(self) -> None:
        """Stop (immediately) and delete the data directory. Safe to call more than once."""
        if not self.root.exists():
            return
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, OSError, subprocess.SubprocessError):
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """Last resort: SIGKILL the postmaster named in *our* data directory's pid file."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises ProcessLookupError once it is gone
                time.sleep(0.05)

    # --- databases ----------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """Create ``name``; returns its SQLAlchemy URL (asyncpg, TCP on 127.0.0.1)."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq DSN (for asyncpg.connect)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # --- helpers ------------------------------------------------------------------------------
    def _as_user(self) -> dict[str, Any]:
        """subprocess arguments that drop root to the server user (as runuser would)."""
        if self.os_user is None:
            return {}
        entry = pwd.getpwnam(self.os_user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _port_taken(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _run(self, tool: str, *args: str, timeout_s: float = WAIT_S) -> None:
        try:
            proc = subprocess.run(
                [str(self.bindir / tool), *args],
                capture_output=True,
                text=True,
                timeout=timeout_s + 5,
                cwd="/",  # the server user may not be able to read our working directory
                **self._as_user(),
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{tool} {args[0] if args else ''} took over {timeout_s}s") from exc
        if proc.returncode != 0:
            tail = ""
            if self.log.exists():
                with contextlib.suppress(OSError):
                    tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
            raise RuntimeError(
                f"{tool} {' '.join(args[:2])} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}\n{tail}".rstrip()
            )
