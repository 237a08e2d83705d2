"""End to end: the real `dvc repro` of the real stages on a few hundred real images."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, tiny_params, write_params

pytestmark = pytest.mark.slow
RUNS = ["A_256", "A-LRN_256", "B_256", "B-5x5_256", "C_256", "D_256", "E_256", "C_384", "D_384", "E_384",
        "C_256-512", "D_256-512", "E_256-512"]
SEEDS = tiny_params()["seeds"]


def sh(cmd, cwd, env, check=True):
    result = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of this repository (as git sees it) with tiny params, after one `dvc repro`."""
    tmp = tmp_path_factory.mktemp("pipeline")
    repo = tmp / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    write_params(repo / "params.yaml", tiny_params())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site"),
           "VGG_CHECKPOINT_DIR": str(tmp / "ckpt"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PYTHONPATH", None)
    sh("git init -q && git add -A && git commit -qm tiny", repo, env)
    result = sh("dvc repro", repo, env)
    return repo, env, result.stdout


def test_repro_trains_every_model_of_every_seed_with_metrics_and_curves(repo):
    path, _, _ = repo
    for seed in SEEDS:
        for run in RUNS:
            assert (path / "models" / f"seed{seed}" / f"{run}.pt").is_file(), run
            logs = path / "logs" / f"seed{seed}" / run
            metrics = json.loads((logs / "metrics.json").read_text())
            assert 0 <= metrics["val_top1_err"] <= 100, run
            assert metrics["stopped_by"] in ("plateau", "epoch cap"), run
            assert (logs / "plots" / "metrics" / "val_top1_err.tsv").is_file(), run
    # Seeds are different trainings of the same net on the same data.
    a0, a1 = (torch.load(path / "models" / f"seed{k}" / "A_256.pt", weights_only=False) for k in SEEDS[:2])
    assert not torch.equal(a0["state_dict"]["features.0.weight"], a1["state_dict"]["features.0.weight"])
    assert a1["params"]["replicate"] == SEEDS[1] and a1["params"]["hp"]["seed"] == a0["params"]["hp"]["seed"] + 1000


def test_b_to_e_start_from_a_weights_of_their_own_seed(repo):
    path, _, _ = repo
    for seed in SEEDS:
        a = torch.load(path / "models" / f"seed{seed}" / "A_256.pt", weights_only=False)["state_dict"]
        for net in "BCDE":
            init = torch.load(path / "models" / f"seed{seed}" / "init" / f"{net}.pt", weights_only=False)
            assert init["copied_from_a"] == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
            state = init["state_dict"]
            assert torch.equal(state["features.0.weight"], a["features.0.weight"]), net
            assert torch.equal(state["classifier.6.weight"], a["classifier.6.weight"]), net
            trained = torch.load(path / "models" / f"seed{seed}" / f"{net}_256.pt", weights_only=False)
            assert trained["init_file"] == f"models/seed{seed}/init/{net}.pt"


def test_second_repro_runs_nothing(repo):
    path, env, _ = repo
    out = sh("dvc repro", path, env).stdout
    # Only the dataset's file list is re-read (always_changed); it is unchanged, so nothing else runs.
    assert [line for line in out.splitlines() if line.startswith("Running stage")] == ["Running stage 'manifest':"]


def stages_to_run(path, env, key, value):
    params = yaml.safe_load((path / "params.yaml").read_text())
    section, name = key.split(".")
    original = params[section][name]
    params[section][name] = value
    write_params(path / "params.yaml", params)
    try:
        out = sh("dvc repro --dry", path, env).stdout
    finally:
        params[section][name] = original
        write_params(path / "params.yaml", params)
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_changing_train_lr_reruns_the_from_scratch_stages(repo):
    path, env, _ = repo
    stages = stages_to_run(path, env, "train.lr", 0.005)
    assert {"train_scratch@A-0", "train_scratch@A-LRN-1", "train_256@E-0", "finetune_jitter@E-1"} <= stages
    assert "prepare" not in stages and "mean_rgb" not in stages


def test_changing_finetune_lr_does_not_retrain_a(repo):
    path, env, _ = repo
    stages = stages_to_run(path, env, "finetune.lr", 0.002)
    assert {f"finetune_384@{net}-{seed}" for net in "CDE" for seed in SEEDS} <= stages
    assert not any(s.startswith(("train_scratch", "train_256", "init_from_a")) for s in stages)


def test_repro_renders_every_table_and_metric(repo):
    path, _, _ = repo
    reports = path / "reports"
    for name in ["table1.md", "table2.md", "table3.md", "table4.md", "table5.md", "table6.md", "table7.md",
                 "claims.md", "README.md", "training_curves.png", "error_vs_depth.png", "error_vs_test_scale.png"]:
        assert (reports / name).is_file() and (reports / name).stat().st_size > 0, name
    metrics = json.loads((path / "metrics" / "tables.json").read_text())
    for key in ["table3.A.S256.Q256.top1", "table3.D.S256-512.Q384.top1", "table3.E.S256-512.Q384.top5",
                "table4.D.S256-512.Q256_384_512.top1", "table5.E.S256-512.multi-crop+dense.top1",
                "table6.DE_multi-crop+dense.top1", "table7.ours_1net.top1"]:
        assert 0 <= metrics[key] <= 100, key
    claims = (reports / "claims.md").read_text()
    assert any(v in claims for v in ("reproduced", "contradicted", "inconclusive"))
    errors = []
    for seed in SEEDS:
        for run in RUNS:
            assert (path / "preds" / f"seed{seed}" / run / ("centre.pt" if run == "B-5x5_256" else "dense.pt")).is_file()
        record = torch.load(path / "preds" / f"seed{seed}" / "A_256" / "dense.pt", weights_only=False)
        top1 = record["posteriors"][256].argmax(1)
        errors.append(100.0 * (top1 != record["labels"]).double().mean().item())
    # Table 3's row for A is the mean over seeds of the errors recomputed from the saved posteriors.
    assert metrics["table3.A.S256.Q256.top1"] == pytest.approx(sum(errors) / len(errors), abs=1e-3)
    assert metrics["table3.A.S256.Q256.top1_sd"] == pytest.approx(float(torch.tensor(errors).std()), abs=1e-3)
    frame = (path / "reports" / "claims.csv").read_text()
    assert "b_beats_b5x5" in frame and f"/{len(SEEDS)}," in frame


def test_classification_claims_script_writes_the_reports_tables_and_claims(repo):
    path, env, _ = repo
    sh(f"python -m scripts.classification_claims --out {path / 'runs' / 'same'}", path, env)
    for name in ("table3.csv", "table4.csv", "table5.csv", "table6.csv", "claims.csv"):
        assert (path / "runs" / "same" / name).read_text() == (path / "reports" / name).read_text(), name
    shutil.rmtree(path / "runs")


def test_run_cache_restores_an_evaluation_instead_of_running_it_again(repo):
    # Posteriors are cached outs and numbers metrics (no cache: false outs): going back to old
    # params restores the stage's outputs from DVC's run cache, never recomputes them.
    path, env, _ = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    before = (path / "preds" / "seed0" / "A_256" / "dense.pt").read_bytes()
    batch = params["evaluate"]["batch_size"]
    params["evaluate"]["batch_size"] = batch + 1
    write_params(path / "params.yaml", params)
    assert "Running stage 'evaluate_dense@A_256-0'" in sh("dvc repro -s evaluate_dense@A_256-0", path, env).stdout
    params["evaluate"]["batch_size"] = batch
    write_params(path / "params.yaml", params)
    out = sh("dvc repro -s evaluate_dense@A_256-0", path, env).stdout
    assert "skipping run, checking out outputs" in out and "Running stage" not in out
    assert (path / "preds" / "seed0" / "A_256" / "dense.pt").read_bytes() == before


def test_a_one_seed_run_reruns_only_the_report(repo):
    # `dvc exp run -S 'seeds=[0]'`, the quick first look: every seed-0 stage is up to date, so only
    # the report (which reads `seeds`) runs; seed 1's stages leave the pipeline, none runs again.
    path, env, _ = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    write_params(path / "params.yaml", {**params, "seeds": [SEEDS[0]], "localisation_seeds": [SEEDS[0]]})
    try:
        out = sh("dvc repro --dry", path, env).stdout
    finally:
        write_params(path / "params.yaml", params)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"manifest", "report"}, ran


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def files_under(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_sigterm_during_repro_keeps_the_previous_logs_and_a_rerun_writes_the_same_model_bytes(repo):
    # DVC deletes a stage's outputs before running it unless they are persisted (the logs are), and
    # the trainer replaces its logs only once the model is saved: a SIGTERM to `dvc repro` and its
    # stage (as `timeout` or a CI runner sends it to the process group) leaves the committed logs.
    path, env, _ = repo
    sh("git add -A && git commit -qm 'after the first repro'", path, env)
    model, logs = (path / "models" / "seed0" / "A_256.pt").read_bytes(), files_under(path / "logs" / "seed0" / "A_256")
    params = yaml.safe_load((path / "params.yaml").read_text())
    write_params(path / "params.yaml", {**params, "train": {**params["train"], "epochs": 500}})
    output = path.parent / "sigterm.log"
    with open(output, "w") as out:
        proc = subprocess.Popen("dvc repro -s train_scratch@A-0", shell=True, cwd=path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while "seed0/A_256 epoch 2:" not in output.read_text() and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, output.read_text()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
        deadline = time.monotonic() + 120
        while group_alive(proc.pid) and time.monotonic() < deadline:  # DVC dies at once; the stage cleans up
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = output.read_text()
    assert proc.returncode != 0
    stopped = [line for line in text.splitlines() if line.startswith("error: train: stopped by SIGTERM")]
    assert len(stopped) == 1 and "A_256" in stopped[0], text
    assert "Traceback" not in text, text
    assert files_under(path / "logs" / "seed0" / "A_256") == logs
    assert sh("git status --porcelain logs/", path, env).stdout == ""

    # Back to the committed params: persisted outputs give the stage no run-cache entry, so it
    # trains again; equal weights now give equal bytes, so nothing downstream is out of date.
    write_params(path / "params.yaml", params)
    assert "Running stage 'train_scratch@A-0'" in sh("dvc repro -s train_scratch@A-0", path, env).stdout
    assert (path / "models" / "seed0" / "A_256.pt").read_bytes() == model
    ran = [line for line in sh("dvc repro", path, env).stdout.splitlines() if line.startswith("Running stage")]
    # Only the report reads the logs (their wall time): no init, training or evaluation runs again.
    assert ran == ["Running stage 'manifest':", "Running stage 'report':"], ran


def test_repro_localises_with_tables_8_and_9_recomputable_from_saved_boxes(repo):
    path, env, _ = repo
    from vgg.localisation import paired_iou
    for name in ["localisation.md", "table8.csv", "table9.csv", "localisation_samples.png"]:
        assert (path / "reports" / name).is_file(), name
    metrics = json.loads((path / "metrics" / "tables.json").read_text())
    page = (path / "reports" / "localisation.md").read_text()
    assert "## Training" in page and "final val loc. error (%)" in page
    # Table 8's error is the share of saved centre-crop boxes with IoU <= 0.5, recomputed independently
    # for each seed's net (a localisation net per seed, from D of that seed) and averaged over the seeds.
    for run in ["SCR-fc_256", "PCR-fc_256", "PCR-all_256", "SCR-fc_384", "PCR-fc_384", "PCR-all_384"]:
        errs = []
        for seed in SEEDS:
            saved = torch.load(path / "preds" / f"seed{seed}" / "loc" / f"{run}.pt", weights_only=False)
            assert saved["replicate"] == seed, (run, seed)
            errs.append(100.0 * (paired_iou(saved["boxes"].double(), saved["true_boxes"].double()) <= 0.5).double().mean())
            log = path / "logs" / f"seed{seed}" / f"loc_{run}" / "metrics.json"
            # The page's training table says how each localisation run ended (plateau or epoch cap).
            summary = json.loads(log.read_text())
            row = next(line for line in page.splitlines() if line.startswith(f"| loc_{run} ")
                       and line.split("|")[2].strip() == str(seed))
            assert summary["stopped_by"] in row, row
        assert metrics[f"loc.table8.{run}.err"] == pytest.approx(float(sum(errs) / len(errs)), abs=1e-3), run
    models = [torch.load(path / "models" / f"seed{seed}" / "loc" / "PCR-all_384.pt", weights_only=False)
              for seed in SEEDS]
    assert [m["init_file"] for m in models] == [f"models/seed{seed}/D_384.pt" for seed in SEEDS]
    # Each seed's localisation net keeps its own checkpoint, so an interrupted one resumes as its own.
    ckpt = Path(env["VGG_CHECKPOINT_DIR"])
    assert all((ckpt / f"seed{seed}" / "loc" / "PCR-all_384" / "last.pt").is_file() for seed in SEEDS)
    dense = torch.load(path / "preds" / f"seed{SEEDS[0]}" / "loc" / "dense.pt", weights_only=False)
    assert set(dense["rows"]) == {"256/256", "384/384", "384/352,384", "fusion 256/256 + 384/352,384"}
    assert {"loc.table9.fusion.top5", "loc.claims.pcr_beats_scr.diff"} <= set(metrics)


def test_repro_writes_table_11_and_a_transfer_param_reruns_only_transfer_stages(repo):
    path, env, _ = repo
    assert (path / "reports" / "table11.md").is_file() and (path / "reports" / "table11.csv").is_file()
    # Table 11 is the mean over the seeds' nets; each seed's transfer stages wrote their own metrics.
    for seed in SEEDS:
        metrics = json.loads((path / "metrics" / "transfer" / f"seed{seed}" / "scenes.json").read_text())
        assert any(key.startswith("scenes.DE.") for key in metrics)
    t11 = pd.read_csv(path / "reports" / "table11.csv", index_col=0)
    maps = [json.loads((path / "metrics" / "transfer" / f"seed{seed}" / "scenes.json").read_text())[
        "scenes.DE.average.map"] for seed in SEEDS]
    assert t11.loc["table11.DE.average", "scene mAP (ours)"] == pytest.approx(sum(maps) / len(maps), abs=1e-3)
    claims = pd.read_csv(path / "reports" / "claims_transfer.csv", index_col=0)
    assert (claims["n_seeds"] == len(SEEDS)).all()
    # (`manifest` always runs; --dry lists the stages whose own deps changed: the report, and after new
    # features the SVMs, follow only once their inputs have changed.)
    assert stages_to_run(path, env, "transfer.svm_C", [0.1, 1]) - {"manifest"} == {
        *(f"transfer_scenes@{seed}" for seed in SEEDS), "transfer_garment_scenes"}
    assert stages_to_run(path, env, "transfer.fewshot_svm_C", [0.1, 1]) - {"manifest"} == {
        *(f"transfer_fewshot@{seed}" for seed in SEEDS), "transfer_garment_fewshot"}
    described = stages_to_run(path, env, "transfer.scales", [256, 384]) - {"manifest"}
    assert described == {f"features_{t}@{seed}" for t in ("scenes", "fewshot") for seed in SEEDS} | {
        "features_garment_scenes", "features_garment_fewshot"}
    assert not any(s.startswith(("train", "evaluate", "fuse", "localise")) for s in described)


def plain_greedy_merge(boxes, scores, threshold):
    """OverFeat's greedy merging written again with plain Python lists, for checking saved results."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        area = lambda box: max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
        union = area(a) + area(b) - w * h
        return w * h / union if union > 0 else 0.0
    items = [[list(map(float, b)), float(s), 1] for b, s in zip(boxes, scores)]
    while len(items) > 1:
        best, pair = -1.0, None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                v = iou(items[i][0], items[j][0])
                if v > best:
                    best, pair = v, (i, j)
        if best <= threshold:
            break
        (bi, si, ni), (bj, sj, nj) = items[pair[0]], items[pair[1]]
        items[pair[0]] = [[(x * ni + y * nj) / (ni + nj) for x, y in zip(bi, bj)], si + sj, ni + nj]
        del items[pair[1]]
    return max(items, key=lambda item: item[1])[0]


def test_saved_dense_localisation_matches_an_independent_greedy_merge(repo):
    path, _, _ = repo
    dense = torch.load(path / "preds" / f"seed{SEEDS[-1]}" / "loc" / "dense.pt", weights_only=False)
    fused = dense["rows"]["fusion 256/256 + 384/352,384"]
    parts = [dense["candidates"][k] for k in ("256/256", "384/352", "384/384")]
    # Each classification net counted once: D_256 at its one scale, D_384 averaged over its two.
    posterior = (parts[0]["posteriors"] + (parts[1]["posteriors"] + parts[2]["posteriors"]) / 2) / 2
    assert torch.equal(fused["classes"][:len(posterior)], posterior.topk(dense["top_k"], dim=1).indices)
    for i in range(min(20, len(posterior))):
        top = int(posterior[i].argmax())
        assert top == int(fused["classes"][i, 0])
        boxes = [b for p in parts for b in p["boxes"][i][:, top].tolist()]
        scores = [s for p in parts for s in p["scores"][i][:, top].tolist()]
        expected = plain_greedy_merge(boxes, scores, dense["merge_iou"])
        assert fused["boxes"][i, 0].tolist() == pytest.approx(expected, abs=1e-3), i
