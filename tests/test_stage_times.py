import os

import yaml

from scripts import stage_times


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
    }}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    defined = ["report", "mean_rgb", "prepare", "evaluate_dense", "train_scratch"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {name: {"cmd": "x"} for name in defined}}))
    stage_times.main(["--start", "990"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.split("\n\n")[0].splitlines()] == [
        "prepare", "train_scratch@A", "evaluate_dense@D_256", "report"]
    assert "train_scratch@A" in out and " 100.0 s" in out and "  30.0 s" in out
    parts = dict((line.rsplit(None, 2)[0].strip(), float(line.rsplit(None, 2)[1]))
                 for line in out.split("\n\n")[1].splitlines())
    assert parts == {"data + init": 10.0, "classification training": 100.0,
                     "classification evaluation + fusion": 30.0, "report": 5.0, "total": 145.0}
