"""scripts/check_disk.py: `make setup` stops in one line when a new venv would not fit."""
import collections
import shutil

import pytest

from scripts import check_disk

Usage = collections.namedtuple("Usage", "total used free")


def test_full_disk_fails_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * 2**30, 10 * 2**30 - 2**28, 2**28))
    monkeypatch.setattr(check_disk.platform, "machine", lambda: "x86_64")
    with pytest.raises(SystemExit) as stop:
        check_disk.main([str(tmp_path / "new" / ".venv")])  # the venv's folder need not exist yet
    assert str(stop.value) == f"error: {tmp_path}: 0.2 GiB free, a new venv (.venv) needs about 7 GiB"


def test_room_enough_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 * 2**30, 0, 8 * 2**30))
    monkeypatch.setattr(check_disk.platform, "machine", lambda: "x86_64")
    check_disk.main([str(tmp_path / ".venv")])
    monkeypatch.setattr(check_disk.platform, "machine", lambda: "aarch64")  # a CPU build: 2 GiB do
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 * 2**30, 0, 3 * 2**30))
    check_disk.main([str(tmp_path / ".venv")])
