"""Spool files: the cheap durable record of the calls of an execution this process is running.

An SQLite commit costs 60-130 microseconds between two requests (the file's pages and SQLite's
own code are cold by then), and the ledger pays one before every send. A spool file is written
instead: while a process runs an execution, each state change of one of its calls is one JSON
line appended to that run's own file with a single ``write`` system call. Once ``write``
returns, the line is in the operating system's hands, exactly as far as an SQLite commit in WAL
mode with ``synchronous = NORMAL`` is: it survives the process being killed, not the machine
losing power.

The lines are folded into the database (see ``SQLiteLedger``) at the run's end, every
:data:`FOLD_EVERY` lines, and by any reader before it reads the execution, so every reader sees
them. Each file records how far it has been folded in the database itself (the ``spools``
table), in the same transaction as the rows it folded, so every line is applied exactly once
however many processes fold at the same time. The running process holds an exclusive ``flock``
on its file; the system drops it when the process dies, which tells a reader that a file's
writer is gone and that the file can be removed once folded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

__all__ = ["FOLD_EVERY", "Spool", "read_lines", "spool_dir", "spool_files", "writer_gone"]

_log = logging.getLogger(__name__)

#: Lines a running process writes before it folds its own file into the database.
FOLD_EVERY: Final = 1000
#: File names end so; the part before the dash names the execution (see :func:`_tag`).
_SUFFIX: Final = ".spool"


def spool_dir(ledger_path: Path) -> Path:
    """The folder of the spool files of the ledger at ``ledger_path``."""
    return ledger_path.with_name(ledger_path.name + "-spool")


def _tag(execution_id: str) -> str:
    return hashlib.sha256(execution_id.encode("utf-8")).hexdigest()[:32]


def spool_files(directory: Path, execution_id: str | None = None) -> list[Path]:
    """The spool files in ``directory``: all of them, or those of one execution."""
    prefix = "" if execution_id is None else _tag(execution_id) + "-"
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        Path(entry.path)
        for entry in entries
        if entry.name.endswith(_SUFFIX) and entry.name.startswith(prefix)
    )


def read_lines(path: Path, offset: int) -> tuple[list[list[Any]], int]:
    """The complete records of ``path`` after byte ``offset``, and the offset after the last of
    them. A line still being written (no newline yet) is left for the next reader; a line that
    is not JSON (a write cut short by a full disk) is skipped with a warning."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records: list[list[Any]] = []
    for line in data[:end].split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, list) and record:
            records.append(record)
        else:
            _log.warning("%s: skipped a damaged line of %d bytes", path, len(line))
    return records, offset + end


@contextlib.contextmanager
def writer_gone(path: Path) -> Iterator[bool]:
    """Yields whether the process that wrote ``path`` is gone (its lock could be taken), and
    holds that lock until the ``with`` block ends. A file that cannot be opened or locked
    (already removed, no permission) counts as still written: it is left alone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


class Spool:
    """The spool file of one run of ``execution_id``, and the states of the execution's calls.

    - ``directory``: where the file goes (it must exist: ``SQLiteLedger.claim`` makes it)
    - ``states``: each recorded call's state by sequence number, so that the rules the database
      would enforce (no second call with a number, only the allowed state changes) are checked
      here before a line is written

    Raises ``OSError`` when the file cannot be made. Lines are written by :meth:`write`, under
    :attr:`lock`, which the caller holds while it checks and changes :attr:`states`.
    """

    def __init__(self, directory: Path, execution_id: str, states: dict[int, str]) -> None:
        self.execution_id = execution_id
        self.name = f"{_tag(execution_id)}-{secrets.token_hex(8)}{_SUFFIX}"
        self.path = directory / self.name
        self.fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise
        self.states = dict(states)
        self.lines = 0
        self._torn = False
        self.lock = threading.Lock()

    def write(self, record: list[Any]) -> None:
        """Append one record as a line; ``OSError`` when the system did not take all of it."""
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        if self._torn:
            # Ends the torn line before it with a byte no JSON text ends with, so that a reader
            # skips it even when all of it but its newline had been written.
            data = b"!\n" + data
        written = os.write(self.fd, data)
        if written != len(data):
            # A full disk. The part written has no newline yet (JSON text holds none), so no
            # reader has taken it: cut it off, or failing that, end it before the next line.
            try:
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - written)
            except OSError:
                self._torn = True
            raise OSError(f"only {written} of {len(data)} bytes of a record were written")
        self._torn = False
        self.lines += 1

    @property
    def open(self) -> bool:
        return self.fd >= 0

    def close(self) -> None:
        """Close the file (which drops its lock unless a forked process shares it); closing
        twice is harmless."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
