"""Secrets and keys kept in files, re-read when the file changes.

Mounted secrets (Kubernetes, Docker, Vault agents) are rotated by replacing the file.
A ``WatchedFile`` notices the change by its stat signature and reads the new content
on next use, so a rotated client secret or key needs no restart, while an unchanged
file costs one ``stat`` instead of a read and a parse.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class SecretFileError(Exception):
    """A secret file cannot be read or holds nothing; the message names the path."""


def read_secret_file(path: Path) -> str:
    """The file's text without surrounding whitespace; refuses an empty file."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretFileError(f"cannot read {path}: {reason}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not UTF-8 text") from None
    if not text:
        raise SecretFileError(f"{path} is empty")
    return text


class WatchedFile(Generic[T]):
    """A file's content turned into ``T`` by ``parse``, redone only after a change.

    When the file becomes unreadable after a good read, ``SecretFileError`` is raised:
    the caller decides whether an old value may still serve.
    """

    def __init__(self, path: Path, parse: Callable[[str], T]) -> None:
        self.path = path
        self._parse = parse
        self._signature: tuple[int, int, int] | None = None
        self._value: T | None = None

    def read(self) -> T:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SecretFileError(f"cannot read {self.path}: {reason}") from None
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if signature != self._signature or self._value is None:
            self._value = self._parse(read_secret_file(self.path))
            self._signature = signature
        return self._value
