import os

import yaml
from dvc.repo import Repo

from scripts import stage_times


def dvc_project(path, stages, lock):
    """A DVC project (no git) at `path` whose dvc.yaml holds `stages` (name -> None, or a foreach list)
    and whose dvc.lock holds `lock` (entries given a `cmd`, which DVC's schema requires)."""
    Repo.init(str(path), no_scm=True).close()
    for entry in lock["stages"].values():
        entry.setdefault("cmd", "x")
    (path / "dvc.lock").write_text(yaml.safe_dump(lock))
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        name: {"cmd": "x"} if keys is None else {"foreach": keys, "do": {"cmd": "x ${item}"}}
        for name, keys in stages.items()}}))


def test_stage_times_are_gaps_between_output_write_times(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "preds" / "D").mkdir(parents=True)
    written = {"data/old.pt": 500, "data/prepared.pt": 1000, "models/A_256.pt": 1100, "preds/D/dense.pt": 1130, "reports/x.md": 1135}
    for path, mtime in written.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
        os.utime(tmp_path / path, (mtime, mtime))
    lock = {"schema": "2.0", "stages": {
        "report": {"outs": [{"path": "reports"}]},
        "mean_rgb": {"outs": [{"path": "data/old.pt"}]},  # not run by this repro: written before --start
        "fuse@old": {"outs": [{"path": "reports"}]},  # a removed stage's lock entry
        "prepare": {"outs": [{"path": "data/prepared.pt"}]},
        "evaluate_dense@D_256": {"outs": [{"path": "preds"}]},  # a directory: its newest file
        "train_scratch@A": {"outs": [{"path": "models/A_256.pt"}, {"path": "gone.json"}]},
        # A removed foreach key's entry whose output a current stage writes: not timed twice.
        "train_scratch@A-old": {"outs": [{"path": "models/A_256.pt"}]},
    }}
    dvc_project(tmp_path, {"report": None, "mean_rgb": None, "prepare": None, "evaluate_dense": ["D_256"],
                           "train_scratch": ["A"]}, lock)
    stage_times.main(["--start", "990"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.split("\n\n")[0].splitlines()] == [
        "prepare", "train_scratch@A", "evaluate_dense@D_256", "report"]
    assert "train_scratch@A" in out and " 100.0 s" in out and "  30.0 s" in out
    parts = dict((line.rsplit(None, 2)[0].strip(), float(line.rsplit(None, 2)[1]))
                 for line in out.split("\n\n")[1].splitlines())
    assert parts == {"data + init": 10.0, "classification training": 100.0,
                     "classification evaluation + fusion": 30.0, "report": 5.0, "total": 145.0}
    # No stage of this lock has a seed: all of its time is shared.
    assert out.split("\n\n")[2].split() == ["shared", "stages", "145.0", "s"]


def test_time_per_seed_and_shared_stages(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = {"d.pt": 1010, "a0.pt": 1110, "a1.pt": 1230, "f1.pt": 1235, "loc.pt": 1300, "x.pt": 1301, "r.md": 1302}
    for path, mtime in written.items():
        (tmp_path / path).write_text("x")
        os.utime(tmp_path / path, (mtime, mtime))
    lock = {"schema": "2.0", "stages": {
        "prepare": {"outs": [{"path": "d.pt"}]}, "train_scratch@A-LRN-0": {"outs": [{"path": "a0.pt"}]},
        "train_scratch@A-LRN-1": {"outs": [{"path": "a1.pt"}]}, "fuse_DE_dense@1": {"outs": [{"path": "f1.pt"}]},
        "train_loc@PCR-all-256-1": {"outs": [{"path": "loc.pt"}]}, "features_scenes@D": {"outs": [{"path": "x.pt"}]},
        "report": {"outs": [{"path": "r.md"}]}}}
    dvc_project(tmp_path, {"prepare": None, "train_scratch": ["A-LRN-0", "A-LRN-1"], "fuse_DE_dense": [1],
                           "train_loc": ["PCR-all-256-1"], "features_scenes": ["D"], "report": None}, lock)
    stage_times.main(["--start", "1000"])
    seeds = capsys.readouterr().out.split("\n\n")[2].splitlines()
    assert [line.rsplit(None, 2)[0].strip() for line in seeds] == ["shared stages", "seed 0", "seed 1"]
    # A localisation net belongs to its seed; transfer's features (the first seed's nets) are shared.
    assert [float(line.split()[-2]) for line in seeds] == [10.0 + 1.0 + 1.0, 100.0, 125.0 + 65.0]
