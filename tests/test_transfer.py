"""Appendix B (very deep features): descriptors, the scene and few-shot analogues, the SVMs, the
full-scale readers, the bootstrap, and the features and transfer stages end to end."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from sklearn.metrics import average_precision_score, balanced_accuracy_score

import stages.features
import stages.transfer
from conftest import ROOT, write_params
from vgg import io, models, paper, params, report, stats, tables, transfer
from vgg.data import ImageSet
from vgg.io import StageError
from vgg.transforms import rescale

CROP = 28
MEAN = [120.0, 110.0, 100.0]
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def tiny_model(net="D", seed=0, width=1 / 16):
    torch.manual_seed(seed)
    model = models.build_model(net, width=width, fc_width=32, num_classes=10, crop=CROP)
    return models.initialise(model, "glorot").eval()


def random_images(n, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=g)


def fc7(model, x):
    """fc7 after its ReLU from the net's own FC layers on crop-sized inputs (the reference)."""
    with torch.no_grad():
        return model.classifier[:5](torch.flatten(model.features(x), 1))


# ---------------------------------------------------------------- descriptors

def test_dense_descriptor_at_q_equal_to_the_crop_is_the_centre_crops_fc7_flip_averaged():
    # At Q = crop a square image rescaled to Q *is* its centre crop: the dense fc7 map has one cell.
    model, images = tiny_model(), random_images(3, 40, 40)
    got = transfer.describe(model, images, [CROP], MEAN, batch_size=8, device="cpu")
    x = rescale(images, CROP) - torch.tensor(MEAN)[:, None, None]
    expected = F.normalize((fc7(model, x) + fc7(model, x.flip(-1))) / 2, dim=1)
    assert got.dtype == torch.float32 and got.shape == (3, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert model.forward_fc7_dense(x).shape[-2:] == (1, 1)


def test_forward_dense_is_fc8_on_the_fc7_map():
    model, x = tiny_model(), torch.randn(2, 3, 48, 48)
    fc8 = model.classifier[6]
    with torch.no_grad():
        expected = F.conv2d(model.forward_fc7_dense(x), fc8.weight[:, :, None, None], fc8.bias)
        torch.testing.assert_close(model.forward_dense(x), expected)


def test_descriptor_averages_the_pooled_fc7_of_the_image_and_its_flip():
    # Q = 48 px: a 6 x 6 fc7 map, global-average-pooled, then the flip's pooled map averaged in.
    model, images = tiny_model(), random_images(2, 36, 36, seed=1)
    x = rescale(images, 48) - torch.tensor(MEAN)[:, None, None]
    with torch.no_grad():
        pooled, pooled_flip = (model.forward_fc7_dense(v).mean((2, 3)) for v in (x, x.flip(-1)))
    got = transfer.scale_descriptors(model, images, [48], MEAN, batch_size=8, device="cpu")[0]
    # Not yet normalised: App. B L2-normalises the final (aggregated) descriptor only.
    torch.testing.assert_close(got, (pooled + pooled_flip) / 2, rtol=1e-5, atol=1e-6)
    flipped = transfer.scale_descriptors(model, images.flip(-1), [48], MEAN, batch_size=8, device="cpu")[0]
    torch.testing.assert_close(flipped, got, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pooled, got, atol=1e-3)  # the flip does change it


def test_the_final_descriptor_has_unit_norm_and_aggregation_follows_app_b():
    model = tiny_model()
    per_scale = transfer.scale_descriptors(model, random_images(5, 30, 42), [28, 36, 48], MEAN, 4, "cpu")
    assert per_scale.shape == (3, 5, 32)
    average = transfer.aggregate_scales(per_scale, "average")
    stack = transfer.aggregate_scales(per_scale, "stack")
    both = transfer.concat_descriptors(average, stack)
    for d in (average, stack, both):  # App. B: "L2-normalise the result", once, after aggregation
        torch.testing.assert_close(d.norm(dim=1), torch.ones(len(d)))
    torch.testing.assert_close(average, F.normalize(per_scale.mean(0), dim=1))
    # Stacking: the raw per-scale descriptors side by side, normalised together.
    torch.testing.assert_close(stack, F.normalize(torch.cat(list(per_scale), dim=1), dim=1))
    torch.testing.assert_close(both[:, :32] * 2 ** 0.5, average)
    with pytest.raises(ValueError, match="unknown aggregation"):
        transfer.aggregate_scales(per_scale, "max")


def test_files_of_several_sizes_give_the_descriptors_of_each_image_alone(tmp_path):
    sizes = [(30, 40), (40, 30), (30, 40), (28, 28), (30, 40)]
    images = [random_images(1, h, w, seed=i)[0] for i, (h, w) in enumerate(sizes)]
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    dataset = ImageSet({"kind": "files", "root": str(tmp_path), "paths": [f"{i}.png" for i in range(5)],
                        "labels": torch.zeros(5, 3, dtype=torch.uint8), "classes": ["a", "b", "c"]})
    model = tiny_model()
    got = transfer.scale_descriptors(model, dataset, [28, 36], MEAN, batch_size=4, device="cpu")
    alone = torch.cat([transfer.scale_descriptors(model, image[None], [28, 36], MEAN, 4, "cpu") for image in images], 1)
    torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- scenes

def solid_garments(n=30, classes=10):
    """Source images that are solid squares of distinct grey levels 10 + i, label i mod `classes`:
    every pixel of a scene names the garment it shows."""
    images = (10 + torch.arange(n, dtype=torch.uint8))[:, None, None, None].expand(n, 3, 28, 28).contiguous()
    return images, torch.arange(n) % classes


def test_scene_labels_are_the_classes_of_the_garments_placed():
    images, labels = solid_garments()
    scenes, multi_hot = transfer.make_scenes(images, labels, 60, canvas=56, objects_per_scene=(1, 4),
                                             object_scale=(0.5, 1.0), seed=3)
    assert scenes.shape == (60, 3, 56, 56) and scenes.dtype == torch.uint8
    assert multi_hot.shape == (60, 10) and multi_hot.dtype == torch.uint8
    counts = []
    for scene, target in zip(scenes, multi_hot):
        values = scene[0].unique()
        sources = (values[values > 0] - 10).long()
        counts.append(len(sources))
        expected = torch.zeros(10, dtype=torch.uint8)
        expected[labels[sources]] = 1
        assert torch.equal(target, expected)
        for v in values[values > 0]:
            ys, xs = (scene[0] == v).nonzero().unbind(1)
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            # A garment (a square) keeps at least half its pixels: at least half its visible box.
            assert len(ys) >= transfer.MIN_VISIBLE * box
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1


def test_scenes_are_deterministic_for_a_seed_and_differ_across_seeds():
    images, labels = solid_garments()
    a = transfer.make_scenes(images, labels, 20, seed=0)
    b = transfer.make_scenes(images, labels, 20, seed=0)
    c = transfer.make_scenes(images, labels, 20, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_scene_splits_draw_their_garments_from_disjoint_source_images():
    images, labels = solid_garments(n=60)
    splits = transfer.scene_splits(images, labels, {"train": 30, "val": 10, "test": 30}, 56, (1, 4), (0.5, 1.0), 0)
    assert [len(splits[s][0]) for s in transfer.SCENE_SPLITS] == [30, 10, 30]
    used = {s: set(splits[s][0][:, 0].unique().tolist()) - {0} for s in transfer.SCENE_SPLITS}
    assert not used["train"] & used["test"] and not used["train"] & used["val"] and not used["val"] & used["test"]


def test_digits_are_upscaled_white_on_black_images_of_ten_new_classes():
    images, labels = transfer.load_digits_images()
    assert images.shape == (1797, 3, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 2]) and images.max() >= 250 and (images < 32).double().mean() > 0.4  # dark background
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digit_tasks_are_deterministic_and_no_digit_image_is_in_both_train_and_test():
    settings = params.transfer_section(params.load_params(ROOT / "params.yaml"))
    settings.update(train=60, val=20, test=60, scenes_dataset="digits", fewshot_dataset="digits")
    images, labels = transfer.load_digits_images()
    a = transfer.target_set("scenes", settings, FASHION_MNIST)
    b = transfer.target_set("scenes", settings, FASHION_MNIST)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == list(transfer.DIGIT_CLASSES)
    assert "digits" in a[4]
    # Each split's scenes are pasted from its own share of the digit images: find each pasted digit's
    # source by its pixels (a scene at object scale 1 with no overlap keeps a digit's exact 28 x 28).
    splits = transfer.scene_splits(images, labels, {"train": 60, "val": 20, "test": 60}, 56, (1, 1), (1.0, 1.0), 0)
    keys = {bytes(images[i].numpy()): i for i in range(len(images))}
    used = {}
    for split in transfer.SCENE_SPLITS:
        found = set()
        for scene in splits[split][0]:
            for top in range(0, 29):
                for left in range(0, 29):
                    i = keys.get(bytes(scene[:, top:top + 28, left:left + 28].contiguous().numpy()))
                    if i is not None:
                        found.add(i)
        used[split] = found
    assert used["train"] and used["test"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    # Few-shot: every split's training and test images are disjoint, the same for a seed.
    x, y, classes, _, source = transfer.target_set("fewshot", settings, FASHION_MNIST)
    assert len(y) == 1797 and "digits" in source
    first = transfer.few_shot_splits(y, 30, 3, 0)
    assert all(not set(train) & set(test) and len(train) == 300 for train, test in first)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, transfer.few_shot_splits(y, 30, 3, 0)))
    # The garment tasks keep Fashion-MNIST's classes whatever the target set.
    assert transfer.target_set("garment_fewshot", settings, FASHION_MNIST)[2][0] == "T-shirt/top"


def test_unconverged_svm_fits_are_counted_not_silenced():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 40)), rng.integers(0, 2, 60)
    failures = []
    transfer._fit(transfer.LinearSVC(C=1000, max_iter=2, dual=True), x, y, failures)
    assert len(failures) == 1 and "converge" in failures[0].lower()
    transfer._fit(transfer._svm(0.1, 0), x, y, failures)
    assert len(failures) == 1
    # One-vs-rest fits on threads (both cores): each class's unconverged fit still counted.
    stalled = transfer.OneVsRestClassifier(transfer.LinearSVC(C=1000, max_iter=2, dual=True), n_jobs=-1)
    transfer._fit(stalled, x, rng.integers(0, 3, 60), failures)
    assert len(failures) == 4


# ---------------------------------------------------------------- SVMs and metrics

def test_fast_map_equals_scikit_learns_average_precision_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 6))
    y[:, 5] = 0  # no positives: left out of the mean
    scores = np.round(rng.normal(size=(200, 6)) + y, 1)  # many tied scores
    expected = np.mean([100 * average_precision_score(y[:, c], scores[:, c]) for c in range(5)])
    mean_ap, aps = transfer.mean_average_precision(y, scores)
    assert mean_ap == pytest.approx(expected) and np.isnan(aps[5])
    assert transfer.fast_mean_average_precision(y, scores) == pytest.approx(expected, abs=1e-10)


def test_mean_class_recall_is_balanced_accuracy():
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    assert transfer.mean_class_recall(y, pred) == pytest.approx(100 * balanced_accuracy_score(y, pred))


def separable(n, classes, dim=16, seed=0, multi_label=True):
    """Descriptors that are the (multi-hot or one-hot) label embedded in `dim` dimensions, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, classes)) if multi_label else rng.integers(0, classes, n)
    hot = y if multi_label else np.eye(classes)[y]
    x = np.concatenate([hot, np.zeros((n, dim - classes))], 1) + 0.05 * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_svms_on_a_separable_multi_label_set_give_map_100():
    x, y = separable(120, 4)
    svms, C = transfer.train_svms(x[:60], y[:60], x[60:80], y[60:80], [0.01, 1.0, 10.0], seed=0)
    assert C in (0.01, 1.0, 10.0)
    assert transfer.mean_average_precision(y[80:], svms.decision_function(x[80:]))[0] == pytest.approx(100.0)


def test_few_shot_splits_have_n_per_class_and_disjoint_train_and_test():
    labels = np.repeat(np.arange(4), [12, 15, 11, 20])
    splits = transfer.few_shot_splits(labels, per_class=5, splits=3, seed=0)
    assert len(splits) == 3
    for train, test in splits:
        assert np.array_equal(np.bincount(labels[train]), [5, 5, 5, 5])
        assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert not np.array_equal(splits[0][0], splits[1][0])
    again = transfer.few_shot_splits(labels, per_class=5, splits=3, seed=0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again))
    with pytest.raises(StageError, match="transfer.fewshot_per_class"):
        transfer.few_shot_splits(labels, per_class=11, splits=1, seed=0)


def test_few_shot_svm_on_a_separable_set_recalls_every_class():
    x, y = separable(80, 4, multi_label=False)
    train, test = transfer.few_shot_splits(y, per_class=6, splits=1, seed=0)[0]
    svm, C = transfer.train_few_shot(x[train], y[train], [0.1, 1.0], folds=3, seed=0)
    assert C in (0.1, 1.0)
    assert transfer.mean_class_recall(y[test], svm.predict(x[test])) == 100.0


def test_search_C_scores_in_increasing_order_and_stops_at_the_first_fall():
    curve = {0.1: 40.0, 1.0: 50.0, 10.0: 55.0, 100.0: 54.0, 1000.0: 60.0}
    asked = []

    def score(C):
        asked.append(C)
        return curve[C]

    C, tried = transfer.search_C([1000.0, 1.0, 0.1, 100.0, 10.0], score)
    assert (C, asked) == (10.0, [0.1, 1.0, 10.0, 100.0])  # 1000 never fitted, though it would score best
    assert tried == [(C, curve[C]) for C in asked]
    # A tie neither wins nor ends the search: the first best stays, a later rise still counts.
    assert transfer.search_C([1, 2, 3, 4], {1: 5.0, 2: 5.0, 3: 6.0, 4: 1.0}.get)[0] == 3
    assert transfer.search_C([1, 2, 3], {1: 5.0, 2: 5.0, 3: 5.0}.get) == (1, [(1, 5.0), (2, 5.0), (3, 5.0)])
    # A score still rising at the top of the grid: every C scored, the top one chosen.
    assert transfer.search_C([1, 2, 3], {1: 1.0, 2: 2.0, 3: 3.0}.get)[0] == 3


def test_few_shot_search_scores_the_whole_grid_by_cross_validated_recall():
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = separable(90, 3, dim=12, seed=4, multi_label=False)
    x = x + 0.25 * np.random.default_rng(5).normal(size=x.shape)  # noisy enough for C to matter
    Cs = [0.01, 0.1, 1.0, 10.0, 100.0]
    tried = []
    _, C = transfer.train_few_shot(x, y, Cs, folds=3, seed=0, tried=tried)
    assert [c for c, _ in tried] == Cs
    scores = [v for _, v in tried]
    assert C == Cs[int(np.argmax(scores))] and len(set(np.round(scores, 6))) > 1
    # The second C's score is its mean class recall over the same 3 stratified folds.
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    assert scores[1] == pytest.approx(cross_val_score(transfer._svm(0.1, 0), x, y, scoring="balanced_accuracy",
                                                      cv=cv).mean())


def test_scene_search_records_each_C_tried_and_its_validation_map():
    x, y = separable(160, 4, dim=12, seed=2)
    x = x + 0.3 * np.random.default_rng(3).normal(size=x.shape)
    tried = []
    svms, C = transfer.train_svms(x[:80], y[:80], x[80:120], y[80:120], [0.001, 0.01, 0.1, 1.0, 10.0], seed=0,
                                  tried=tried)
    assert C == max(tried, key=lambda t: t[1])[0]
    first = transfer.OneVsRestClassifier(transfer._svm(tried[0][0], 0)).fit(x[:80], y[:80])
    assert tried[0][1] == pytest.approx(transfer.fast_mean_average_precision(y[80:120], first.decision_function(x[80:120])))


# ---------------------------------------------------------------- full-scale readers

def write_voc(root, annotations, sets):
    """A VOCdevkit/VOC2007 tree: annotations {id: [(class, difficult)]}, sets {name: [ids]}."""
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for i, (image_id, objects) in enumerate(annotations.items()):
        pixels = np.random.default_rng(i).integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{name}</name><difficult>{int(d)}</difficult></object>" for name, d in objects)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>{xml}</annotation>")
    for name, ids in sets.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def test_voc2007_reader_gives_multi_hot_labels_difficult_objects_included(tmp_path):
    voc = write_voc(tmp_path, {"000005": [("chair", False), ("chair", True), ("person", False)],
                               "000007": [("car", False)], "000009": [("dog", True)]},
                    {"train": ["000005"], "val": ["000007"], "test": ["000009"]})
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        found, sets = transfer.read_voc2007(root)
        assert found == voc
    paths, labels = sets["train"]
    assert paths == ["JPEGImages/000005.jpg"] and labels.shape == (1, 20)
    assert [transfer.VOC_CLASSES[c] for c in labels[0].nonzero().flatten()] == ["chair", "person"]
    assert [transfer.VOC_CLASSES[c] for c in sets["test"][1][0].nonzero().flatten()] == ["dog"]
    image = ImageSet({"kind": "files", "root": str(voc), "paths": paths, "labels": labels, "classes": []}).image(0)
    assert image.shape == (3, 20, 30)


def test_voc2007_reader_names_the_bad_file(tmp_path):
    voc = write_voc(tmp_path, {"000001": [("unicorn", False)]}, {"train": ["000001"], "val": [], "test": []})
    with pytest.raises(StageError, match=r"000001.xml: unknown VOC class 'unicorn'"):
        transfer.read_voc2007(tmp_path)
    (voc / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(StageError, match="test.txt: image set not found"):
        transfer.read_voc2007(tmp_path, ["test"])
    with pytest.raises(StageError, match="no VOC2007 directory"):
        transfer.read_voc2007(tmp_path / "elsewhere")


def test_class_folder_reader_skips_the_background_classes(tmp_path):
    for name, count in (("ant", 2), ("bee", 3), ("BACKGROUND_Google", 2), ("257.clutter", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.jpg")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    paths, labels, classes = transfer.read_class_folders(tmp_path)
    assert classes == ["ant", "bee"]
    assert paths == ["ant/0.jpg", "ant/1.jpg", "bee/0.jpg", "bee/1.jpg", "bee/2.jpg"]
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert transfer.read_class_folders(tmp_path, exclude=())[2] == ["257.clutter", "BACKGROUND_Google", "ant", "bee"]
    (tmp_path / "cow").mkdir()
    with pytest.raises(StageError, match="cow: empty class"):
        transfer.read_class_folders(tmp_path)


# ---------------------------------------------------------------- statistics

def test_bootstrap_of_a_non_decomposable_metric_contains_its_point_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (150, 4))
    a = rng.normal(size=(150, 4)) + 0.5 * y
    b = a + 1.0 * y * rng.random((150, 4))  # b ranks the positives higher: better
    metric = transfer.fast_mean_average_precision
    diff, low, high = stats.paired_bootstrap_metric(metric, y, a, b, 300, 0, 0.95)
    assert diff == pytest.approx(metric(y, b) - metric(y, a))
    assert low < diff < high and low > 0
    assert stats.verdict(low, high) == "reproduced"
    assert stats.paired_bootstrap_metric(metric, y, a, b, 300, 0, 0.95) == (diff, low, high)
    same = stats.paired_bootstrap_metric(metric, y, a, a, 50, 0, 0.95)
    assert same == (0.0, 0.0, 0.0)


def _resamples(n, count, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(count)]


def test_weighted_map_equals_the_map_of_each_resample_ties_and_absent_classes_included():
    rng = np.random.default_rng(1)
    y = rng.random((40, 5)) < 0.15  # few positives: some resamples draw none of a class
    y[:, 4] = False  # a class with no positive at all: left out, as fast_mean_average_precision does
    scores = rng.integers(0, 6, (40, 5)).astype(float)  # coarse scores: many ties
    draws = _resamples(40, 60, 2)
    counts = np.stack([np.bincount(idx, minlength=40) for idx in draws])
    got = transfer.weighted_mean_average_precision(y, scores)(counts)
    expected = [transfer.fast_mean_average_precision(y[idx], scores[idx]) for idx in draws]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert abs(got[0] - transfer.mean_average_precision(y[draws[0]], scores[draws[0]])[0]) < 1e-9
    assert np.isnan(transfer.weighted_mean_average_precision(y[:, 4:], scores[:, 4:])(counts[:2])).all()


def test_weighted_split_recall_equals_the_recall_of_each_resample():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 30)
    splits = [(np.arange(0, 30, 3), np.setdiff1d(np.arange(30), np.arange(0, 30, 3))),
              (np.arange(1, 30, 3), np.setdiff1d(np.arange(30), np.arange(1, 30, 3)))]
    table = transfer.split_table(30, splits, [rng.integers(0, 4, 20) for _ in splits])
    draws = _resamples(30, 80, 4)  # 30 draws of 4 classes: some resamples miss a class in a split
    counts = np.stack([np.bincount(idx, minlength=30) for idx in draws])
    with np.errstate(invalid="ignore"):
        got = transfer.weighted_mean_split_recall(y, table)(counts)
    expected = [transfer.mean_split_recall(y[idx], table[idx]) for idx in draws]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("task", ["scenes", "fewshot"])
def test_bootstrap_over_multiplicities_draws_and_scores_as_the_loop(task):
    rng = np.random.default_rng(5)
    if task == "scenes":
        y = rng.integers(0, 2, (120, 4))
        a = rng.normal(size=(120, 4)) + 0.5 * y
        b = a + y * rng.random((120, 4))
        metric, weighted = transfer.fast_mean_average_precision, transfer.weighted_mean_average_precision
    else:
        y = rng.integers(0, 5, 120)
        splits = [(np.arange(k, 120, 4), np.setdiff1d(np.arange(120), np.arange(k, 120, 4))) for k in range(3)]
        a = transfer.split_table(120, splits, [np.where(rng.random(90) < 0.6, y[t], 0) for _, t in splits])
        b = transfer.split_table(120, splits, [np.where(rng.random(90) < 0.8, y[t], 0) for _, t in splits])
        metric, weighted = transfer.mean_split_recall, transfer.weighted_mean_split_recall
    loop = stats.paired_bootstrap_metric(metric, y, a, b, 400, 7, 0.95)
    fast = stats.paired_bootstrap_metric(metric, y, a, b, 400, 7, 0.95, weighted=weighted, chunk=64)
    assert fast[0] == loop[0] and loop[1] > 0  # b better, in both
    np.testing.assert_allclose(fast[1:], loop[1:], rtol=0, atol=1e-9)


def test_split_recall_scores_each_image_only_in_the_splits_it_tests():
    y = np.array([0, 0, 1, 1])
    splits = [(np.array([0, 2]), np.array([1, 3])), (np.array([1, 3]), np.array([0, 2]))]
    table = transfer.split_table(4, splits, [np.array([0, 0]), np.array([0, 1])])
    assert table.tolist() == [[-1, 0], [0, -1], [-1, 1], [0, -1]]
    assert transfer.split_recalls(y, table) == [50.0, 100.0]
    assert transfer.mean_split_recall(y, table) == 75.0


# ---------------------------------------------------------------- params

def test_transfer_params_validate_and_name_the_bad_key():
    repo = params.load_params(ROOT / "params.yaml")
    assert params.transfer_section(repo) == repo["transfer"]
    repo["transfer"]["single_scale"] = 300
    with pytest.raises(StageError, match=r"^transfer.single_scale: 300 is not one of transfer.scales"):
        params.transfer_section(repo)
    repo["transfer"]["objects"] = [0, 4]
    with pytest.raises(StageError, match=r"^transfer.objects: \[0, 4\] must be"):
        params.transfer_section(repo)


# ---------------------------------------------------------------- the stages, end to end

def tiny_transfer_params(tmp_path):
    all_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    all_params["data"]["root"] = FASHION_MNIST
    all_params["transfer"].update(train=40, val=20, test=40, fewshot_limit=100, fewshot_per_class=4,
                                  fewshot_splits=2, fewshot_cv_folds=2, svm_C=[0.1, 10], fewshot_svm_C=[0.1, 10], batch_size=64, bf16=False)
    return write_params(tmp_path / "params.yaml", all_params)


def save_tiny_model(path, net, seed=0):
    kwargs = {"width": 0.125, "fc_width": 32, "num_classes": 10, "crop": CROP}
    model = models.initialise(models.build_model(net, **kwargs), "glorot",
                              generator=torch.Generator().manual_seed(seed))
    io.atomic_save(models.model_record(model, kwargs, train_scale=(256, 512)), path)


def run_features_and_transfer(tmp_path, seeds=(0,)):
    """The features and transfer stages on tiny untrained D and E of each seed (weights drawn from that
    seed), laid out as dvc.yaml's: features/seed<k>/, metrics/transfer/seed<k>/ and preds/seed<k>/transfer/."""
    params_path = tiny_transfer_params(tmp_path)
    (tmp_path / "mean_rgb.json").write_text(json.dumps({"mean": MEAN}))
    for seed in seeds:
        model_paths = [tmp_path / "models" / f"seed{seed}" / f"{net}_256-512.pt" for net in ("D", "E")]
        for path, net in zip(model_paths, ("D", "E")):
            save_tiny_model(path, net, seed)
        for dataset in transfer.TASKS:
            features = tmp_path / "features" / f"seed{seed}" / dataset
            stages.features.main(["--params", str(params_path), "--net-model", *map(str, model_paths),
                                  "--dataset", dataset, "--mean-rgb", str(tmp_path / "mean_rgb.json"),
                                  "--out", str(features / "D.pt"), str(features / "E.pt")])
            stages.transfer.main(["--params", str(params_path), "--task", dataset,
                                  "--features", str(features / "D.pt"), str(features / "E.pt"),
                                  "--out", str(tmp_path / "metrics" / "transfer" / f"seed{seed}" / f"{dataset}.json"),
                                  "--preds", str(tmp_path / "preds" / f"seed{seed}" / "transfer" / f"{dataset}.pt")])
    return params_path


def test_features_and_transfer_stages_end_to_end(tmp_path):
    run_features_and_transfer(tmp_path)
    scenes = transfer.load_features(tmp_path / "features" / "seed0" / "scenes" / "D.pt", "scenes")
    assert scenes["scales"] == [256, 384, 512] and scenes["pixels"] == [32, 48, 64]
    assert scenes["descriptors"][384].shape == (100, 32) and scenes["labels"].shape == (100, 10)
    assert [len(scenes["splits"][s]) for s in transfer.SCENE_SPLITS] == [40, 20, 40]
    preds_dir = tmp_path / "preds" / "seed0" / "transfer"
    preds = {task: transfer.load_predictions(preds_dir / f"{task}.pt", task) for task in transfer.TASKS}
    with pytest.raises(StageError, match="not the transfer stage's predictions for task 'scenes'"):
        transfer.load_predictions(preds_dir / "fewshot.pt", "scenes")
    metrics_dir = tmp_path / "metrics" / "transfer" / "seed0"
    metrics = {**json.loads((metrics_dir / "scenes.json").read_text()),
               **json.loads((metrics_dir / "fewshot.json").read_text())}
    for net in ("D", "E", "DE"):
        for variant in transfer.VARIANTS:
            assert 0 <= metrics[f"scenes.{net}.{variant}.map"] <= 100
            assert 0 <= metrics[f"fewshot.{net}.{variant}.recall"] <= 100
            assert metrics[f"fewshot.{net}.{variant}.recall_std"] >= 0
    assert preds["scenes"]["scores"]["DE.stack"].shape == (40, 10)
    assert preds["fewshot"]["predictions"]["D.stack"].shape == (100, 2)
    assert (preds["fewshot"]["predictions"]["D.stack"] >= 0).sum() == 2 * (100 - 40)

    paper_rows = paper.transfer_rows()
    t11 = tables.table11({0: metrics}, paper_rows, [256, 384, 512], 384)
    assert t11.loc["table11.DE.average", tables.OURS_MAP] == metrics["scenes.DE.average.map"]
    assert t11.loc["table11.DE.average", tables.OURS_MAP_SD] == 0.0  # one seed
    assert t11.loc["table11.DE.average", "VOC-2007 mAP (paper)"] == 89.7
    assert t11.loc["table11.D.stack", "Caltech-101 recall (paper)"] == 91.8
    assert pd.isna(t11.loc["table11.D.single", "VOC-2007 mAP (paper)"])
    # The garment tasks: the nets' own classes in a new layout, an extra row per variant, no paper value.
    garments = json.loads((metrics_dir / "garment_scenes.json").read_text())
    t11 = tables.table11({0: {**metrics, **garments}}, paper_rows, [256, 384, 512], 384)
    assert t11.loc["table11.garments.DE.average", tables.OURS_MAP] == garments["garment_scenes.DE.average.map"]
    assert t11.loc["table11.garments.DE.average", "source"] == "ours, same classes"
    assert pd.isna(t11.loc["table11.garments.DE.average", "VOC-2007 mAP (paper)"])
    claims = tables.transfer_claims({0: preds["scenes"]}, {0: preds["fewshot"]}, paper_rows, 50, 0, 0.95, 0.5)
    assert list(claims.index) == [key for key, *_ in tables.TRANSFER_CLAIMS]
    assert set(claims["verdict"]) <= set(stats.VERDICTS)
    # One seed: each interval is the one-level paired bootstrap over the test items, as before seeds.
    y, scores_d, metric = tables._transfer_scores(preds["scenes"], "D", "average")
    _, scores_s, _ = tables._transfer_scores(preds["scenes"], "D", "single")
    one_level = stats.paired_bootstrap_metric(metric, y, scores_s, scores_d, 50, 0 + 1, 0.95,
                                              weighted=tables.WEIGHTED_METRICS[metric])
    assert tuple(claims.loc["transfer_multi_scale_D", ["ours: X - Y", "CI low", "CI high"]]) == one_level
    assert claims.loc["transfer_multi_scale_D", tables.SEEDS_AGREE] == "1/1"
    # App. B's VOC finding, "stacking and averaging perform similarly", is an equivalence test.
    same = claims.loc["transfer_stack_no_better_scenes_D"]
    assert same["verdict"] == stats.verdict(same["CI low"], same["CI high"], "not better", 0.5)
    assert (same["X"], same["Y"]) == ("D stacked", "D averaged")
    assert claims.loc["transfer_DE_beats_best_net", "paper: X - Y"] == pytest.approx(0.4)
    # Few-shot: Caltech-101 recalls, D&E 92.7 against D 91.8 or E 92.3, whichever of ours is better.
    assert claims.loc["transfer_DE_beats_best_net_fewshot", "paper: X - Y"] in (pytest.approx(0.9), pytest.approx(0.4))
    assert claims.loc["transfer_DE_beats_best_net_fewshot", "X"] == "D&E stacked"
    assert pd.isna(claims.loc["transfer_multi_scale_D_fewshot", "paper: X - Y"])
    assert (claims["CI low"] <= claims["ours: X - Y"] + 1e-9).all()
    page = report.table11_page(t11, claims, 0.95, 50, {"scenes": "s", "fewshot": "f"})
    assert page.startswith("# Table 11") and "Chatfield" in page and "transfer_stack_beats_average_D" in page
    assert "**One training per net**" in page
    assert set(tables.transfer_metrics(claims)) == {f"claims.{k}.{m}" for k in claims.index
                                                     for m in ("diff", "ci_low", "ci_high")}


def test_one_features_call_describes_each_net_as_a_call_of_its_own(tmp_path):
    # `features` builds the target set once and describes D and E with it: the same descriptors, bit for bit,
    # as one call per net (the layout before seeds).
    params_path = run_features_and_transfer(tmp_path)
    for net in ("D", "E"):
        alone = tmp_path / "alone" / f"{net}.pt"
        stages.features.main(["--params", str(params_path), "--net-model",
                              str(tmp_path / "models" / "seed0" / f"{net}_256-512.pt"), "--dataset", "scenes",
                              "--mean-rgb", str(tmp_path / "mean_rgb.json"), "--out", str(alone)])
        both = transfer.load_features(tmp_path / "features" / "seed0" / "scenes" / f"{net}.pt", "scenes")
        one = transfer.load_features(alone, "scenes")
        assert both["net"] == one["net"] == net
        assert all(torch.equal(both["descriptors"][q], one["descriptors"][q]) for q in one["scales"])
        assert torch.equal(both["labels"], one["labels"])


def test_transfer_claims_over_seeds_are_means_with_the_pooled_interval(tmp_path):
    run_features_and_transfer(tmp_path, seeds=(0, 1))
    paper_rows = paper.transfer_rows()
    load = lambda seed, task: transfer.load_predictions(  # noqa: E731
        tmp_path / "preds" / f"seed{seed}" / "transfer" / f"{task}.pt", task)
    scenes, fewshot = {k: load(k, "scenes") for k in (0, 1)}, {k: load(k, "fewshot") for k in (0, 1)}
    claims = tables.transfer_claims(scenes, fewshot, paper_rows, 200, 0, 0.95, 0.5)
    per_seed = {k: tables.transfer_claims({k: scenes[k]}, {k: fewshot[k]}, paper_rows, 200, 0, 0.95, 0.5)
                for k in (0, 1)}
    for key in ("transfer_multi_scale_D", "transfer_stack_beats_average_D", "transfer_stack_no_better_scenes_D"):
        diffs = [per_seed[k].loc[key, "ours: X - Y"] for k in (0, 1)]
        row = claims.loc[key]
        assert row["ours: X - Y"] == pytest.approx(np.mean(diffs))
        assert row[tables.N_SEEDS] == 2 and row[tables.SEED_SD] == pytest.approx(np.std(diffs, ddof=1))
        assert row[tables.SEEDS_AGREE] == f"{sum(np.sign(d) == np.sign(np.mean(diffs)) for d in diffs)}/2"
        assert row[tables.POOL].startswith(tables.SAME_NETS)  # the same net D, aggregated two ways
        assert row["CI low"] < row["ours: X - Y"] < row["CI high"]
    # The two claims on the same net and task share one pooled seed sd; the other task's pool is its own.
    assert claims.loc["transfer_multi_scale_D", tables.POOLED_SD] == claims.loc[
        "transfer_stack_no_better_scenes_D", tables.POOLED_SD]
    assert claims.loc["transfer_multi_scale_D", tables.POOL] != claims.loc["transfer_multi_scale_D_fewshot", tables.POOL]
    metrics = {k: {**json.loads((tmp_path / "metrics" / "transfer" / f"seed{k}" / "scenes.json").read_text()),
                   **json.loads((tmp_path / "metrics" / "transfer" / f"seed{k}" / "fewshot.json").read_text())}
               for k in (0, 1)}
    garments = json.loads((tmp_path / "metrics" / "transfer" / "seed0" / "garment_scenes.json").read_text())
    t11 = tables.table11({0: {**metrics[0], **garments}, 1: metrics[1]}, paper_rows, [256, 384, 512], 384)
    values = [metrics[k]["scenes.D.stack.map"] for k in (0, 1)]
    assert t11.loc["table11.D.stack", tables.OURS_MAP] == pytest.approx(np.mean(values))
    assert t11.loc["table11.D.stack", tables.OURS_MAP_SD] == pytest.approx(np.std(values, ddof=1))
    assert t11.loc["table11.D.stack", tables.SEED_MAP.format(1)] == values[1]
    # The garment rows come from the first seed alone: no seed sd rather than a false 0.
    assert t11.loc["table11.garments.D.stack", tables.OURS_MAP] == garments["garment_scenes.D.stack.map"]
    assert pd.isna(t11.loc["table11.garments.D.stack", tables.OURS_MAP_SD])
    page = report.table11_page(t11, claims, 0.95, 200, {"scenes": "s", "fewshot": "f"}, seeds=[0, 1])
    assert "**2 trainings per net** (seeds 0, 1)" in page and "Student-t" in page
    assert "scene mAP seed 1" not in page  # each seed's value: in the CSV only
    # Every seed must have scored the same test items.
    other = dict(fewshot[1], labels=fewshot[1]["labels"].flip(0))
    with pytest.raises(ValueError, match="seed 1's fewshot predictions are on other test items than seed 0's"):
        tables.transfer_claims(scenes, {0: fewshot[0], 1: other}, paper_rows, 20, 0, 0.95, 0.5)


def test_features_stage_refuses_a_model_other_than_the_params_name(tmp_path, capsys):
    params_path = tiny_transfer_params(tmp_path)
    save_tiny_model(tmp_path / "D_384.pt", "D")
    with pytest.raises(SystemExit) as exit_info:
        stages.features.main(["--params", str(params_path), "--net-model", str(tmp_path / "D_384.pt"),
                              "--dataset", "scenes", "--out", str(tmp_path / "f.pt")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: transfer.nets.D: 'D_256-512', but --net-model is")
    assert not (tmp_path / "f.pt").exists()


def test_full_scale_sets_switched_by_params_run_through_both_stages(tmp_path):
    # VOC-2007 (multi-label, from the XML) for the scene task, Caltech-style class folders for few-shot.
    classes = ["cat", "dog", "person", "car"]
    annotations = {f"{i:06d}": [(classes[i % 4], False), (classes[(i + 1) % 4], i % 3 == 0)] for i in range(12)}
    ids = sorted(annotations)
    write_voc(tmp_path, annotations, {"train": ids[:6], "val": ids[6:8], "test": ids[8:]})
    caltech = tmp_path / "caltech"
    for c, name in enumerate(["ant", "bee", "cow", "BACKGROUND_Google"]):
        (caltech / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.random.default_rng(10 * c + i).integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(caltech / name / f"image_{i:04d}.jpg")
    all_params = yaml.safe_load(tiny_transfer_params(tmp_path).read_text())
    all_params["transfer"].update(scenes_dataset="voc2007", scenes_root=str(tmp_path), fewshot_dataset="caltech",
                                  fewshot_root=str(caltech), fewshot_per_class=2)
    params_path = write_params(tmp_path / "params.yaml", all_params)
    (tmp_path / "mean_rgb.json").write_text(json.dumps({"mean": MEAN}))
    save_tiny_model(tmp_path / "D_256-512.pt", "D")
    for task in ("scenes", "fewshot"):  # the garment tasks stay on Fashion-MNIST (tested above)
        out = tmp_path / "features" / f"{task}.pt"
        stages.features.main(["--params", str(params_path), "--net-model", str(tmp_path / "D_256-512.pt"),
                              "--dataset", task, "--mean-rgb", str(tmp_path / "mean_rgb.json"), "--out", str(out)])
        stages.transfer.main(["--params", str(params_path), "--task", task, "--features", str(out),
                              "--out", str(tmp_path / f"{task}.json"), "--preds", str(tmp_path / f"{task}.pt")])
    scenes = transfer.load_features(tmp_path / "features" / "scenes.pt", "scenes")
    assert scenes["source"].startswith("VOC-2007") and scenes["labels"].shape == (12, 20)
    assert [len(scenes["splits"][s]) for s in transfer.SCENE_SPLITS] == [6, 2, 4]
    fewshot = transfer.load_features(tmp_path / "features" / "fewshot.pt", "fewshot")
    assert fewshot["classes"] == ["ant", "bee", "cow"] and len(fewshot["labels"]) == 18
    metrics = json.loads((tmp_path / "scenes.json").read_text())
    assert set(metrics) == {f"scenes.D.{v}.{m}" for v in transfer.VARIANTS for m in ("map", "C", "unconverged")}
    assert "fewshot.D.stack.recall" in json.loads((tmp_path / "fewshot.json").read_text())


def synthetic_scenes(n=300, classes=4, seed=0):
    """Multi-label targets and two score sets, b better than a (its scores nearer the targets)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, classes)) < 0.3).astype(np.int64)
    y[np.arange(n), rng.integers(0, classes, n)] = 1
    a = y + rng.normal(0, 1.2, y.shape)
    b = y + rng.normal(0, 1.0, y.shape)
    return y, a, b


def test_seed_bootstrap_of_a_metric_with_one_seed_is_the_one_level_bootstrap():
    y, a, b = synthetic_scenes()
    metric, weighted = transfer.fast_mean_average_precision, transfer.weighted_mean_average_precision
    diff, low, high, image_var = stats.seed_paired_bootstrap_metric(metric, weighted, y, [a], [b], 400, 3, 0.95)
    assert (diff, low, high) == stats.paired_bootstrap_metric(metric, y, a, b, 400, 3, 0.95, weighted=weighted)
    assert image_var > 0


def test_seed_bootstrap_of_a_metric_widens_with_seed_variance_only():
    y, a, b = synthetic_scenes(seed=1)
    metric, weighted = transfer.fast_mean_average_precision, transfer.weighted_mean_average_precision
    one = stats.seed_paired_bootstrap_metric(metric, weighted, y, [a], [b], 2000, 0, 0.95)
    # Three seeds that are the same training: no seed variance, the one-level interval (Monte-Carlo error).
    same = stats.seed_paired_bootstrap_metric(metric, weighted, y, [a] * 3, [b] * 3, 2000, 0, 0.95)
    assert same[0] == pytest.approx(one[0])
    assert same[2] - same[1] == pytest.approx(one[2] - one[1], rel=0.15)
    assert same[3] == pytest.approx(one[3], rel=0.15)
    # Seeds whose b differ a lot (one far better, one far worse): the interval is far wider, the test-set
    # part is not.
    rng = np.random.default_rng(5)
    spread = [b, y + rng.normal(0, 0.6, y.shape), y + rng.normal(0, 1.6, y.shape)]
    wide = stats.seed_paired_bootstrap_metric(metric, weighted, y, [a] * 3, spread, 2000, 0, 0.95)
    per_seed = [metric(y, s) - metric(y, a) for s in spread]
    assert wide[0] == pytest.approx(np.mean(per_seed))
    assert wide[2] - wide[1] > 2 * (one[2] - one[1])
    assert wide[3] < 3 * one[3]
    with pytest.raises(ValueError, match="paired scores of 2 and 3 seeds"):
        stats.seed_paired_bootstrap_metric(metric, weighted, y, [a] * 2, [b] * 3, 10, 0, 0.95)
