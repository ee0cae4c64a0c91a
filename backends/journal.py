"""The rollout journal: every real rollout recorded durably as it happens.

One SQLite file (``--journal PATH``; :func:`default_path` otherwise) holds, per
rollout: the scale set, the previous and target model, the strategy and engine
options, every event of the engine's stream (:class:`~.events.Event`), each
wave, each instance's latest outcome, and how the rollout ended.

Durability: WAL mode with ``synchronous=FULL``, and every write is one
transaction committed before the call returns, so what a call recorded
survives a SIGKILL or a power cut and a killed process never leaves a corrupt
file (SQLite's own guarantee; :meth:`Journal.check` runs ``integrity_check``).

One unfinished rollout per scale set: a rollout is *unfinished* while its
state is ``"running"`` or ``"interrupted"`` (Ctrl-C, SIGTERM, ``--no-wait``, an
Azure error after a change), and :meth:`Journal.start` refuses a second one
(:class:`ActiveRolloutError`, naming it with the ``resume`` and ``abandon``
commands) inside one ``BEGIN IMMEDIATE`` transaction, so two processes racing
to start a rollout of the same scale set cannot both succeed (a partial UNIQUE
index on ``"running"`` is the last word). ``resume`` adopts an unfinished
rollout (:meth:`Journal.adopt`); ``abandon`` ends it (:meth:`Journal.abandon`).
A running rollout records its *driver* (``user@host:pid``): :meth:`Journal.adopt`
refuses while the caller says that process is alive.

Schema version 2 added the scale set's ``uniqueId`` and the driver to each
rollout and the state ``"abandoned"``; a version-1 journal is migrated when
opened (SQLite cannot alter a CHECK constraint, so the table is rebuilt).
Version 3 added the ``operations`` table: the operator commands that are not
rollouts (``instances ACTION``, ``scale``), one row each
(:meth:`Journal.start_operation`, :meth:`Journal.finish_operation`,
:meth:`Journal.operations`); opening a version-2 journal creates it.

Faults of the file itself: a write that fails (full disk, an I/O error) raises
:class:`JournalError` (one line); a journal deleted (or replaced) while open is
noticed before the next write, re-created from the open connection's copy
(every rollout, with its events) and reported through ``on_warning``.

Each :meth:`Journal.start` or :meth:`Journal.adopt` begins an *attempt* (1, 2,
...): the engine numbers waves from 1 again after a resume, so waves are keyed
by (attempt, wave). A :class:`Journal` remembers the attempt it drives and
refuses to write for a rollout another process has adopted since.

The file is readable by its owner only (0600, its directory 0700 when the
journal creates it). Nothing secret enters the API: no credentials, tokens or
connection strings. Like the rest of the engine, the journal never reads a
clock: every timestamp (seconds since the epoch) comes from the caller.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..engine.errors import InputError
from ..engine.events import Event, EventKind
from ..engine.model import ImageReference, ModelVersion
from ..engine.rollout import Phase

__all__ = [
    "SCHEMA_VERSION",
    "STATES",
    "ActiveRolloutError",
    "Journal",
    "JournalError",
    "OperationRecord",
    "RolloutRecord",
    "default_path",
    "image_from_dict",
    "image_to_dict",
    "model_from_dict",
    "model_to_dict",
    "refuse_live_driver",
]

#: ``PRAGMA user_version`` of the schema this module writes.
SCHEMA_VERSION = 3
#: ``PRAGMA application_id``: "vmsR", tells a journal from any other SQLite file.
_APPLICATION_ID = 0x766D7352

STATES = ("running", "completed", "halted", "interrupted", "failed", "abandoned")
_FINAL_STATES = ("completed", "halted", "failed", "interrupted")
_ADOPTABLE = ("running", "interrupted", "halted")
#: states that block a new rollout of the same scale set
UNFINISHED = ("running", "interrupted")
_OUTCOMES = ("started", "done", "unhealthy", "failed", "gone")
#: an operation (instances ACTION, scale): running until it ends; "requested"
#: when the command returned without waiting (--no-wait)
OPERATION_STATES = ("running", "completed", "requested", "failed", "interrupted")
_ROLLBACK_PHASES = (Phase.ROLLBACK_MODEL.value, Phase.ROLLING_BACK.value)

_RESOLUTION = {
    EventKind.INSTANCE_HEALTHY: "done",
    EventKind.INSTANCE_UNHEALTHY: "unhealthy",
    EventKind.INSTANCE_FAILED: "failed",
    EventKind.INSTANCE_GONE: "gone",
}

_ROLLOUTS_COLUMNS = f"""(
    id             TEXT PRIMARY KEY,
    scale_set_id   TEXT NOT NULL,
    scale_set_key  TEXT NOT NULL,           -- lower-cased ARM id
    previous_model TEXT NOT NULL,           -- JSON
    target_model   TEXT NOT NULL,           -- JSON
    strategy       TEXT NOT NULL,
    options        TEXT NOT NULL,           -- JSON: EngineOptions.to_mapping()
    state          TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
    reason         TEXT NOT NULL DEFAULT '',
    started_at     REAL NOT NULL,
    finished_at    REAL,
    attempt        INTEGER NOT NULL DEFAULT 1,
    updated_at     REAL NOT NULL,
    unique_id      TEXT NOT NULL DEFAULT '',  -- the scale set's uniqueId when started
    driver         TEXT NOT NULL DEFAULT ''   -- user@host:pid driving the latest attempt
)"""

# Statements are split on ";": no semicolon in comments.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rollouts {_ROLLOUTS_COLUMNS};
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_running
    ON rollouts (scale_set_key) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS rollouts_by_scale_set ON rollouts (scale_set_key, started_at);
CREATE INDEX IF NOT EXISTS rollouts_by_start ON rollouts (started_at);

CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    attempt    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    phase      TEXT NOT NULL,
    instances  TEXT NOT NULL,               -- JSON list of instance ids
    wave       INTEGER,
    detail     TEXT NOT NULL,
    time       REAL,                        -- engine (driver) time, NULL for journal events
    wall_time  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_rollout ON events (rollout_id, seq);

CREATE TABLE IF NOT EXISTS waves (
    rollout_id   TEXT NOT NULL REFERENCES rollouts (id),
    attempt      INTEGER NOT NULL,
    wave         INTEGER NOT NULL,
    phase        TEXT NOT NULL,
    action       TEXT NOT NULL,             -- "upgrade" or "replace" (surge)
    instances    TEXT NOT NULL,             -- JSON list of instance ids
    started_at   REAL NOT NULL,             -- wall time
    completed_at REAL,
    PRIMARY KEY (rollout_id, attempt, wave)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS instance_outcomes (
    rollout_id  TEXT NOT NULL REFERENCES rollouts (id),
    instance_id TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ({", ".join(repr(o) for o in _OUTCOMES)})),
    phase       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    wave        INTEGER,
    replacement TEXT,                       -- surge: the new instance standing in for it
    detail      TEXT NOT NULL,
    updated_at  REAL NOT NULL,              -- wall time
    PRIMARY KEY (rollout_id, instance_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS operations (
    id            TEXT PRIMARY KEY,
    scale_set_id  TEXT NOT NULL,
    scale_set_key TEXT NOT NULL,            -- lower-cased ARM id
    action        TEXT NOT NULL,            -- start, ..., delete (instances), scale
    request       TEXT NOT NULL,            -- JSON: what was asked (instances, capacity)
    instances     TEXT NOT NULL,            -- JSON list of the instance ids it named
    result        TEXT NOT NULL,            -- JSON: what came of it (capacity, added, removed)
    state         TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in OPERATION_STATES)})),
    reason        TEXT NOT NULL DEFAULT '',
    started_at    REAL NOT NULL,
    finished_at   REAL,
    driver        TEXT NOT NULL DEFAULT ''  -- user@host:pid that ran it
);
CREATE INDEX IF NOT EXISTS operations_by_start ON operations (started_at);
CREATE INDEX IF NOT EXISTS operations_by_scale_set ON operations (scale_set_key, started_at);
"""

# One statement, one snapshot: the counts agree with the row.
_SELECT_RECORD = f"""
SELECT r.*,
    (SELECT count(*) FROM waves w WHERE w.rollout_id = r.id) AS n_waves,
    (SELECT count(*) FROM instance_outcomes o WHERE o.rollout_id = r.id
        AND o.outcome = 'done'
        AND o.phase NOT IN ({", ".join(repr(p) for p in _ROLLBACK_PHASES)})) AS n_upgraded,
    (SELECT count(*) FROM instance_outcomes o WHERE o.rollout_id = r.id
        AND o.outcome IN ('unhealthy', 'failed')) AS n_failed
FROM rollouts r
"""


def default_path() -> Path:
    """``$VMSS_ROLLOUT_JOURNAL`` if set, else
    ``$XDG_STATE_HOME/vmss-rollout/journal.sqlite``, else
    ``~/.local/state/vmss-rollout/journal.sqlite``."""
    explicit = os.environ.get("VMSS_ROLLOUT_JOURNAL", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME", "").strip()
    # The XDG spec: a relative path is invalid and must be ignored.
    base = Path(state_home) if state_home and Path(state_home).is_absolute() else None
    if base is None:
        base = Path.home() / ".local" / "state"
    return base / "vmss-rollout" / "journal.sqlite"


class ActiveRolloutError(InputError):
    """This scale set already has an unfinished rollout (running or interrupted)."""

    def __init__(self, scale_set_id: str, running: RolloutRecord) -> None:
        self.scale_set_id = scale_set_id
        self.rollout_id = running.id
        what = "a running" if running.state == "running" else f"an unfinished ({running.state})"
        super().__init__(
            f"scale set {scale_set_id} already has {what} rollout {running.id} "
            f"(started {_iso(running.started_at)}, strategy {running.strategy}, target "
            f"{_model_text(running.target_model)}); continue it with `vmss-rollout resume "
            f"{running.id}` or end it with `vmss-rollout abandon {running.id}`"
        )


class JournalError(InputError):
    """The journal file cannot be read or written (full disk, I/O error,
    permissions). An :class:`InputError` (exit 2) until the caller knows that
    the scale set was changed."""


#: options journaled with a rollout that are the driver's, not the engine's
DRIVER_OPTIONS = ("poll_interval",)


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout as the journal knows it."""

    id: str
    scale_set_id: str
    previous_model: dict[str, Any]
    target_model: dict[str, Any]
    strategy: str
    options: dict[str, Any]
    #: "running" | "completed" | "halted" | "interrupted" | "failed"
    state: str
    reason: str
    started_at: float
    finished_at: float | None
    #: waves started, over all attempts
    waves: int
    #: instances whose latest outcome is "done" outside a rollback (on the target)
    upgraded: int
    #: instances whose latest outcome is "unhealthy" or "failed"
    failed: int
    #: the scale set's ``uniqueId`` when the rollout started ("" if unknown)
    unique_id: str = ""
    #: ``user@host:pid`` of the process driving the latest attempt ("" if unknown)
    driver: str = ""

    @property
    def active(self) -> bool:
        return self.state == "running"

    @property
    def unfinished(self) -> bool:
        """Running or interrupted: it blocks a new rollout of its scale set."""
        return self.state in UNFINISHED

    @property
    def engine_options(self) -> dict[str, Any]:
        """:attr:`options` without the driver's (``poll_interval``, which the
        journal keeps for ``calibrate``): what ``EngineOptions.from_mapping`` reads."""
        return {k: v for k, v in self.options.items() if k not in DRIVER_OPTIONS}

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict (``history --json``): one key per field."""
        return asdict(self)


@dataclass(frozen=True)
class OperationRecord:
    """One operator command that is not a rollout (``instances ACTION``,
    ``scale``) as the journal knows it."""

    id: str
    scale_set_id: str
    #: "start", "restart", "power-off", "deallocate", "reimage", "delete" or "scale"
    action: str
    #: what was asked: ``{"instances": [...]}`` or ``{"capacity": N, "previous": M}``
    request: dict[str, Any]
    #: the instance ids it named (a scale: those added or removed, once known)
    instances: list[str]
    #: what came of it, e.g. ``{"capacity": 28}`` or ``{"added": [...], "removed": [...]}``
    result: dict[str, Any]
    #: "running" | "completed" | "requested" | "failed" | "interrupted"
    state: str
    reason: str
    started_at: float
    finished_at: float | None
    driver: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- model (de)serialisation -----------------------------------------------------


def image_to_dict(image: ImageReference) -> dict[str, Any]:
    """The set fields of ``image`` (``None`` fields are left out)."""
    return {f.name: getattr(image, f.name) for f in fields(image) if getattr(image, f.name)}


def image_from_dict(data: Mapping[str, Any]) -> ImageReference:
    known = {f.name for f in fields(ImageReference)}
    _check_keys(data, known, "image")
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise InputError(f"image.{key}: expected a string, got {value!r}")
    return ImageReference(**{k: v for k, v in data.items() if v is not None})


def model_to_dict(model: ModelVersion) -> dict[str, Any]:
    """``{"image": {...}, "vm_size": "..."}``, the inverse of :func:`model_from_dict`."""
    return {"image": image_to_dict(model.image), "vm_size": model.vm_size}


def model_from_dict(data: Mapping[str, Any]) -> ModelVersion:
    _check_keys(data, {"image", "vm_size"}, "model")
    image = data.get("image")
    if not isinstance(image, Mapping):
        raise InputError(f"model.image: expected a mapping, got {image!r}")
    if "vm_size" not in data:
        return ModelVersion(image_from_dict(image))
    vm_size = data["vm_size"]
    if not isinstance(vm_size, str) or not vm_size:
        raise InputError(f"model.vm_size: expected a VM size name, got {vm_size!r}")
    return ModelVersion(image_from_dict(image), vm_size)


def _check_keys(data: Mapping[str, Any], known: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise InputError(f"{what}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{what}.{unknown[0]}: unknown key (valid: {', '.join(sorted(known))})")


# --- helpers ---------------------------------------------------------------------


def _model_text(model: Mapping[str, Any]) -> str:
    try:
        return str(model_from_dict(model))
    except InputError:
        return json.dumps(model, sort_keys=True)


def refuse_live_driver(
    record: RolloutRecord, is_alive: Callable[[str], bool] | None, then: str
) -> None:
    """Only one process drives a rollout: refuse while its recorded driver lives."""
    alive = record.state == "running" and bool(record.driver) and is_alive is not None
    if alive and is_alive is not None and is_alive(record.driver):
        raise InputError(
            f"rollout {record.id} is being driven by process {record.driver}, which is "
            f"still alive: only one process drives a rollout; {then}"
        )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected seconds since the epoch, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite time, got {value!r}")
    return float(value)


def _json(value: Any, name: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: not JSON-serialisable: {exc}") from None


def _new_id(now: float, prefix: str = "r") -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{os.urandom(2).hex()}"


def _owned(st: os.stat_result) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or st.st_uid == getuid()


def _prepare_file(path: Path) -> None:
    """Create the directory (0700) and the file (0600) before SQLite opens it, so
    the file is never readable by others, not even for a moment; tighten an
    existing journal (and its -wal/-shm) the user owns."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # explicitly: mkdir's mode is masked by the umask
    # Never open() an existing journal here: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, including those of another
    # open SQLite connection, which can corrupt the database. Create only.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            st = side.stat()
        except FileNotFoundError:
            continue
        if _owned(st) and st.st_mode & 0o777 != 0o600:
            os.chmod(side, 0o600)


# --- the journal -----------------------------------------------------------------


class Journal:
    """A rollout journal in one SQLite file. Not thread-safe: one per thread."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        #: called with one line when the journal had to repair itself (re-created)
        self.on_warning = on_warning
        #: rollout id -> the attempt this object drives (after start or adopt)
        self._attempts: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        self._identity = None
        if self.path.is_dir():
            raise JournalError(f"journal {self.path}: is a directory; give the path of a file")
        try:
            _prepare_file(self.path)
        except PermissionError as exc:
            raise JournalError(
                f"journal {self.path}: not writable ({exc.strerror or exc})"
            ) from None
        except OSError as exc:
            raise JournalError(f"journal {self.path}: {exc.strerror or exc}") from None
        if not os.access(self.path, os.R_OK | os.W_OK):
            raise JournalError(f"journal {self.path}: not writable (permission denied)")
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: cannot open ({exc})") from None
        try:
            self._setup()
            st = self.path.stat()
        except sqlite3.OperationalError as exc:
            self.close()
            raise JournalError(f"journal {self.path}: cannot use it ({exc})") from None
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(f"journal {self.path}: not a usable journal ({exc})") from None
        except OSError as exc:
            self.close()
            raise JournalError(f"journal {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self.close()
            raise
        self._identity = (st.st_dev, st.st_ino)

    # ------------------------------------------------------------------ plumbing
    def _setup(self) -> None:
        db = self._conn
        db.row_factory = sqlite3.Row
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        if int(db.execute("PRAGMA user_version").fetchone()[0]) == 1:
            self._migrate_from_1()
        db.execute("PRAGMA foreign_keys=ON")
        with self._write() as tx:
            version = int(tx.execute("PRAGMA user_version").fetchone()[0])
            app = int(tx.execute("PRAGMA application_id").fetchone()[0])
            if app not in (0, _APPLICATION_ID):
                raise InputError(f"journal {self.path}: not a vmss-rollout journal")
            if version > SCHEMA_VERSION:
                raise InputError(
                    f"journal {self.path}: schema version {version} was written by a newer "
                    f"vmss-rollout (this one reads up to {SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                return
            ours = {"rollouts", "events", "waves", "instance_outcomes", "operations"}
            tables = {
                row[0]
                for row in tx.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            }
            if tables - ours:
                raise InputError(
                    f"journal {self.path}: an SQLite database, but not a vmss-rollout journal"
                )
            # executescript() would COMMIT first; run statement by statement instead.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    assert sqlite3.complete_statement(statement + ";"), statement
                    tx.execute(statement)
            tx.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate_from_1(self) -> None:
        """Version 1 -> 2: new columns and the state "abandoned" in the CHECK
        constraint, which SQLite cannot alter: rebuild ``rollouts`` (the
        documented 12-step procedure, foreign keys off) in one transaction."""
        db = self._conn
        db.execute("PRAGMA foreign_keys=OFF")  # no effect inside a transaction
        with self._write() as tx:
            if int(tx.execute("PRAGMA user_version").fetchone()[0]) != 1:
                return  # another process migrated it meanwhile
            tx.execute(f"CREATE TABLE rollouts_v2 {_ROLLOUTS_COLUMNS}")
            v1 = (
                "id, scale_set_id, scale_set_key, previous_model, target_model, strategy, "
                "options, state, reason, started_at, finished_at, attempt, updated_at"
            )
            tx.execute(f"INSERT INTO rollouts_v2 ({v1}) SELECT {v1} FROM rollouts")
            tx.execute("DROP TABLE rollouts")
            tx.execute("ALTER TABLE rollouts_v2 RENAME TO rollouts")
            for statement in _SCHEMA.split(";"):
                if "INDEX" in statement and "ON rollouts " in statement:
                    tx.execute(statement)
            if tx.execute("PRAGMA foreign_key_check").fetchall():
                raise sqlite3.DatabaseError("migration to schema 2 broke a foreign key")
            # version 2 now; _setup creates what later versions add (IF NOT EXISTS)
            tx.execute("PRAGMA user_version = 2")

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"journal {self.path} is closed")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (durably) on exit. ``BEGIN IMMEDIATE``
        takes the write lock up front, so a read-check-write is atomic across
        processes. A file deleted or replaced since it was opened is re-created
        first; a failed write (full disk, I/O error) is a :class:`JournalError`."""
        if self._identity is not None:
            self._check_file()
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise JournalError(f"journal {self.path}: cannot write ({exc})") from None
        try:
            yield db
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise JournalError(f"journal {self.path}: cannot write ({exc})") from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _check_file(self) -> None:
        """Re-create the journal if its file was deleted or replaced while open:
        the open connection still holds the old file, so nothing is lost; copy it
        back (every rollout, with its events) and say so through ``on_warning``."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        except OSError:
            return  # unreadable directory: the write reports it
        if st is not None and (st.st_dev, st.st_ino) == self._identity:
            return
        if st is not None:
            # another file is there now: keep it, write ours beside it
            self.path = self.path.with_name(f"{self.path.name}.{os.getpid()}.recovered")
        try:
            copy = self.path.with_name(self.path.name + ".recreate")
            copy.unlink(missing_ok=True)
            _prepare_file(copy)
            self._conn.execute("VACUUM INTO ?", (str(copy),))
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"journal {self.path} was deleted and cannot be re-created "
                f"({getattr(exc, 'strerror', None) or exc})"
            ) from None
        self.close()  # checkpoints into the deleted file and drops its -wal/-shm
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        os.replace(copy, self.path)
        attempts = dict(self._attempts)
        self._open()
        self._attempts = attempts
        if self.on_warning is not None:
            running = ", ".join(sorted(attempts)) or "no rollout"
            self.on_warning(
                f"journal {self.path} was deleted while in use; re-created it and wrote "
                f"{running} again"
            )

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Several reads from one snapshot."""
        db = self._conn
        db.execute("BEGIN")
        try:
            yield db
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> bool:
        """``PRAGMA integrity_check`` and ``foreign_key_check`` both clean."""
        db = self._conn
        rows = db.execute("PRAGMA integrity_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            return False
        return not db.execute("PRAGMA foreign_key_check").fetchall()

    # ------------------------------------------------------------------ records
    @staticmethod
    def _record(row: sqlite3.Row) -> RolloutRecord:
        return RolloutRecord(
            id=row["id"],
            scale_set_id=row["scale_set_id"],
            previous_model=json.loads(row["previous_model"]),
            target_model=json.loads(row["target_model"]),
            strategy=row["strategy"],
            options=json.loads(row["options"]),
            state=row["state"],
            reason=row["reason"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            waves=row["n_waves"],
            upgraded=row["n_upgraded"],
            failed=row["n_failed"],
            unique_id=row["unique_id"],
            driver=row["driver"],
        )

    def _find(self, db: sqlite3.Connection, rollout_id: str) -> RolloutRecord | None:
        row = db.execute(_SELECT_RECORD + "WHERE r.id = ?", (rollout_id,)).fetchone()
        return None if row is None else self._record(row)

    def _running(self, db: sqlite3.Connection, scale_set_id: str) -> RolloutRecord | None:
        row = db.execute(
            _SELECT_RECORD + "WHERE r.scale_set_key = ? AND r.state = 'running'",
            (scale_set_id.strip().lower(),),
        ).fetchone()
        return None if row is None else self._record(row)

    def _unfinished(self, db: sqlite3.Connection, scale_set_id: str) -> RolloutRecord | None:
        row = db.execute(
            _SELECT_RECORD + "WHERE r.scale_set_key = ? AND r.state IN ('running', 'interrupted') "
            "ORDER BY r.started_at DESC, r.rowid DESC LIMIT 1",
            (scale_set_id.strip().lower(),),
        ).fetchone()
        return None if row is None else self._record(row)

    def _require(self, db: sqlite3.Connection, rollout_id: str) -> RolloutRecord:
        record = self._find(db, rollout_id)
        if record is not None:
            return record
        recent = [
            r[0]
            for r in db.execute(
                "SELECT id FROM rollouts ORDER BY started_at DESC, rowid DESC LIMIT 5"
            )
        ]
        known = f"recent: {', '.join(recent)}" if recent else "the journal is empty"
        raise InputError(f"no rollout {rollout_id!r} in journal {self.path} ({known})")

    def _writable(self, db: sqlite3.Connection, rollout_id: str) -> tuple[RolloutRecord, int]:
        """The rollout and its attempt, if this object may still write for it."""
        record = self._require(db, rollout_id)
        attempt = int(
            db.execute("SELECT attempt FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()[0]
        )
        mine = self._attempts.get(rollout_id)
        if mine is not None and mine != attempt:
            raise InputError(
                f"rollout {rollout_id} was resumed by another process (attempt {attempt}; "
                f"this process drove attempt {mine}): not recording"
            )
        if record.state not in ("running", "interrupted"):
            raise InputError(f"rollout {rollout_id} is {record.state}: not recording")
        return record, attempt

    # ------------------------------------------------------------------ writes
    def start(
        self,
        *,
        scale_set_id: str,
        previous_model: Mapping[str, Any],
        target_model: Mapping[str, Any],
        strategy: str,
        options: Mapping[str, Any],
        now: float,
        unique_id: str = "",
        driver: str = "",
    ) -> RolloutRecord:
        """Record a new running rollout; :class:`ActiveRolloutError` if this scale
        set already has an unfinished one (running or interrupted)."""
        now = _time(now, "now")
        ssid = scale_set_id.strip()
        if not ssid:
            raise InputError("scale set id: empty")
        columns = (
            ssid,
            ssid.lower(),
            _json(dict(previous_model), "previous_model"),
            _json(dict(target_model), "target_model"),
            strategy,
            _json(dict(options), "options"),
        )
        for _ in range(16):  # the id is time + 16 random bits: retry a collision
            rollout_id = _new_id(now)
            with self._write() as db:
                running = self._unfinished(db, ssid)
                if running is not None:
                    raise ActiveRolloutError(ssid, running)
                if db.execute("SELECT 1 FROM rollouts WHERE id = ?", (rollout_id,)).fetchone():
                    continue
                # The partial UNIQUE index is the last word should a writer not
                # use BEGIN IMMEDIATE; inside this transaction it cannot fire.
                db.execute(
                    "INSERT INTO rollouts (id, scale_set_id, scale_set_key, previous_model, "
                    "target_model, strategy, options, state, reason, started_at, finished_at, "
                    "attempt, updated_at, unique_id, driver) VALUES (?, ?, ?, ?, ?, ?, ?, "
                    "'running', '', ?, NULL, 1, ?, ?, ?)",
                    (rollout_id, *columns, now, now, unique_id, driver),
                )
                record = self._require(db, rollout_id)
            self._attempts[rollout_id] = 1
            return record
        raise RuntimeError("could not allocate a unique rollout id")  # pragma: no cover

    def record_event(self, rollout_id: str, event: Event, wall_time: float) -> None:
        """Append ``event`` and update the wave and instance-outcome rows it
        implies, in one committed transaction."""
        wall = _time(wall_time, "wall_time")
        kind = str(event.kind)
        instances = list(event.instances)
        with self._write() as db:
            _, attempt = self._writable(db, rollout_id)
            db.execute(
                "INSERT INTO events (rollout_id, attempt, kind, phase, instances, wave, detail, "
                "time, wall_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rollout_id,
                    attempt,
                    kind,
                    event.phase,
                    json.dumps(instances),
                    event.wave,
                    event.detail,
                    _time(event.time, "event.time"),
                    wall,
                ),
            )
            if event.kind is EventKind.WAVE_STARTED and event.wave is not None:
                db.execute(
                    "INSERT INTO waves (rollout_id, attempt, wave, phase, action, instances, "
                    "started_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
                    "ON CONFLICT (rollout_id, attempt, wave) DO UPDATE SET "
                    "phase = excluded.phase, action = excluded.action, "
                    "instances = excluded.instances, started_at = excluded.started_at, "
                    "completed_at = NULL",
                    (
                        rollout_id,
                        attempt,
                        event.wave,
                        event.phase,
                        event.detail,
                        json.dumps(instances),
                        wall,
                    ),
                )
            elif event.kind is EventKind.WAVE_COMPLETED and event.wave is not None:
                db.execute(
                    "UPDATE waves SET completed_at = ? "
                    "WHERE rollout_id = ? AND attempt = ? AND wave = ?",
                    (wall, rollout_id, attempt, event.wave),
                )
            elif event.kind is EventKind.HALTED:
                db.execute(
                    "UPDATE rollouts SET reason = ?, updated_at = ? WHERE id = ?",
                    (event.detail, wall, rollout_id),
                )
            if event.kind is EventKind.WAVE_STARTED:
                for iid in instances:
                    self._outcome(db, rollout_id, iid, "started", event, attempt, wall, None)
            elif event.kind is EventKind.SURGE_CREATED and len(instances) > 1:
                db.execute(
                    "UPDATE instance_outcomes SET replacement = ?, updated_at = ? "
                    "WHERE rollout_id = ? AND instance_id = ?",
                    (instances[1], wall, rollout_id, instances[0]),
                )
            elif event.kind in _RESOLUTION and instances:
                # (owner,) or, under surge, (owner, replacement): the outcome is the
                # owner's, the instance in the rollout's scope.
                replacement = instances[1] if len(instances) > 1 else None
                outcome = _RESOLUTION[event.kind]
                self._outcome(
                    db, rollout_id, instances[0], outcome, event, attempt, wall, replacement
                )

    @staticmethod
    def _outcome(
        db: sqlite3.Connection,
        rollout_id: str,
        instance_id: str,
        outcome: str,
        event: Event,
        attempt: int,
        wall: float,
        replacement: str | None,
    ) -> None:
        db.execute(
            "INSERT INTO instance_outcomes (rollout_id, instance_id, outcome, phase, attempt, "
            "wave, replacement, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (rollout_id, instance_id) DO UPDATE SET outcome = excluded.outcome, "
            "phase = excluded.phase, attempt = excluded.attempt, wave = excluded.wave, "
            "replacement = coalesce(excluded.replacement, "
            "CASE WHEN excluded.outcome = 'started' THEN NULL ELSE replacement END), "
            "detail = excluded.detail, updated_at = excluded.updated_at",
            (
                rollout_id,
                instance_id,
                outcome,
                event.phase,
                attempt,
                event.wave,
                replacement,
                event.detail,
                wall,
            ),
        )

    def _journal_event(
        self,
        db: sqlite3.Connection,
        rollout_id: str,
        attempt: int,
        kind: str,
        detail: str,
        now: float,
    ) -> None:
        db.execute(
            "INSERT INTO events (rollout_id, attempt, kind, phase, instances, wave, detail, "
            "time, wall_time) VALUES (?, ?, ?, '', '[]', NULL, ?, NULL, ?)",
            (rollout_id, attempt, kind, detail, now),
        )

    def note(self, rollout_id: str, kind: str, detail: str, now: float) -> None:
        """Record a journal event of the caller's own ``kind`` (e.g. the upgrade
        policy switched for the rollout), in the attempt this object drives."""
        now = _time(now, "now")
        with self._write() as db:
            _, attempt = self._writable(db, rollout_id)
            self._journal_event(db, rollout_id, attempt, kind, detail, now)

    def finish(self, rollout_id: str, state: str, reason: str, now: float) -> RolloutRecord:
        """End the rollout: ``state`` is "completed", "halted", "failed" or
        "interrupted" (as :meth:`mark_interrupted`)."""
        if state not in _FINAL_STATES:
            raise InputError(
                f"finish {rollout_id}: state must be one of {', '.join(_FINAL_STATES)}, "
                f"got {state!r}"
            )
        now = _time(now, "now")
        with self._write() as db:
            self._writable(db, rollout_id)
            db.execute(
                "UPDATE rollouts SET state = ?, reason = ?, finished_at = ?, updated_at = ? "
                "WHERE id = ?",
                (state, reason, now, now, rollout_id),
            )
            return self._require(db, rollout_id)

    def mark_interrupted(self, rollout_id: str, reason: str, now: float) -> RolloutRecord:
        """Ctrl-C or SIGTERM: the rollout stops being active (``resume`` picks it
        up). Records an "interrupted" event."""
        now = _time(now, "now")
        with self._write() as db:
            record, attempt = self._writable(db, rollout_id)
            if record.state == "running":
                self._stop(db, rollout_id, attempt, "interrupted", reason, now)
            return self._require(db, rollout_id)

    def _stop(
        self,
        db: sqlite3.Connection,
        rollout_id: str,
        attempt: int,
        state: str,
        reason: str,
        now: float,
    ) -> None:
        """End the rollout ``state`` ("interrupted", "abandoned") with a journal
        event of that kind."""
        db.execute(
            "UPDATE rollouts SET state = ?, reason = ?, finished_at = ?, updated_at = ? "
            "WHERE id = ?",
            (state, reason, now, now, rollout_id),
        )
        self._journal_event(db, rollout_id, attempt, state, reason, now)

    def adopt(
        self,
        rollout_id: str,
        now: float,
        *,
        driver: str = "",
        is_alive: Callable[[str], bool] | None = None,
    ) -> RolloutRecord:
        """``resume``: an interrupted, halted or still-"running" (its process was
        killed) rollout becomes running again as a new attempt, driven by this
        object (``driver``: ``user@host:pid``); records a "resumed" event.
        Refuses completed, failed and abandoned rollouts, a rollout whose scale
        set has another unfinished one, and a running rollout whose recorded
        driver ``is_alive(driver)`` says is still alive (a second ``resume``)."""
        now = _time(now, "now")
        with self._write() as db:
            record = self._require(db, rollout_id)
            if record.state not in _ADOPTABLE:
                raise InputError(
                    f"rollout {rollout_id} is {record.state}: only an interrupted, halted or "
                    "running rollout can be resumed"
                )
            refuse_live_driver(record, is_alive, "wait for it, or stop it (Ctrl-C) and resume then")
            running = self._unfinished(db, record.scale_set_id)
            if running is not None and running.id != rollout_id:
                raise ActiveRolloutError(record.scale_set_id, running)
            db.execute(
                "UPDATE rollouts SET state = 'running', reason = '', finished_at = NULL, "
                "attempt = attempt + 1, updated_at = ?, driver = ? WHERE id = ?",
                (now, driver, rollout_id),
            )
            attempt = int(
                db.execute("SELECT attempt FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()[0]
            )
            was = f"attempt {attempt}; was {record.state}" + (
                f": {record.reason}" if record.reason else ""
            )
            self._journal_event(db, rollout_id, attempt, "resumed", was, now)
            result = self._require(db, rollout_id)
        self._attempts[rollout_id] = attempt
        return result

    def abandon(
        self,
        rollout_id: str,
        reason: str,
        now: float,
        *,
        is_alive: Callable[[str], bool] | None = None,
    ) -> RolloutRecord:
        """``abandon``: an unfinished (running or interrupted) or halted rollout
        ends "abandoned"; nothing else changes. Refuses while its driver is
        alive (``is_alive``) and a rollout already finished otherwise."""
        now = _time(now, "now")
        with self._write() as db:
            record = self._require(db, rollout_id)
            if record.state not in _ADOPTABLE:
                raise InputError(f"rollout {rollout_id} is {record.state}: nothing to abandon")
            refuse_live_driver(record, is_alive, "stop it first (Ctrl-C), then abandon")
            attempt = int(
                db.execute("SELECT attempt FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()[0]
            )
            self._stop(db, rollout_id, attempt, "abandoned", reason, now)
            return self._require(db, rollout_id)

    # ------------------------------------------------------------------ operations
    def start_operation(
        self,
        *,
        scale_set_id: str,
        action: str,
        request: Mapping[str, Any],
        instances: list[str],
        now: float,
        driver: str = "",
    ) -> OperationRecord:
        """Record an operator command (``instances ACTION``, ``scale``) as
        running, before it asks Azure for anything."""
        now = _time(now, "now")
        ssid = scale_set_id.strip()
        if not ssid:
            raise InputError("scale set id: empty")
        if not action:
            raise InputError("operation: empty action")
        for _ in range(16):  # the id is time + 16 random bits: retry a collision
            op_id = _new_id(now, "o")
            with self._write() as db:
                if db.execute("SELECT 1 FROM operations WHERE id = ?", (op_id,)).fetchone():
                    continue
                db.execute(
                    "INSERT INTO operations (id, scale_set_id, scale_set_key, action, request, "
                    "instances, result, state, reason, started_at, finished_at, driver) "
                    "VALUES (?, ?, ?, ?, ?, ?, '{}', 'running', '', ?, NULL, ?)",
                    (
                        op_id,
                        ssid,
                        ssid.lower(),
                        action,
                        _json(dict(request), "request"),
                        _json(list(instances), "instances"),
                        now,
                        driver,
                    ),
                )
                return self._operation(db, op_id)
        raise RuntimeError("could not allocate a unique operation id")  # pragma: no cover

    def finish_operation(
        self,
        op_id: str,
        state: str,
        now: float,
        *,
        reason: str = "",
        result: Mapping[str, Any] | None = None,
        instances: list[str] | None = None,
    ) -> OperationRecord:
        """End a running operation: ``state`` is "completed", "requested"
        (returned without waiting), "failed" or "interrupted"; ``result`` what
        came of it, ``instances`` replaces the ids it named (a scale's added or
        removed instances, known only at its end)."""
        if state not in OPERATION_STATES or state == "running":
            raise InputError(
                f"finish {op_id}: state must be one of "
                f"{', '.join(s for s in OPERATION_STATES if s != 'running')}, got {state!r}"
            )
        now = _time(now, "now")
        with self._write() as db:
            record = self._operation(db, op_id)
            if record.state != "running":
                raise InputError(f"operation {op_id} is {record.state}: not recording")
            db.execute(
                "UPDATE operations SET state = ?, reason = ?, finished_at = ?, result = ?, "
                "instances = ? WHERE id = ?",
                (
                    state,
                    reason,
                    now,
                    _json(dict(result or {}), "result"),
                    _json(list(record.instances if instances is None else instances), "instances"),
                    op_id,
                ),
            )
            return self._operation(db, op_id)

    @staticmethod
    def _operation_record(row: sqlite3.Row) -> OperationRecord:
        # one column per field, the JSON ones decoded
        encoded = ("request", "instances", "result")
        return OperationRecord(
            **{
                f.name: json.loads(row[f.name]) if f.name in encoded else row[f.name]
                for f in fields(OperationRecord)
            }
        )

    def _operation(self, db: sqlite3.Connection, op_id: str) -> OperationRecord:
        row = db.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        if row is None:
            raise InputError(f"no operation {op_id!r} in journal {self.path}")
        return self._operation_record(row)

    def operations(self, scale_set_id: str | None = None, limit: int = 50) -> list[OperationRecord]:
        """Operations, newest first (of one scale set, or all)."""
        if limit < 1:
            raise InputError(f"limit: expected a count >= 1, got {limit}")
        where, params = "", []
        if scale_set_id is not None:
            where, params = "WHERE scale_set_key = ? ", [scale_set_id.strip().lower()]
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM operations {where}ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [self._operation_record(row) for row in rows]

    # ------------------------------------------------------------------ reads
    def get(self, rollout_id: str) -> RolloutRecord:
        with self._read() as db:
            return self._require(db, rollout_id)

    def active(self, scale_set_id: str) -> RolloutRecord | None:
        """The running rollout of this scale set (ARM ids match case-insensitively)."""
        with self._read() as db:
            return self._running(db, scale_set_id)

    def unfinished(self, scale_set_id: str) -> RolloutRecord | None:
        """The newest running or interrupted rollout of this scale set."""
        with self._read() as db:
            return self._unfinished(db, scale_set_id)

    def latest(self, scale_set_id: str) -> RolloutRecord | None:
        with self._read() as db:
            row = db.execute(
                _SELECT_RECORD
                + "WHERE r.scale_set_key = ? ORDER BY r.started_at DESC, r.rowid DESC LIMIT 1",
                (scale_set_id.strip().lower(),),
            ).fetchone()
        return None if row is None else self._record(row)

    def history(self, scale_set_id: str | None = None, limit: int = 50) -> list[RolloutRecord]:
        """Rollouts, newest first (of one scale set, or all)."""
        if limit < 1:
            raise InputError(f"limit: expected a count >= 1, got {limit}")
        where = ""
        params: tuple[str, ...] = ()
        if scale_set_id is not None:
            where = "WHERE r.scale_set_key = ? "
            params = (scale_set_id.strip().lower(),)
        with self._read() as db:
            rows = db.execute(
                _SELECT_RECORD + where + "ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [self._record(row) for row in rows]

    def instance_outcomes(self, rollout_id: str) -> dict[str, str]:
        """Instance id -> its latest outcome: "started", "done", "unhealthy",
        "failed" or "gone"."""
        with self._read() as db:
            self._require(db, rollout_id)
            rows = db.execute(
                "SELECT instance_id, outcome FROM instance_outcomes WHERE rollout_id = ?",
                (rollout_id,),
            ).fetchall()
        return {row["instance_id"]: row["outcome"] for row in rows}

    def waves(self, rollout_id: str) -> list[dict[str, Any]]:
        """``{"attempt", "wave", "phase", "action", "instances", "started_at",
        "completed_at"}`` per wave, in order (wall times; ``completed_at`` None
        while in flight)."""
        with self._read() as db:
            self._require(db, rollout_id)
            rows = db.execute(
                "SELECT * FROM waves WHERE rollout_id = ? ORDER BY attempt, wave", (rollout_id,)
            ).fetchall()
        return [
            {
                "attempt": row["attempt"],
                "wave": row["wave"],
                "phase": row["phase"],
                "action": row["action"],
                "instances": json.loads(row["instances"]),
                "started_at": row["started_at"],
                "completed_at": row["completed_at"],
            }
            for row in rows
        ]

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        """Every recorded event in order: ``{"seq", "attempt", "kind", "phase",
        "instances", "wave", "detail", "time", "wall_time"}``. Besides the
        engine's kinds, the journal's own "interrupted" and "resumed" (with
        ``time`` None)."""
        with self._read() as db:
            self._require(db, rollout_id)
            rows = db.execute(
                "SELECT * FROM events WHERE rollout_id = ? ORDER BY seq", (rollout_id,)
            ).fetchall()
        return [
            {
                "seq": row["seq"],
                "attempt": row["attempt"],
                "kind": row["kind"],
                "phase": row["phase"],
                "instances": json.loads(row["instances"]),
                "wave": row["wave"],
                "detail": row["detail"],
                "time": row["time"],
                "wall_time": row["wall_time"],
            }
            for row in rows
        ]
