"""Secret files: read once, re-read only when the file changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.secret_files import SecretFileError, WatchedFile


def test_unchanged_file_is_parsed_once(tmp_path: Path) -> None:
    """Repeated reads of an unchanged file reuse the parsed value."""
    path = tmp_path / "secret"
    path.write_text("one\n")
    parsed: list[str] = []
    watched = WatchedFile(path, lambda text: parsed.append(text) or text.upper())

    values = [watched.read() for _ in range(5)]

    assert values == ["ONE"] * 5
    assert parsed == ["one"]


def test_replaced_file_is_read_again(tmp_path: Path) -> None:
    """A rotated file (written beside and moved into place) gives the new value."""
    path = tmp_path / "secret"
    path.write_text("old\n")
    watched = WatchedFile(path, str)
    assert watched.read() == "old"

    staged = tmp_path / "secret.new"
    staged.write_text("new-and-longer\n")
    staged.replace(path)

    assert watched.read() == "new-and-longer"


def test_vanished_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    """A file that went away is reported with its path, never with its content."""
    path = tmp_path / "secret"
    path.write_text("s3cret-content\n")
    watched = WatchedFile(path, str)
    watched.read()
    path.unlink()

    with pytest.raises(SecretFileError) as caught:
        watched.read()

    assert str(path) in str(caught.value)
    assert "s3cret-content" not in str(caught.value)
