"""Tables 3-7 and the claims are computed from saved posteriors, row for row in the paper's order."""
import copy
import io as stdio
import json
import shutil
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import stages.fuse
import stages.report
from test_transfer import run_features_and_transfer
from vgg import data, fusion, stats, tables, transfer
from vgg.paper import PAPER_DIR, classification_rows
from vgg.io import StageError
from vgg.params import load_params

REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
RUNS = ["A_256", "A-LRN_256", "B_256", "B-5x5_256", "C_256", "C_384", "C_256-512", "D_256", "D_384", "D_256-512",
        "E_256", "E_384", "E_256-512"]
MULTI_CROP = ("D_256-512", "E_256-512")
CENTRE = ("B_256", "B-5x5_256")  # §4.1; B-5x5 has no dense evaluation (it is in no table)
SEEDS = [0, 1]  # two trainings of every net, as the report reads them (preds/seed<k>/, logs/seed<k>/)
DE = ["D/256-512/256;384;512", "E/256-512/256;384;512"]
# The fuse section proposed for params.yaml: Table 6's ensembles.
ENSEMBLES = {
    "ilsvrc7": {"members": ["D/256/224;256;288", "D/384/352;384;416", "D/256-512/256;384;512",
                            "C/256/224;256;288", "C/384/352;384;416", "E/256/224;256;288",
                            "E/384/352;384;416"], "protocol": "dense"},
    "DE_dense": {"members": DE, "protocol": "dense"},
    "DE_multi-crop": {"members": DE, "protocol": "multi-crop"},
    "DE_multi-crop+dense": {"members": DE, "protocol": "multi-crop+dense"},
}
REPORT = {"runs": RUNS, "bootstrap_samples": 1000, "bootstrap_seed": 0, "confidence": 0.95, "equivalence_margin": 0.5}
# Synthetic quality: deeper nets, larger and jittered S, and multi-crop see the label more clearly;
# B-5x5 far less than B.
STRENGTH = {"A": 0.6, "A-LRN": 0.6, "B": 0.9, "B-5x5": 0.3, "C": 1.1, "D": 1.3, "E": 1.5}
SCALE_BONUS = {"256": 0.0, "384": 0.1, "256-512": 0.4}
N, CLASSES = 600, 10


def scales_of(train_scale):
    if train_scale == "256-512":
        return [256, 384, 512]
    s = int(train_scale)
    return [s - 32, s, s + 32]


def protocols_of(run):
    return (() if run == "B-5x5_256" else ("dense",)) + (("multi-crop",) if run in MULTI_CROP else ()) + (
        ("centre",) if run in CENTRE else ())


def write_preds(root):
    labels = torch.randperm(N, generator=torch.Generator().manual_seed(0)) % CLASSES
    onehot = torch.nn.functional.one_hot(labels, CLASSES).float()
    for seed in SEEDS:
        for run in RUNS:
            net, train_scale = run.split("_")
            for protocol in protocols_of(run):
                g = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{run}/{protocol}".encode()))
                strength = 3 * (STRENGTH[net] + SCALE_BONUS[train_scale] + (0.2 if protocol == "multi-crop" else 0))
                scales = scales_of(train_scale)
                posteriors = {q: (strength * onehot + 2.0 * torch.randn(N, CLASSES, generator=g)).softmax(1)
                              for q in scales}
                path = root / f"seed{seed}" / run / f"{protocol}.pt"
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"run": run, "net": net, "train_scale": train_scale, "protocol": protocol,
                            "scales": scales, "posteriors": posteriors, "labels": labels.clone()}, path)


def write_log(run_dir, i, seed=0, stopped_by="plateau", lr=0.01):
    metrics = run_dir / "plots" / "metrics"
    metrics.mkdir(parents=True)
    steps = np.arange(4)
    for name, values in (("val_top1_err", 40 - 5 * steps - i - seed), ("train_loss", 2.0 / (steps + 1)),
                         ("train_top1", 50 + 10 * steps), ("lr", [lr, lr, lr / 10, lr / 100])):
        pd.DataFrame({"step": steps, name: values}).to_csv(metrics / f"{name}.tsv", sep="\t", index=False)
    (run_dir / "metrics.json").write_text(json.dumps(
        {"step": 3, "val_top1_err": 25.0 - i, "wall_seconds": 10.0 + i, "stopped_by": stopped_by}))


def write_logs(root):
    for seed in SEEDS:
        for i, run in enumerate(RUNS):
            write_log(root / f"seed{seed}" / run, i, seed, lr=0.01 if run.endswith("_256") else 0.001)  # fine-tunes
    for seed in SEEDS:  # train_loc's logs/seed<k>/loc_<setting>/ (a localisation net per seed)
        for i, run in enumerate(tables.TABLE8_RUNS):
            write_log(root / f"seed{seed}" / f"loc_{run}", i, seed,
                      stopped_by="epoch cap" if run == "PCR-all_256" else "plateau", lr=0.03)


def write_test_split(path):
    """A scale-varied split as `prepare` writes it: images, labels, class names and object boxes."""
    images = torch.zeros(12, 3, 28, 28, dtype=torch.uint8)
    for i in range(12):
        images[i, :, i:i + 10, 2 * i % 17:2 * i % 17 + 8] = 200
    torch.save({"kind": "tensor", "images": images, "labels": torch.arange(12) % 10,
                "classes": [f"class{c}" for c in range(10)], "boxes": data.tight_boxes(images)}, path)


def write_params(path, ensembles=ENSEMBLES, report=REPORT, seeds=SEEDS, localisation_seeds=SEEDS):
    settings = load_params(REPO_PARAMS)
    settings["seeds"] = list(seeds)
    settings["localisation_seeds"] = list(localisation_seeds)  # both seeds: App. A's two-level bootstrap
    settings["fuse"] = {"ensembles": copy.deepcopy(ensembles)}
    settings["report"] = copy.deepcopy(report)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def write_loc_preds(root, n=200, seed=0):
    """evaluate_loc's and localise_dense's records of one seed with known outcomes: a right box is the
    true box, a wrong one is shifted off it (IoU 0). Seeds differ in which images they hit."""
    g = torch.Generator().manual_seed(3 + seed)
    true = torch.tensor([[2.0, 2.0, 12.0, 12.0]]).repeat(n, 1)
    labels = torch.arange(n) % 10
    root.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(tables.TABLE8_RUNS):
        hits = (torch.rand(n, generator=g) < 0.4 + 0.1 * i).long()
        boxes = torch.where(hits[:, None].bool(), true, true + 20)
        s = 384 if run.endswith("384") else 256
        torch.save({"run": run, "regression": run[:3], "layers": run.split("-")[1].split("_")[0],
                    "train_scale": (s, s), "test_scale": s, "boxes": boxes, "true_boxes": true, "labels": labels,
                    "hits": hits}, root / f"{run}.pt")
    rows = {}
    for i, label in enumerate(tables.TABLE9_PAPER_ROWS):
        top1 = (torch.rand(n, generator=g) < 0.5 + 0.1 * i).long()
        top5 = top1 | (torch.rand(n, generator=g) < 0.3).long()
        rows[label] = {"classes": torch.stack([labels] + [(labels + k) % 10 for k in range(1, 5)], 1),
                       "boxes": true[:, None].repeat(1, 5, 1), "top1": top1, "top5": top5}
    torch.save({"rows": rows, "labels": labels, "true_boxes": true}, root / "dense.pt")


def read_loc_preds(preds, seeds=SEEDS):
    """({seed: {run: record}}, {seed: dense record}) as the report stage reads preds/seed<k>/loc/."""
    loc = {seed: {run: torch.load(preds / f"seed{seed}" / "loc" / f"{run}.pt", weights_only=False)
                  for run in tables.TABLE8_RUNS} for seed in seeds}
    dense = {seed: torch.load(preds / f"seed{seed}" / "loc" / "dense.pt", weights_only=False) for seed in seeds}
    return loc, dense


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A full set of the evaluate stage's predictions, the fused ensembles and training logs, the
    localisation stages' records and the transfer stages' outputs."""
    root = tmp_path_factory.mktemp("synthetic")
    write_preds(root / "preds")
    write_logs(root / "logs")
    for seed in SEEDS:
        write_loc_preds(root / "preds" / f"seed{seed}" / "loc", seed=seed)
    (root / "transfer").mkdir()
    run_features_and_transfer(root / "transfer", SEEDS)  # the real stages on tiny untrained D and E of each seed
    params = write_params(root / "params.yaml")
    write_test_split(root / "test.pt")
    for seed in SEEDS:
        for name in ENSEMBLES:
            stages.fuse.main(["--params", str(params), "--name", name, "--preds", str(root / "preds" / f"seed{seed}"),
                              "--out", str(root / "preds" / f"seed{seed}" / "ensembles" / f"{name}.pt")])
    for seed in SEEDS:
        shutil.copytree(root / "transfer" / "preds" / f"seed{seed}" / "transfer", root / "preds" / f"seed{seed}" / "transfer")
    return root


def fused_reader(root, seed=0):
    return lambda name: torch.load(root / "preds" / f"seed{seed}" / "ensembles" / f"{name}.pt", weights_only=False)


@pytest.fixture(scope="module")
def computed(synthetic):
    found = tables.classification(load_params(synthetic / "params.yaml"), synthetic / "preds")
    assert found.seeds == tuple(SEEDS)
    return classification_rows(), found.results, found.frames, found.claims


def errors_by_hand(posteriors, labels):
    """Top-1 and top-5 error (%) with numpy's argsort, independent of vgg.fusion."""
    order = np.argsort(-posteriors.numpy(), axis=1)
    labels = labels.numpy()[:, None]
    return 100 * (1 - (order[:, :1] == labels).any(1).mean()), 100 * (1 - (order[:, :5] == labels).any(1).mean())


def saved(synthetic, run, protocol, seed=0):
    return torch.load(synthetic / "preds" / f"seed{seed}" / run / f"{protocol}.pt", weights_only=False)


def over_seeds(errors):
    """(mean, sample sd) over seeds of per-seed (top-1, top-5) pairs, and the pairs."""
    errors = np.array(errors)
    return errors.mean(0), errors.std(0, ddof=1), errors


def test_table3_row_is_the_mean_over_seeds_of_the_errors_recomputed_from_the_saved_posteriors(synthetic, computed):
    frame = computed[2]["table3"]
    mean, sd, each = over_seeds([errors_by_hand(saved(synthetic, "D_256-512", "dense", seed)["posteriors"][384],
                                                saved(synthetic, "D_256-512", "dense", seed)["labels"])
                                 for seed in SEEDS])
    row = frame.loc["table3.D.S256-512.Q384"]
    assert (row["ConvNet"], row["train S"], row["test Q"]) == ("D", "256-512", "384")
    assert row[tables.OURS_TOP1] == pytest.approx(mean[0])
    assert row[tables.OURS_TOP5] == pytest.approx(mean[1])
    assert row[tables.OURS_TOP1_SD] == pytest.approx(sd[0]) and sd[0] > 0
    assert row[tables.N_SEEDS] == len(SEEDS)
    for seed, (top1, top5) in zip(SEEDS, each):  # each seed's own value stays in the CSV
        assert row[tables.SEED_TOP1.format(seed)] == pytest.approx(top1)
        assert row[tables.SEED_TOP5.format(seed)] == pytest.approx(top5)
    assert row[tables.PAPER_TOP1] == 25.6 and row[tables.PAPER_TOP5] == 8.1


def test_table4_row_averages_the_posteriors_over_the_three_test_scales(synthetic, computed):
    errors = []
    for seed in SEEDS:
        record = saved(synthetic, "C_384", "dense", seed)
        errors.append(errors_by_hand(sum(record["posteriors"][q] for q in (352, 384, 416)) / 3, record["labels"]))
    (top1, top5), _, _ = over_seeds(errors)
    row = computed[2]["table4"].loc["table4.C.S384.Q352_384_416"]
    assert row["test Q"] == "352,384,416"
    assert row[tables.OURS_TOP1] == pytest.approx(top1)
    assert row[tables.OURS_TOP5] == pytest.approx(top5)


def test_table5_multi_crop_and_dense_averages_the_two_protocols(synthetic, computed):
    frame = computed[2]["table5"]
    dense, crops = saved(synthetic, "E_256-512", "dense", 1), saved(synthetic, "E_256-512", "multi-crop", 1)
    mean_dense = sum(dense["posteriors"][q] for q in (256, 384, 512)) / 3
    mean_crops = sum(crops["posteriors"][q] for q in (256, 384, 512)) / 3
    for protocol, posteriors in (("dense", mean_dense), ("multi-crop", mean_crops),
                                 ("multi-crop+dense", (mean_dense + mean_crops) / 2)):
        top1, top5 = errors_by_hand(posteriors, dense["labels"])
        row = frame.loc[f"table5.E.S256-512.{protocol}"]
        assert row[tables.SEED_TOP1.format(1)] == pytest.approx(top1), protocol
        assert row[tables.SEED_TOP5.format(1)] == pytest.approx(top5), protocol


def test_table6_rows_come_from_the_fused_files_and_equal_averaged_members(synthetic, computed):
    frame = computed[2]["table6"]
    assert list(frame["ensemble"]) == ["ilsvrc7", "DE_dense", "DE_multi-crop", "DE_multi-crop+dense"]
    assert list(frame["nets"]) == [7, 2, 2, 2]
    errors = []
    for seed in SEEDS:  # each seed's ensemble fuses that seed's members only
        fused = fused_reader(synthetic, seed)("DE_dense")
        from_file = errors_by_hand(fused["posteriors"]["fused"], fused["labels"])
        by_hand = [sum(saved(synthetic, run, "dense", seed)["posteriors"][q] for q in (256, 384, 512)) / 3
                   for run in ("D_256-512", "E_256-512")]
        errors.append(errors_by_hand((by_hand[0] + by_hand[1]) / 2, fused["labels"]))
        assert from_file == pytest.approx(errors[-1])
        assert frame.loc["table6.DE_dense", tables.SEED_TOP1.format(seed)] == pytest.approx(errors[-1][0])
    (top1, top5), _, _ = over_seeds(errors)
    assert frame.loc["table6.DE_dense", tables.OURS_TOP1] == pytest.approx(top1)
    assert frame.loc["table6.DE_dense", tables.OURS_TOP5] == pytest.approx(top5)
    assert frame.loc["table6.DE_multi-crop+dense", tables.PAPER_TEST5] == 6.8


def test_tables_keep_the_papers_rows_order_and_numbers(computed):
    paper, _, frames, _ = computed
    for name, table in (("table3", "T3"), ("table4", "T4"), ("table5", "T5"), ("table6", "T6")):
        rows = paper[paper["table"] == table]
        assert list(frames[name][tables.PAPER_TOP1]) == list(rows["top1_val_err"]), name
        assert list(frames[name][tables.PAPER_TOP5]) == list(rows["top5_val_err"]), name
    assert list(frames["table3"]["ConvNet"]) == ["A", "A-LRN", "B", "C", "C", "C", "D", "D", "D", "E", "E", "E"]
    assert list(frames["table3"]["train S"])[:6] == ["256", "256", "256", "256", "384", "256-512"]


def test_table7_keeps_the_literature_and_adds_our_best_nets_and_fashion_mnist_references(computed):
    paper, results, frames, _ = computed
    frame = frames["table7"]
    literature = frame[frame["source"] == "paper (ILSVRC-2012)"]
    assert list(literature["method"]) == list(paper.loc[paper["table"] == "T7", "net"])
    assert frame.loc["table7.ours_1net", tables.OURS_TOP1] == pytest.approx(frames["table5"][tables.OURS_TOP1].min())
    t6 = frames["table6"]
    assert frame.loc["table7.ours_2net", tables.OURS_TOP1] == pytest.approx(t6.loc[t6["nets"] == 2, tables.OURS_TOP1].min())
    assert frame.loc["table7.ours_7net", tables.OURS_TOP1] == pytest.approx(t6.loc["table6.ilsvrc7", tables.OURS_TOP1])
    assert frame.loc["table7.ours_1net", tables.OURS_ACC] == pytest.approx(100 - frame.loc["table7.ours_1net", tables.OURS_TOP1])
    references = frame[frame["source"].str.startswith("Fashion-MNIST reference")]
    assert len(references) == 6 and references["test accuracy (reference)"].between(80, 100).all()


def expected_metric_keys(paper):
    keys = []
    for _, row in paper.iterrows():
        net, s, q, protocol = row["net"], row["train_S"], row["test_Q"].replace(";", "_"), row["eval"]
        prefix = {"T3": f"table3.{net}.S{s}.Q{q}", "T4": f"table4.{net}.S{s}.Q{q}",
                  "T5": f"table5.{net}.S{s}.{protocol}"}.get(row["table"])
        if prefix:
            keys += [f"{prefix}.{k}" for k in ("top1", "top1_sd", "top5", "top5_sd")]
    keys += [f"table6.{name}.{k}" for name in ENSEMBLES for k in ("top1", "top1_sd", "top5", "top5_sd")]
    keys += [f"table7.ours_{n}net.{k}" for n in (1, 2, 7) for k in ("top1", "top1_sd", "top5", "top5_sd", "accuracy")]
    keys += [f"claims.{claim[0]}.{k}" for claim in tables.CLAIMS for k in ("diff", "ci_low", "ci_high", "seed_sd")]
    return keys


def expected_report_keys(paper):
    """The report stage's keys: Tables 3-7 and their claims, then the appendices'."""
    keys = expected_metric_keys(paper)
    keys += [f"loc.table8.{run}.err" for run in tables.TABLE8_RUNS]
    keys += [f"loc.table9.{row}.{k}" for row in ("256_256", "384_384", "384_352-384", "fusion") for k in ("top1", "top5")]
    keys += [f"loc.claims.{c}.{k}" for c in ("pcr_beats_scr", "all_layers_beat_fc", "s384_beats_s256",
                                             "two_scales_beat_one", "fusion_beats_best") for k in ("diff", "ci_low", "ci_high")]
    keys += [f"claims.{claim[0]}.{k}" for claim in tables.TRANSFER_CLAIMS for k in ("diff", "ci_low", "ci_high")]
    return keys


def test_every_metrics_key_exists_for_a_full_set_of_preds(computed):
    paper, _, frames, claims = computed
    flat = tables.metrics(frames, claims)
    assert sorted(flat) == sorted(expected_metric_keys(paper))
    for key in ("table3.D.S256-512.Q384.top1", "table4.D.S256-512.Q256_384_512.top5",
                "table5.D.S256-512.multi-crop+dense.top1", "table6.DE_multi-crop+dense.top1",
                "table7.ours_1net.top1"):
        assert key in flat
    assert all(isinstance(v, float) and v == round(v, 4) for v in flat.values())
    assert flat["table3.D.S256-512.Q384.top1"] == round(frames["table3"].loc["table3.D.S256-512.Q384",
                                                                              tables.OURS_TOP1], 4)


def test_claims_verdicts_are_computed_from_the_interval(computed):
    _, _, frames, claims = computed
    assert list(claims.index) == [c[0] for c in tables.CLAIMS]
    for (key, _, direction, _, _), (_, row) in zip(tables.CLAIMS, claims.iterrows()):
        assert row["CI low"] <= row["ours: err(Y) - err(X)"] <= row["CI high"], key
        assert row["verdict"] == stats.verdict(row["CI low"], row["CI high"], direction, 0.5), key
        assert row[tables.N_SEEDS] == len(SEEDS)
    t3 = frames["table3"]
    diff = t3.loc["table3.A.S256.Q256", tables.OURS_TOP1] - t3.loc["table3.E.S256.Q256", tables.OURS_TOP1]
    assert claims.loc["depth_E_beats_A", "ours: err(Y) - err(X)"] == pytest.approx(diff)
    # The synthetic E sees the label far more clearly than A, in both seeds.
    assert claims.loc["depth_E_beats_A", "verdict"] == "reproduced"
    assert claims.loc["depth_E_beats_A", tables.SEEDS_AGREE] == f"{len(SEEDS)}/{len(SEEDS)}"
    per_seed = [t3.loc["table3.A.S256.Q256", tables.SEED_TOP1.format(k)]
                - t3.loc["table3.E.S256.Q256", tables.SEED_TOP1.format(k)] for k in SEEDS]
    assert claims.loc["depth_E_beats_A", tables.SEED_SD] == pytest.approx(np.std(per_seed, ddof=1))
    # A-LRN is A's equal with errors on other images: the interval of its gain spans the 0.5-point
    # margin, so "does not help" is neither confirmed nor refuted (the old rule called it reproduced).
    lrn = claims.loc["lrn_does_not_help"]
    assert lrn["CI low"] < 0 < 0.5 < lrn["CI high"] and lrn["verdict"] == "inconclusive"
    assert claims.loc["depth_B_beats_A", "paper: err(Y) - err(X)"] == pytest.approx(29.6 - 28.7)


def test_claims_pool_the_seed_variance_over_claims_of_a_kind(computed):
    claims = computed[3]
    k = len(SEEDS)
    # Evaluations of the same nets against comparisons of different trainings: two pools.
    assert claims.loc["multi_scale_D", tables.POOL] == tables.SAME_NETS
    assert claims.loc["mc_dense_beats_mc_E", tables.POOL] == tables.SAME_NETS
    assert claims.loc["C_beats_B", tables.POOL] == tables.OTHER_NETS
    assert claims.loc["fusion_beats_best_net", tables.POOL] == tables.OTHER_NETS
    for _, rows in claims.groupby(tables.POOL):
        pooled = np.sqrt(np.mean(rows[tables.SEED_SD] ** 2))
        assert rows[tables.POOLED_SD].tolist() == pytest.approx([pooled] * len(rows))
        assert (rows[tables.POOLED_DF] == len(rows) * (k - 1)).all()
        for _, row in rows.iterrows():
            diff = row["ours: err(Y) - err(X)"]
            assert diff - row["CI low"] == pytest.approx(row["CI high"] - diff)
            # Never narrower than the seed part alone, at the normal quantile.
            assert row["CI high"] - diff >= 1.959964 * pooled / np.sqrt(k) - 1e-9
    # The two-level bootstrap stays beside it, around the same difference.
    assert (claims[tables.BOOT_LOW] <= claims["ours: err(Y) - err(X)"] + 1e-9).all()
    assert (claims[tables.BOOT_HIGH] >= claims["ours: err(Y) - err(X)"] - 1e-9).all()


def test_b5x5_claim_compares_centre_crops_with_the_papers_difference_from_its_text(synthetic, computed):
    claims = computed[3]
    row = claims.loc["b_beats_b5x5"]
    assert row["paper: err(Y) - err(X)"] == 7.0  # paper/text_claims.csv (§4.1: "7% higher")
    diffs = []
    for seed in SEEDS:
        b, b5 = saved(synthetic, "B_256", "centre", seed), saved(synthetic, "B-5x5_256", "centre", seed)
        diffs.append(errors_by_hand(b5["posteriors"][256], b5["labels"])[0]
                     - errors_by_hand(b["posteriors"][256], b["labels"])[0])
    assert row["ours: err(Y) - err(X)"] == pytest.approx(np.mean(diffs))
    assert row["verdict"] == "reproduced" and row["X"].startswith("§4.1: B S=256 Q=256, centre")


def test_the_s256_part_has_table3s_s256_rows_and_only_the_claims_on_them(synthetic):
    found = tables.classification(load_params(synthetic / "params.yaml"), synthetic / "preds", part="s256")
    assert list(found.frames) == ["table3"]
    assert list(found.frames["table3"]["ConvNet"]) == ["A", "A-LRN", "B", "C", "D", "E"]
    assert list(found.claims.index) == ["lrn_does_not_help", "depth_E_beats_A", "depth_B_beats_A", "C_beats_B",
                                        "D_beats_C", "b_beats_b5x5"]
    full = tables.classification(load_params(synthetic / "params.yaml"), synthetic / "preds")
    # The same differences; the part pools the seed variance over its own claims only.
    same = [c for c in found.claims.columns if c not in ("CI low", "CI high", tables.POOLED_SD, tables.POOLED_DF,
                                                         "verdict")]
    pd.testing.assert_frame_equal(found.claims[same], full.claims.loc[found.claims.index, same])
    assert found.claims[tables.POOLED_DF].tolist() == [len(found.claims) * (len(SEEDS) - 1)] * len(found.claims)
    # Another seed set is another set of trainings: seed 1 alone gives seed 1's errors.
    one = tables.classification(load_params(synthetic / "params.yaml"), synthetic / "preds", seeds=[1], part="s256")
    assert one.frames["table3"][tables.OURS_TOP1].tolist() == pytest.approx(
        found.frames["table3"][tables.SEED_TOP1.format(1)].tolist())


def test_claim_against_a_worse_model_is_contradicted(computed):
    results = computed[1]
    a = next(r for r in results if r.key == "table3.A.S256.Q256")
    e = next(r for r in results if r.key == "table3.E.S256.Q256")
    # E given A's outcomes and A given E's: "E beats A" now goes the wrong way.
    swapped = [replace(r, correct1=e.correct1) if r is a else replace(r, correct1=a.correct1) if r is e else r
               for r in results]
    assert tables.claims(swapped, 1000, 0, 0.95, 0.5).loc["depth_E_beats_A", "verdict"] == "contradicted"


def test_table6_needs_a_matching_ensemble_in_params(synthetic):
    paper = classification_rows()
    read = fusion.preds_reader(synthetic / "preds" / "seed0")
    ensembles = {k: v for k, v in ENSEMBLES.items() if k != "ilsvrc7"}
    with pytest.raises(StageError, match="^fuse.ensembles: no ensemble of D/256/224;256;288"):
        tables.evaluate_rows(paper, read, ensembles, fused_reader(synthetic))


def test_a_fused_file_made_from_other_members_is_stale(synthetic):
    paper = classification_rows()
    read = fusion.preds_reader(synthetic / "preds" / "seed0")
    ensembles = copy.deepcopy(ENSEMBLES)
    ensembles["DE_dense"]["members"] = DE[::-1]
    with pytest.raises(StageError, match="re-run stage fuse"):
        tables.evaluate_rows(paper, read, ensembles, fused_reader(synthetic))


def report_args(root, params, out):
    return ["--params", str(params), "--preds", str(root / "preds"),
            "--transfer-metrics", str(root / "transfer" / "metrics" / "transfer"),
            "--logs", str(root / "logs"), "--test", str(root / "test.pt"), "--out", str(out / "reports"), "--metrics", str(out / "metrics" / "tables.json")]


def test_report_stage_end_to_end(synthetic, tmp_path, capsys):
    compute = tmp_path / "compute.json"
    compute.write_text(json.dumps({"device": "1x test CPU", "training wall time": "1 min"}))
    stages.report.main(report_args(synthetic, synthetic / "params.yaml", tmp_path) + ["--compute", str(compute)])
    reports = tmp_path / "reports"
    names = {p.name for p in reports.iterdir()}
    for i in range(1, 8):
        assert f"table{i}.md" in names
    assert {f"table{i}.csv" for i in range(2, 8)} <= names
    assert {"claims.md", "claims.csv", "README.md", "training_curves.png", "error_vs_depth.png",
            "error_vs_test_scale.png", "samples.png", "claims_forest.png"} <= names
    for png in reports.glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    readme = (reports / "README.md").read_text()
    for name in names - {"README.md"}:
        assert f"({name})" in readme, name
    assert "fashion_mnist" in readme and "1x test CPU" in readme and "| pixels" in readme
    # The training table writes a fine-tune's lr as it is, not rounded to 0.00 with the errors.
    assert "|        0.001 |" in readme and "|         0.00 |" not in readme
    assert "lr 0.03 (`localisation.lr`" in (reports / "localisation.md").read_text()
    table3 = (reports / "table3.md").read_text()
    assert "256-512" in table3 and "| D " in table3
    flat = json.loads((tmp_path / "metrics" / "tables.json").read_text())
    paper = classification_rows()
    assert sorted(flat) == sorted(expected_report_keys(paper))
    claims = pd.read_csv(reports / "claims.csv", index_col="key")
    assert set(claims["verdict"]) <= set(stats.VERDICTS)
    assert (claims["n_seeds"] == len(SEEDS)).all() and claims[tables.SEEDS_AGREE].str.endswith(f"/{len(SEEDS)}").all()
    # Every verdict rule once, at the top of the claims page; the pages leave out the per-seed columns.
    claims_page = (reports / "claims.md").read_text()
    assert "equivalence test with a margin of 0.5" in claims_page and "2 here" in claims_page
    assert "seed 0" not in table3 and "top-1 err seed 1" in (reports / "table3.csv").read_text()
    loc_page = (reports / "localisation.md").read_text()
    assert "2 trainings per net" in readme and "2 trainings per net" in loc_page and "One training" not in loc_page
    assert "seed 1" not in loc_page and "loc. error seed 1" in (reports / "table8.csv").read_text()
    loc_claims = pd.read_csv(reports / "claims_localisation.csv", index_col="key")
    assert (loc_claims["n_seeds"] == len(SEEDS)).all()
    # The localisation page's training table: each localisation run of each seed, with what stopped it.
    for seed in SEEDS:
        for run in tables.TABLE8_RUNS:
            row = next(line for line in loc_page.splitlines() if line.startswith(f"| loc_{run} ")
                       and line.split("|")[2].strip() == str(seed))
            assert ("epoch cap" if run == "PCR-all_256" else "plateau") in row, row
    assert "report: wrote" in capsys.readouterr().out
    # Table 8 is the share of saved boxes off the true box, averaged over the seeds; Table 9 the share
    # of saved misses, likewise.
    for run in tables.TABLE8_RUNS:
        off = [(r["boxes"] != r["true_boxes"]).any(1).double().mean().item() for r in
               (torch.load(synthetic / "preds" / f"seed{k}" / "loc" / f"{run}.pt", weights_only=False) for k in SEEDS)]
        assert flat[f"loc.table8.{run}.err"] == pytest.approx(100 * np.mean(off), abs=1e-3)
    fused = [torch.load(synthetic / "preds" / f"seed{k}" / "loc" / "dense.pt", weights_only=False)
             ["rows"]["fusion 256/256 + 384/352,384"] for k in SEEDS]
    assert flat["loc.table9.fusion.top5"] == pytest.approx(
        100 * (1 - np.mean([f["top5"].double().mean().item() for f in fused])), abs=1e-3)
    page = (reports / "localisation.md").read_text()
    assert "Table 8" in page and "36.40" in page and "| PCR-all_384 " in page
    assert "(localisation.md)" in readme and "(table11.md)" in readme


def test_training_summary_counts_the_plateau_drops_and_the_final_training_error(synthetic):
    logs = synthetic / "logs"
    summary = tables.training_summary(tables.load_curves(logs, tables.seed_runs(RUNS, SEEDS)), logs)
    assert len(summary) == len(RUNS) * len(SEEDS) and list(summary["seed"].unique()) == SEEDS
    assert (summary["lr drops"] == 2).all()  # lr, lr, lr / 10, lr / 100
    assert summary["initial lr"].tolist() == [0.01 if run.endswith("_256") else 0.001 for run in summary["run"]]
    assert (summary["stopped by"] == "plateau").all()
    assert (summary["final train top-1 err"] == 20.0).all()  # 100 - (50 + 10 * 3)
    row = summary[(summary["run"] == RUNS[1]) & (summary["seed"] == 1)].iloc[0]
    assert row["final val top-1 err"] == 40 - 15 - 1 - 1


def test_report_stage_with_missing_predictions_names_the_file_and_writes_nothing(synthetic, tmp_path, capsys):
    args = report_args(synthetic, synthetic / "params.yaml", tmp_path)
    args[args.index("--preds") + 1] = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit):
        stages.report.main(args)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {tmp_path / 'nowhere'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_report_runs_must_cover_the_tables(synthetic, tmp_path, capsys):
    report = dict(REPORT, runs=[r for r in RUNS if r != "D_384"])
    params = write_params(tmp_path / "params.yaml", report=report)
    with pytest.raises(SystemExit):
        stages.report.main(report_args(synthetic, params, tmp_path))
    assert capsys.readouterr().err.startswith("error: report.runs: lacks D_384")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("value, message", [
    ([2], "localisation_seeds: 2 is not in seeds [0, 1] (no nets of that seed)"),
    ([], "localisation_seeds: [] must be a non-empty list of distinct integers >= 0"),
    ([0, 0], "localisation_seeds: [0, 0] must be a non-empty list of distinct integers >= 0")])
def test_localisation_seeds_must_be_trained_seeds(synthetic, tmp_path, capsys, value, message):
    params = write_params(tmp_path / "params.yaml", localisation_seeds=value)
    with pytest.raises(SystemExit):
        stages.report.main(report_args(synthetic, params, tmp_path))
    assert capsys.readouterr().err == f"error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_report_with_one_localisation_seed_says_one_training(synthetic, tmp_path):
    # The default: App. A on the first seed's nets only, while the classification uses every seed.
    params = write_params(tmp_path / "params.yaml", localisation_seeds=[1])
    stages.report.main(report_args(synthetic, params, tmp_path))
    page = (tmp_path / "reports" / "localisation.md").read_text()
    assert "**One training per net**" in page and "D of seed 1" in page
    claims = pd.read_csv(tmp_path / "reports" / "claims_localisation.csv", index_col="key")
    assert (claims["n_seeds"] == 1).all() and (claims[tables.SEEDS_AGREE] == "1/1").all()
    t8 = pd.read_csv(tmp_path / "reports" / "table8.csv", index_col="key")
    assert list(t8.filter(like="error seed").columns) == [tables.SEED_LOC.format(1)]
    assert "App. A, seed-1 nets" in (tmp_path / "reports" / "README.md").read_text()


def test_report_csvs_keep_six_significant_digits_and_read_back():
    # A bootstrap bound such as 0.6002499999999963 is written 0.60025; a count stays exact.
    frame = pd.DataFrame({"CI high": [0.6002499999999963, 18.120000000000005], "images": [10000, 5000]},
                         index=pd.Index(["a", "b"], name="key"))
    text = tables.to_csv(frame)
    assert text.splitlines() == ["key,CI high,images", "a,0.60025,10000", "b,18.12,5000"]
    back = pd.read_csv(stdio.StringIO(text), index_col="key")
    assert np.allclose(back["CI high"], frame["CI high"], rtol=1e-5)
    assert (back["images"] == frame["images"]).all()


def test_localisation_claims_are_the_mean_over_seeds_and_one_seed_is_the_one_level_bootstrap(synthetic):
    from vgg.paper import localisation_rows
    preds, dense = read_loc_preds(synthetic / "preds")
    rows = localisation_rows()
    claims = tables.localisation_claims(preds, dense, 500, 0, 0.95, rows)
    frame = tables.table8(preds, rows)
    # err(SCR) - err(PCR) per seed, from Table 8's per-seed columns: the claim is their mean.
    per_seed = [frame.loc["table8.SCR-fc_384", tables.SEED_LOC.format(k)]
                - frame.loc["table8.PCR-fc_384", tables.SEED_LOC.format(k)] for k in SEEDS]
    row = claims.loc["pcr_beats_scr"]
    assert row["ours: err(X) - err(Y)"] == pytest.approx(np.mean(per_seed))
    assert row[tables.N_SEEDS] == len(SEEDS) and row[tables.SEED_SD] == pytest.approx(np.std(per_seed, ddof=1))
    agree = sum(np.sign(d) == np.sign(np.mean(per_seed)) for d in per_seed)
    assert row[tables.SEEDS_AGREE] == f"{agree}/{len(SEEDS)}"
    assert frame.loc["table8.SCR-fc_384", tables.LOC_ERR_SD] == pytest.approx(
        np.std([frame.loc["table8.SCR-fc_384", tables.SEED_LOC.format(k)] for k in SEEDS], ddof=1))
    # Several seeds: the seed variance pooled within a kind and a measure (Table 8's centre-crop error,
    # Table 9's dense top-5 error), never across the two; a pool of one claim keeps its own sd, K - 1 df.
    pools = {pool: list(rows.index) for pool, rows in claims.groupby(tables.POOL, sort=False)}
    assert pools == {
        tables.localisation_pool(tables.OTHER_NETS, tables.CENTRE_CROP_ERROR): ["pcr_beats_scr", "all_layers_beat_fc"],
        tables.localisation_pool(tables.OTHER_NETS, tables.DENSE_TOP5_ERROR): ["s384_beats_s256", "fusion_beats_best"],
        tables.localisation_pool(tables.SAME_NETS, tables.DENSE_TOP5_ERROR): ["two_scales_beat_one"]}
    for keys in pools.values():
        pool = claims.loc[keys]
        assert pool[tables.POOLED_SD].tolist() == pytest.approx([np.sqrt(np.mean(pool[tables.SEED_SD] ** 2))] * len(keys))
        assert (pool[tables.POOLED_DF] == len(keys) * (len(SEEDS) - 1)).all()
    # The interval: the pool's seed variance, the claim's own test-image variance.
    x, y = (tables.loc_outcomes(dense, lambda r, row=row: r["rows"][row]["top5"]) for row in ("256/256", "384/384"))
    s384 = claims.loc["s384_beats_s256"]
    assert (s384["CI low"], s384["CI high"]) == pytest.approx(stats.seed_t_interval(
        s384["ours: err(X) - err(Y)"], s384[tables.POOLED_SD] ** 2, s384[tables.POOLED_DF], len(SEEDS),
        stats.image_variance(x, y), 0.95))
    assert row["CI low"] < row["ours: err(X) - err(Y)"] < row["CI high"]
    assert row["verdict"] == stats.verdict(row["CI low"], row["CI high"])
    # One seed: exactly the one-level paired bootstrap over test images (the previous single-training claims).
    one = tables.localisation_claims({0: preds[0]}, {0: dense[0]}, 500, 0, 0.95, rows)
    expected = stats.paired_bootstrap(preds[0]["SCR-fc_384"]["hits"], preds[0]["PCR-fc_384"]["hits"], 500, 100, 0.95)
    assert tuple(one.loc["pcr_beats_scr", ["ours: err(X) - err(Y)", "CI low", "CI high"]]) == pytest.approx(expected)
    assert one.loc["pcr_beats_scr", tables.SEEDS_AGREE] == "1/1"
    # Seeds scored on other test images cannot be paired.
    other = {**dense[1], "labels": dense[1]["labels"].roll(1)}
    with pytest.raises(ValueError, match="seed 1's localisation records are on other test images"):
        tables.table9({0: dense[0], 1: other}, rows)


def test_localisation_claims_repooled_from_their_csv_equal_the_direct_computation(tmp_path, monkeypatch):
    # scripts.repool_localisation judges a run written under the rule before 2026-12-03 (one pool per
    # kind) by the rule now (a kind and a measure), from its CSV alone: the test-image variance solved
    # back from the interval, the seed part pooled anew. Three seeds, as the runs it is meant for.
    from scripts import repool_localisation
    from vgg.paper import localisation_rows
    seeds = [0, 1, 2]
    for seed in seeds:
        write_loc_preds(tmp_path / f"seed{seed}" / "loc", seed=seed)
    preds, dense = read_loc_preds(tmp_path, seeds)
    rows = localisation_rows()

    def claims_csv():
        claims = tables.localisation_claims(preds, dense, 200, 0, 0.95, rows)
        return pd.read_csv(stdio.StringIO(tables.to_csv(claims)), index_col="key")

    by_measure = claims_csv()
    for key in tables.LOCALISATION_POOLS:
        monkeypatch.setitem(tables.LOCALISATION_POOLS, key, repool_localisation.kind_of(key))
    by_kind = claims_csv()
    monkeypatch.undo()
    assert set(by_kind[tables.POOL]) == {tables.SAME_NETS, tables.OTHER_NETS}
    assert by_kind.loc["s384_beats_s256", tables.POOLED_DF] == 8 and by_measure.loc["s384_beats_s256", tables.POOLED_DF] == 4
    assert not np.allclose(by_kind["CI low"], by_measure["CI low"])  # the pooling matters on these records
    again = repool_localisation.repool(by_kind, tables.LOCALISATION_POOLS, 0.95)
    columns = ["CI low", "CI high", tables.POOLED_SD, tables.POOLED_DF]
    assert np.allclose(again[columns].astype(float), by_measure[columns].astype(float), rtol=1e-4, atol=1e-5)
    assert list(again["verdict"]) == list(by_measure["verdict"])
    assert list(again[tables.POOL]) == list(by_measure[tables.POOL])


def test_the_image_variance_is_solved_back_only_where_one_variance_gives_the_interval():
    from scripts.repool_localisation import image_variance_from_interval
    low, high = stats.seed_t_interval(0.4, 0.49, 8, 3, 0.02, 0.95)
    assert image_variance_from_interval(0.4, low, high, 0.49, 8, 3, 0.95) == pytest.approx(0.02, rel=1e-6)
    # 2 seed df: the interval first narrows as the image variance grows, so two variances give it.
    low, high = stats.seed_t_interval(0.4, 0.49, 2, 3, 0.002, 0.95)
    wider = stats.seed_t_interval(0.4, 0.49, 2, 3, 0.0, 0.95)
    assert high - low < wider[1] - wider[0]
    with pytest.raises(ValueError, match="two test-image variances"):
        image_variance_from_interval(0.4, low, high, 0.49, 2, 3, 0.95)


def test_localisation_claims_take_the_papers_differences_from_its_tables(synthetic):
    from vgg.paper import localisation_rows
    preds, dense = read_loc_preds(synthetic / "preds")
    rows = localisation_rows()
    claims = tables.localisation_claims(preds, dense, 200, 0, 0.95, rows)
    assert claims["paper: err(X) - err(Y)"].tolist() == pytest.approx([36.4 - 34.3, 34.3 - 33.1, 29.5 - 28.2,
                                                                      28.2 - 27.5, 27.5 - 26.9])
    changed = rows.copy()
    changed.loc[(changed["table"] == "T8") & (changed["row"] == "1"), "value"] = "40.0"
    moved = tables.localisation_claims(preds, dense, 200, 0, 0.95, changed)
    assert moved.loc["pcr_beats_scr", "paper: err(X) - err(Y)"] == pytest.approx(40.0 - 34.3)


def test_localisation_claims_script_writes_the_reports_tables_for_any_seeds(synthetic, tmp_path):
    from scripts import localisation_claims
    both, one = tmp_path / "both", tmp_path / "one"
    args = ["--params", str(synthetic / "params.yaml"), "--preds", str(synthetic / "preds")]
    localisation_claims.main(args + ["--out", str(both)])
    localisation_claims.main(args + ["--seeds", "1", "--out", str(one)])
    t8_both = pd.read_csv(both / "table8.csv", index_col="key")
    t8_one = pd.read_csv(one / "table8.csv", index_col="key")
    assert (t8_both["n_seeds"] == len(SEEDS)).all() and (t8_one["n_seeds"] == 1).all()
    # One seed's table is that seed's column of the seeds' table.
    assert np.allclose(t8_one[tables.LOC_ERR], t8_both[tables.SEED_LOC.format(1)])
    claims = pd.read_csv(one / "claims_localisation.csv", index_col="key")
    assert list(claims.index) == ["pcr_beats_scr", "all_layers_beat_fc", "s384_beats_s256", "two_scales_beat_one",
                                  "fusion_beats_best"]
    assert (claims[tables.SEEDS_AGREE] == "1/1").all() and (pd.read_csv(both / "table9.csv")["n_seeds"] == 2).all()


def test_pages_show_no_seed_sd_for_one_seed():
    # One training per net has no seed-to-seed sd: the page leaves the column out (the CSV keeps 0).
    from vgg import report
    frame = pd.DataFrame({"setting": ["PCR-all_384", "SCR-fc_384"], tables.LOC_ERR: [0.97, 10.99],
                          tables.LOC_ERR_SD: [0.0, 0.0], tables.N_SEEDS: [1, 1]})
    assert tables.LOC_ERR_SD not in report.one_seed_without_sd(frame).columns
    three = frame.assign(**{tables.N_SEEDS: [3, 3], tables.LOC_ERR_SD: [0.2, 1.5]})
    assert report.one_seed_without_sd(three).equals(three)
    page = report.results_page("Table 3", "one seed", pd.DataFrame(
        {"ConvNet": ["A"], tables.OURS_TOP1: [17.9], tables.OURS_TOP1_SD: [0.0], tables.N_SEEDS: [1]}))
    assert "sd" not in page and "17.90" in page


def test_transfer_claims_script_writes_the_reports_table_11_and_claims(synthetic, tmp_path):
    import scripts.transfer_claims
    stages.report.main(report_args(synthetic, synthetic / "params.yaml", tmp_path))
    args = ["--params", str(synthetic / "params.yaml"), "--preds", str(synthetic / "preds"),
            "--transfer-metrics", str(synthetic / "transfer" / "metrics" / "transfer")]
    scripts.transfer_claims.main(args + ["--out", str(tmp_path / "all")])
    for name in ("table11.csv", "claims_transfer.csv"):
        assert (tmp_path / "all" / name).read_text() == (tmp_path / "reports" / name).read_text(), name
    # One seed's nets alone: what one training says, its intervals from the test items only.
    scripts.transfer_claims.main(args + ["--seeds", str(SEEDS[1]), "--out", str(tmp_path / "one")])
    one = pd.read_csv(tmp_path / "one" / "claims_transfer.csv", index_col=0)
    assert (one[tables.N_SEEDS] == 1).all() and (one[tables.SEEDS_AGREE] == "1/1").all()
    t11 = pd.read_csv(tmp_path / "one" / "table11.csv", index_col=0)
    seed_metrics = json.loads((synthetic / "transfer" / "metrics" / "transfer" / f"seed{SEEDS[1]}" / "scenes.json")
                              .read_text())
    assert t11.loc["table11.D.stack", tables.OURS_MAP] == seed_metrics["scenes.D.stack.map"]
