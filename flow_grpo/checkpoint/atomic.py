"""Writes that either happen completely or not at all: write to a temporary sibling, fsync, rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def atomic_write_json(path: str, obj, indent: int | None = 2) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=False) + "\n").encode("utf-8"))


def atomic_publish_dir(tmp_dir: str, final_dir: str) -> None:
    """Move a fully written folder into place. An existing ``final_dir`` is replaced only after the rename."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    if os.path.exists(final_dir):
        trash = tempfile.mkdtemp(dir=parent, prefix=".old-" + os.path.basename(final_dir) + ".")
        os.rmdir(trash)
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    _fsync_dir(parent)
