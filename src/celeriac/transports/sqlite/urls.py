"""The SQLite URL the app keeps: the file's absolute path, so a worker that changes directory
(or a process started elsewhere) still opens the same file."""

from __future__ import annotations


def absolute_url(url: str) -> str:
    from .database import sqlite_path_from_url
    return "sqlite:///" + sqlite_path_from_url(url)
