"""Atomic, byte-deterministic writes and the stages' one-line errors."""
import hashlib
import signal
import subprocess
import sys

import torch

from conftest import ROOT
from vgg import io


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saving_equal_content_twice_gives_equal_bytes(tmp_path):
    # torch.save(obj, path) names the archive after the file, here a random temp name, so equal
    # content gave new bytes each time and DVC re-ran everything downstream of a re-run stage.
    record = {"state_dict": {"w": torch.arange(12.0).view(3, 4), "b": torch.zeros(3)},
              "history": [{"epoch": 1, "val_top1": 80.5}], "net": "A"}
    io.atomic_save(record, tmp_path / "a.pt")
    io.atomic_save({k: v for k, v in record.items()}, tmp_path / "b.pt")
    io.atomic_save(record, tmp_path / "a.pt")  # again over itself
    assert digest(tmp_path / "a.pt") == digest(tmp_path / "b.pt")
    loaded = io.load(tmp_path / "a.pt")
    assert torch.equal(loaded["state_dict"]["w"], record["state_dict"]["w"])
    io.atomic_save({**record, "net": "B"}, tmp_path / "c.pt")
    assert digest(tmp_path / "c.pt") != digest(tmp_path / "a.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "c.pt"]  # no temp files left


def test_replace_dir_swaps_a_written_directory_in(tmp_path):
    target = tmp_path / "logs"
    target.mkdir()
    (target / "old.json").write_text("old")
    new = io.temp_dir_beside(target)
    (new / "metrics.json").write_text("new")
    io.replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["metrics.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_sigterm_ends_a_stage_with_one_error_line_and_dies_of_the_signal(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from vgg import io\n"
        "@io.stage_main\n"
        "def main():\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        open(sys.argv[1], 'w').write('cleaned up')\n"
        "main()\n")
    marker = tmp_path / "finally"
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # as a killed command: DVC and shells see the signal
    assert err.strip().splitlines() == ["error: stage: stopped by SIGTERM; nothing written"]
    assert marker.read_text() == "cleaned up"  # every `finally` ran: temp files are removed
