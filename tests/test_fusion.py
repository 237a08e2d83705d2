"""Fusion of soft-max posteriors (§4.2-§4.4), top-k error, the paired bootstrap and the verdicts."""
import numpy as np
import pytest
import torch
import yaml

import stages.fuse
from vgg import fusion, stats
from vgg.io import StageError


def posteriors(n=200, classes=10, seed=0):
    logits = torch.randn(n, classes, generator=torch.Generator().manual_seed(seed))
    return logits.softmax(1)


def outcomes(wrong, n=1000):
    """Per-image correct (1) / wrong (0) with the images in `wrong` wrong."""
    correct = torch.ones(n, dtype=torch.long)
    correct[list(wrong)] = 0
    return correct


def record(run, protocol, scales, n=50, classes=10, seed=0):
    """A prediction file of the evaluate stage's contract."""
    g = torch.Generator().manual_seed(seed)
    net, train_scale = run.split("_")
    return {"run": run, "net": net, "train_scale": train_scale, "protocol": protocol, "scales": scales,
            "posteriors": {q: torch.randn(n, classes, generator=g).softmax(1) for q in scales},
            "labels": torch.arange(n) % classes}


def test_fusion_of_a_model_with_itself_equals_the_model():
    p = posteriors()
    for copies in (1, 2, 3, 7):
        assert torch.equal(fusion.average_posteriors([p] * copies), p)


def test_average_posteriors_is_the_mean_and_stays_a_distribution():
    a, b = posteriors(seed=1), posteriors(seed=2)
    fused = fusion.average_posteriors([a, b])
    torch.testing.assert_close(fused, (a + b) / 2)
    torch.testing.assert_close(fused.sum(1), torch.ones(len(a)))
    assert fused.dtype == torch.float32
    with pytest.raises(ValueError, match="cannot be averaged"):
        fusion.average_posteriors([a, a[:, :5]])


def test_top_k_error_counts_labels_outside_the_k_most_probable():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    labels = torch.tensor([0, 1, 2, 1])
    assert stats.correct_top_k(p, labels, 1).tolist() == [1, 0, 0, 1]
    assert stats.correct_top_k(p, labels, 2).tolist() == [1, 1, 0, 1]
    assert stats.top_k_error(p, labels, 1) == 50.0
    assert stats.top_k_error(p, labels, 2) == 25.0
    assert stats.top_k_error(p, labels, 5) == 0.0  # k beyond the classes: every label is in


def test_bootstrap_interval_of_identical_posteriors_is_zero():
    p = posteriors(1000)
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(0))
    correct = stats.correct_top_k(p, labels, 1)
    assert stats.paired_bootstrap(correct, correct, 1000, 0, 0.95) == (0.0, 0.0, 0.0)


def test_bootstrap_difference_is_err_a_minus_err_b_in_points():
    diff, low, high = stats.paired_bootstrap(outcomes(range(300)), outcomes(range(50)), 2000, 0, 0.95)
    assert diff == pytest.approx(25.0)
    assert low < diff < high
    assert stats.paired_bootstrap(outcomes(range(300)), outcomes(range(50)), 2000, 0, 0.95) == (diff, low, high)


def test_bootstrap_matches_resampling_image_indices():
    a = outcomes(list(range(0, 150)) + list(range(400, 460)))
    b = outcomes(list(range(100, 260)))
    _, low, high = stats.paired_bootstrap(a, b, 20000, 0, 0.9)
    rng = np.random.default_rng(1)
    index = rng.integers(0, len(a), size=(4000, len(a)))
    diffs = 100.0 * (b.numpy()[index].mean(1) - a.numpy()[index].mean(1))
    ref_low, ref_high = np.percentile(diffs, [5, 95])
    assert low == pytest.approx(ref_low, abs=0.3)
    assert high == pytest.approx(ref_high, abs=0.3)


def test_clearly_better_model_is_reproduced():
    baseline, better = outcomes(range(300)), outcomes(range(50))
    _, low, high = stats.paired_bootstrap(baseline, better, 2000, 0, 0.95)
    assert stats.verdict(low, high, "better") == "reproduced"


def test_clearly_worse_model_is_contradicted():
    baseline, worse = outcomes(range(50)), outcomes(range(300))
    _, low, high = stats.paired_bootstrap(baseline, worse, 2000, 0, 0.95)
    assert stats.verdict(low, high, "better") == "contradicted"


def test_equally_good_models_on_different_images_are_inconclusive():
    a, b = outcomes(range(100)), outcomes(range(100, 200))
    diff, low, high = stats.paired_bootstrap(a, b, 2000, 0, 0.95)
    assert diff == 0.0 and low < 0 < high
    assert stats.verdict(low, high, "better") == "inconclusive"


def test_does_not_help_is_an_equivalence_test_with_a_margin():
    # The candidate's gain, in points, against a margin of 0.5: reproduced only when the whole
    # interval lies below it, contradicted only when the whole interval lies above it.
    assert stats.verdict(-0.8, 0.3, "not better", 0.5) == "reproduced"
    assert stats.verdict(-2.0, -0.5, "not better", 0.5) == "reproduced"
    assert stats.verdict(0.0, 0.0, "not better", 0.5) == "reproduced"
    assert stats.verdict(0.6, 2.0, "not better", 0.5) == "contradicted"
    # A gain that may be small or large settles nothing, either way (the old rule said reproduced).
    assert stats.verdict(-0.5, 2.0, "not better", 0.5) == "inconclusive"
    assert stats.verdict(0.2, 0.9, "not better", 0.5) == "inconclusive"
    assert stats.verdict(0.2, 0.9, "not better", 1.0) == "reproduced"
    with pytest.raises(ValueError):
        stats.verdict(0, 1, "not better")  # no margin
    with pytest.raises(ValueError):
        stats.verdict(0, 1, "worse")


def test_parse_member_in_the_papers_notation():
    assert fusion.parse_member("D/256-512/256;384;512") == ("D_256-512", [256, 384, 512])
    assert fusion.parse_member("A-LRN/256/256") == ("A-LRN_256", [256])
    assert fusion.parse_member("C/384/352;384;416") == ("C_384", [352, 384, 416])
    for bad in ("D/256", "D/300x/256", "D/256/2x6", "D//256"):
        with pytest.raises(ValueError):
            fusion.parse_member(bad)


def test_parse_ensemble_reads_the_papers_table_6_rows():
    from vgg.paper import classification_rows
    rows = classification_rows()
    ensembles = [fusion.parse_ensemble(text) for text in rows.loc[rows["table"] == "T6", "net"]]
    assert [len(m) for m in ensembles] == [7, 2, 2, 2]
    assert ensembles[1] == ["D/256-512/256;384;512", "E/256-512/256;384;512"]
    with pytest.raises(ValueError):
        fusion.parse_ensemble("ENSEMBLE3:D/256/256+E/256/256")


def test_multi_crop_and_dense_averages_the_two_protocols_multi_scale_posteriors():
    scales = [256, 384, 512]
    files = {("D_256-512", p): record("D_256-512", p, scales, seed=i) for i, p in enumerate(fusion.PROTOCOLS[:2])}
    read = lambda run, protocol: files[(run, protocol)]  # noqa: E731
    got, labels = fusion.member_posteriors(read, "D/256-512/256;384;512", "multi-crop+dense")
    dense = sum(files[("D_256-512", "dense")]["posteriors"][q].double() for q in scales) / 3
    crops = sum(files[("D_256-512", "multi-crop")]["posteriors"][q].double() for q in scales) / 3
    torch.testing.assert_close(got, ((dense + crops) / 2).float())
    single, _ = fusion.member_posteriors(read, "D/256-512/384", "dense")
    assert torch.equal(single, files[("D_256-512", "dense")]["posteriors"][384])
    with pytest.raises(StageError, match="Q=288 not evaluated"):
        fusion.member_posteriors(read, "D/256-512/288", "dense")


def test_check_ensembles_names_the_bad_key():
    good = {"DE": {"members": ["D/256-512/256;384;512"], "protocol": "dense"}}
    assert fusion.check_ensembles(good) == good
    cases = [({"DE": {"members": ["D/256-512/256;384;512"], "protocol": "crops"}}, "fuse.ensembles.DE.protocol"),
             ({"DE": {"members": [], "protocol": "dense"}}, "fuse.ensembles.DE.members"),
             ({"DE": {"members": ["D/big/256"], "protocol": "dense"}}, "fuse.ensembles.DE.members"),
             ({"DE": {"members": ["D/256/256"]}}, "fuse.ensembles.DE:")]
    for ensembles, start in cases:
        with pytest.raises(StageError) as info:
            fusion.check_ensembles(ensembles)
        assert str(info.value).startswith(start)


@pytest.fixture
def fuse_setup(tmp_path):
    for run, scales in (("D_256-512", [256, 384, 512]), ("E_256-512", [256, 384, 512])):
        for i, protocol in enumerate(("dense", "multi-crop")):
            path = tmp_path / "preds" / run / f"{protocol}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(record(run, protocol, scales, seed=len(run) + i), path)
    members = ["D/256-512/256;384;512", "E/256-512/256;384;512"]
    settings = {"fuse": {"ensembles": {"DE_multi-crop+dense": {"members": members, "protocol": "multi-crop+dense"}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(settings))
    return tmp_path, members


def test_fuse_stage_writes_the_prediction_contract_with_the_members(fuse_setup):
    tmp_path, members = fuse_setup
    out = tmp_path / "preds" / "ensembles" / "DE_multi-crop+dense.pt"
    stages.fuse.main(["--params", str(tmp_path / "params.yaml"), "--name", "DE_multi-crop+dense",
                      "--preds", str(tmp_path / "preds"), "--out", str(out)])
    fused = torch.load(out, weights_only=False)
    assert fused["run"] == "DE_multi-crop+dense" and fused["members"] == members
    assert fused["protocol"] == "multi-crop+dense" and list(fused["posteriors"]) == ["fused"]
    read = fusion.preds_reader(tmp_path / "preds")
    by_hand = [fusion.member_posteriors(read, m, "multi-crop+dense")[0].double() for m in members]
    torch.testing.assert_close(fused["posteriors"]["fused"], (sum(by_hand) / 2).float())
    assert torch.equal(fused["labels"], read("D_256-512", "dense")["labels"])


def test_fuse_stage_errors_name_the_culprit_and_write_nothing(fuse_setup, capsys):
    tmp_path, _ = fuse_setup
    out = tmp_path / "out.pt"
    base = ["--params", str(tmp_path / "params.yaml"), "--preds", str(tmp_path / "preds"), "--out", str(out)]
    with pytest.raises(SystemExit):
        stages.fuse.main(base + ["--name", "ilsvrc7"])
    assert capsys.readouterr().err.startswith("error: --name: 'ilsvrc7' is not in fuse.ensembles")
    (tmp_path / "preds" / "E_256-512" / "multi-crop.pt").unlink()
    with pytest.raises(SystemExit):
        stages.fuse.main(base + ["--name", "DE_multi-crop+dense"])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "E_256-512/multi-crop.pt: " in err and "not found" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_fuse_stage_rejects_members_scored_on_different_images(fuse_setup, capsys):
    tmp_path, _ = fuse_setup
    for protocol in ("dense", "multi-crop"):
        path = tmp_path / "preds" / "E_256-512" / f"{protocol}.pt"
        other = torch.load(path, weights_only=False)
        other["labels"] = other["labels"].flip(0)
        torch.save(other, path)
    with pytest.raises(SystemExit):
        stages.fuse.main(["--params", str(tmp_path / "params.yaml"), "--name", "DE_multi-crop+dense",
                          "--preds", str(tmp_path / "preds"), "--out", str(tmp_path / "out.pt")])
    assert "E/256-512/256;384;512: its labels differ" in capsys.readouterr().err


def test_a_predictions_file_must_hold_the_run_and_protocol_its_path_names(tmp_path):
    path = tmp_path / "D_256" / "dense.pt"
    path.parent.mkdir()
    torch.save(record("D_384", "dense", [352, 384, 416]), path)
    with pytest.raises(StageError, match="holds run 'D_384', protocol 'dense', not 'D_256', 'dense'"):
        fusion.preds_reader(tmp_path)("D_256", "dense")


def seed_outcomes(n, error_a, error_b, rng):
    """0/1 outcomes of a (baseline) and b on n images, each wrong with the given probability."""
    return (rng.random(n) >= error_a).astype(np.int64), (rng.random(n) >= error_b).astype(np.int64)


def test_two_level_bootstrap_of_one_seed_is_the_image_bootstrap():
    a, b = outcomes(list(range(0, 150)) + list(range(400, 460))), outcomes(range(100, 260))
    assert stats.seed_paired_bootstrap(a[None], b[None], 2000, 0, 0.95) == stats.paired_bootstrap(a, b, 2000, 0, 0.95)


def test_two_level_bootstrap_without_seed_variance_gives_the_image_interval():
    # Three seeds that err on exactly the same images: nothing varies between trainings, so the
    # interval is the one-level paired bootstrap's (within Monte-Carlo error).
    rng = np.random.default_rng(0)
    a, b = seed_outcomes(3000, 0.20, 0.18, rng)
    one = stats.paired_bootstrap(a, b, 20000, 0, 0.95)
    three = stats.seed_paired_bootstrap(np.stack([a] * 3), np.stack([b] * 3), 20000, 0, 0.95)
    assert three[0] == pytest.approx(one[0])
    assert three[1] == pytest.approx(one[1], abs=0.1) and three[2] == pytest.approx(one[2], abs=0.1)


def test_two_level_bootstrap_widens_with_seed_to_seed_variance():
    # Per-seed gains of b of about -3, +1 and +5 points: the image-level interval of any one seed
    # is about 4 points wide, the spread between trainings 8, and the two-level interval covers it.
    rng = np.random.default_rng(1)
    pairs = [seed_outcomes(3000, 0.20, 0.20 + shift, rng) for shift in (0.03, -0.01, -0.05)]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    diff, low, high = stats.seed_paired_bootstrap(a, b, 20000, 0, 0.95)
    per_seed = [stats.paired_bootstrap(a[k], b[k], 20000, 0, 0.95) for k in range(3)]
    assert diff == pytest.approx(np.mean([d for d, _, _ in per_seed]))
    image_width = np.mean([h - l for _, l, h in per_seed])
    assert high - low > 1.5 * image_width
    assert low < min(d for d, _, _ in per_seed) + 1.0 and high > max(d for d, _, _ in per_seed) - 1.0
    # Pooling the three seeds' images as if one training saw 9000 would claim far more certainty.
    pooled = stats.paired_bootstrap(a.ravel(), b.ravel(), 20000, 0, 0.95)
    assert pooled[2] - pooled[1] < (high - low) / 3
    gains = [d for d, _, _ in per_seed]
    assert stats.seed_agreement(a, b) == (sum(np.sign(g) == np.sign(diff) for g in gains), 3,
                                          pytest.approx(np.std(gains, ddof=1), rel=1e-9))


def test_pooled_seed_variance_pools_the_sums_of_squares():
    # Own variances 1 (df 2) and 12 (df 2): pooled (2 + 24) / 4.
    assert stats.pooled_seed_variance([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]) == (pytest.approx(6.5), 4)
    assert stats.pooled_seed_variance([[1.0, 3.0], [0.0, 0.0, 6.0]]) == (pytest.approx((2.0 + 24.0) / 3), 3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.pooled_seed_variance([[1.0, 2.0], [3.0]])


def test_seed_t_interval_without_seed_variance_is_the_image_bootstrap():
    # Three identical trainings: no seed variance, so the interval is the one-level paired
    # bootstrap's (normal against percentile: equal within Monte-Carlo error at 3000 images).
    rng = np.random.default_rng(0)
    a, b = seed_outcomes(3000, 0.20, 0.18, rng)
    three_a, three_b = np.stack([a] * 3), np.stack([b] * 3)
    variance, df = stats.pooled_seed_variance([stats.per_seed_differences(three_a, three_b)])
    assert variance == 0.0
    diff, low, high = stats.paired_bootstrap(a, b, 20000, 0, 0.95)
    t_low, t_high = stats.seed_t_interval(diff, variance, df, 3, stats.image_variance(three_a, three_b), 0.95)
    assert t_low == pytest.approx(low, abs=0.1) and t_high == pytest.approx(high, abs=0.1)


def test_seed_t_interval_widens_with_seed_variance_and_with_fewer_degrees_of_freedom():
    # A seed sd of 2 points over 3 seeds on top of a 0.5-point image sd: the normal half-width would
    # be 1.96 * sqrt(4/3 + 0.25); few degrees of freedom for that sd widen it (t), many approach it.
    half = [stats.seed_t_interval(1.0, 4.0, df, 3, 0.25, 0.95)[1] - 1.0 for df in (2, 12, 10_000)]
    normal = 1.959964 * (4.0 / 3 + 0.25) ** 0.5
    assert half[0] > half[1] > half[2] == pytest.approx(normal, rel=1e-3)
    # Welch-Satterthwaite: df 2 for the seed part alone gives t(2), a known image part a little more df.
    assert stats.seed_t_interval(0.0, 4.0, 2, 3, 0.0, 0.95)[1] == pytest.approx(4.302653 * (4.0 / 3) ** 0.5)
    assert half[0] < 4.302653 * (4.0 / 3 + 0.25) ** 0.5
    assert stats.seed_t_interval(0.5, 0.0, 2, 3, 0.0, 0.95) == (0.5, 0.5)


def test_image_variance_is_the_variance_of_the_mean_paired_difference():
    a = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    b = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    per_image = 100.0 * np.array([1.0, 0.5, 0.0, -0.5])  # b - a averaged over the two seeds
    assert stats.image_variance(a, b) == pytest.approx(per_image.var() / 4)


def test_seed_agreement_counts_seeds_with_the_sign_of_the_mean_difference():
    a = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])  # baseline right on 2, 3, 4 of 4
    b = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]])  # b gains 50, 25, -25 points
    assert stats.seed_agreement(a, b) == (2, 3, pytest.approx(float(np.std([50, 25, -25], ddof=1))))
    assert stats.seed_agreement(a[:1], b[:1]) == (1, 1, 0.0)
