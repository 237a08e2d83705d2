"""Atomic file writes and the one-line error convention every stage shares."""
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import torch


class StageError(Exception):
    """Bad input (a param, a file): reported as one line naming the culprit, exit status 2."""


class Interrupted(Exception):
    """SIGTERM or SIGINT reached a stage: raised where it was, so every `finally` removes its temp
    files; `detail` says what was kept (set by whoever knows, e.g. the trainer)."""

    def __init__(self, signum, detail="nothing written"):
        super().__init__(signum)
        self.signum, self.detail = signum, detail


def _temp_path(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_save(obj, path):
    """torch.save to a temp file, then rename: a reader never sees a half-written file.

    Saved through an open file, so the archive's inner name is torch's fixed "archive", not the
    temp file's random one: equal content gives equal bytes, and DVC sees an unchanged output."""
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
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
    """Move a fully written temp directory into place, replacing any older one: two renames with
    SIGTERM and SIGINT held back, so no signal finds `path` missing."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp_dir, path)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    shutil.rmtree(old, ignore_errors=True)


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


def stage_name(fn):
    """`train` for stages/train.py's main, run as `python -m stages.train` (module __main__) or not."""
    spec = getattr(sys.modules.get(fn.__module__), "__spec__", None)
    if spec is not None:
        return spec.name.rsplit(".", 1)[-1]
    return Path(sys.argv[0]).stem if fn.__module__ == "__main__" else fn.__module__.rsplit(".", 1)[-1]


def stage_main(fn):
    """Wrap a stage's main(): StageError becomes 'error: ...' on stderr and exit status 2; SIGTERM
    and SIGINT become one 'error: ...' line, after which the stage dies of that signal (as a shell
    and DVC expect of a killed command)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        def interrupt(signum, _frame):
            raise Interrupted(signum)
        handlers = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return fn(*args, **kwargs)
        except StageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as exc:
            print(f"error: {stage_name(fn)}: stopped by {signal.Signals(exc.signum).name}; {exc.detail}",
                  file=sys.stderr, flush=True)
            signal.signal(exc.signum, signal.SIG_DFL)
            os.kill(os.getpid(), exc.signum)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return wrapper
