"""Atomic file writes and the one-line error convention every stage shares."""
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch


class StageError(Exception):
    """Bad input (a param, a file): reported as one line naming the culprit, exit status 2."""


def _temp_path(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_save(obj, path):
    """torch.save to a temp file, then rename: a reader never sees a half-written file."""
    tmp = _temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text, path):
    tmp = _temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(obj, path):
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def replace_dir(tmp_dir, path):
    """Move a fully written temp directory into place, replacing any older one."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp_dir, path)


def temp_dir_beside(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))


def load(path, what="file"):
    """torch.load with a one-line error naming the file when it is missing or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise StageError(f"{path}: {what} not found") from None
    except Exception as exc:  # a truncated or foreign file
        raise StageError(f"{path}: cannot read {what} ({exc.__class__.__name__})") from None


def read_json(path, what="file"):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: invalid JSON ({exc.msg})") from None


def stage_main(fn):
    """Wrap a stage's main(): StageError becomes 'error: ...' on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    return wrapper
