"""Appendix B: very deep features on other datasets (Table 11).

A net trained on the source set is frozen and its last FC layer dropped: an image is described by
its fc7 activations, pooled over locations and scales and L2-normalised, and linear SVMs learn the
target set from those descriptors. App. B transfers to classes and a domain the nets never saw; at
the default scale the targets are built from scikit-learn's bundled handwritten digits (8 x 8,
1,797 images, upscaled to the garments' 28 px): multi-label scenes for VOC-2007 (mAP) and a few-shot
split for Caltech-101/256 (mean class recall). The same two tasks built from Fashion-MNIST *test*
garments (the nets' own classes in a new layout: `garment_scenes`, `garment_fewshot`) show how much
of a score is transfer. The readers for the real sets are at the end. Scales are in pixels inside
this module (the stages convert the paper's Q).
"""
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from joblib import parallel_backend
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from .data import FASHION_MNIST_CLASSES, IMAGE_SUFFIXES, ImageSet, limit, load_fashion_mnist, read_voc_boxes
from .device import autocast
from .evaluate import centre_on_pooling_grid, equal_shape_batches
from .io import StageError, load
from .transforms import rescale

AGGREGATIONS = ("average", "stack")  # App. B: over scales, "pooling" (VOC) or "stacking" (Caltech)
VARIANTS = ("single", "average", "stack")  # Table 11 rows: one Q, or the scales averaged or stacked
TASKS = ("scenes", "fewshot", "garment_scenes", "garment_fewshot")
# Each task's protocol: the multi-label VOC one or the few-shot Caltech one.
TASK_KIND = {"scenes": "scenes", "fewshot": "fewshot", "garment_scenes": "scenes", "garment_fewshot": "fewshot"}
DIGIT_CLASSES = tuple(str(d) for d in range(10))
SCENE_SPLITS = ("train", "val", "test")
# A garment placed in a scene keeps at least this share of its pixels visible (later ones may cover
# the rest), so every label names something a classifier can see.
MIN_VISIBLE = 0.5
PLACEMENT_TRIES = 20  # random positions tried per garment before it is left out of the scene
SVM_MAX_ITER = 10000  # a bound on liblinear's Newton iterations; fits that reach it are counted (_fit)
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
# The "usual" Caltech protocol's background classes (Caltech-101's BACKGROUND_Google, Caltech-256's
# 257.clutter). The VGG paper itself counts 102 and 257 classes, i.e. keeps them: set
# transfer.exclude_classes to [] to match it.
CALTECH_CLUTTER = ("BACKGROUND_Google", "257.clutter")


# ---------------------------------------------------------------- descriptors (App. B)

def l2_normalise(x):
    return F.normalize(x, dim=-1)


@torch.inference_mode()
def scale_descriptors(model, images, scales, mean, batch_size, device, bf16=False):
    """S x N x D: per scale Q (pixels), each image's App. B descriptor before aggregation over scales.

    App. B: the image rescaled so its smallest side is Q, the net applied densely up to fc7 (its last
    FC layer removed), the fc7 map global-average-pooled and averaged with the flipped image's. Not
    normalised here: the paper L2-normalises the final descriptor, once the scales are averaged or
    stacked (aggregate_scales). `images`: an N x 3 x H x W uint8 tensor or a dataset of uint8 images
    (e.g. `vgg.data.ImageSet`); `batch_size` counts network inputs, flips included.
    """
    model = model.eval().to(device, memory_format=torch.channels_last)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    out = torch.empty(len(scales), len(images), model.classifier[3].out_features)
    for indices, batch in equal_shape_batches(images, max(1, batch_size // 2)):
        batch = batch.to(device)
        n = len(indices)
        for s, size in enumerate(scales):
            x = centre_on_pooling_grid(rescale(batch, size) - mean, model.stride)
            x = torch.cat([x, x.flip(-1)]).contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                fc7 = model.forward_fc7_dense(x)
            pooled = fc7.float().mean((2, 3))
            out[s, indices] = ((pooled[:n] + pooled[n:]) / 2).cpu()
    return out


def aggregate_scales(per_scale, how):
    """N x D' from S x N x D per-scale descriptors, then L2-normalised (App. B normalises the result):
    averaged over scales ("average", App. B's VOC protocol, D' = D) or stacked ("stack", its Caltech
    protocol, D' = S x D; a scale whose activations are larger weighs more, as in the paper)."""
    if how == "average":
        return l2_normalise(per_scale.mean(0))
    if how == "stack":
        return l2_normalise(per_scale.permute(1, 0, 2).reshape(per_scale.shape[1], -1))
    raise ValueError(f"unknown aggregation {how!r} (choose from {', '.join(AGGREGATIONS)})")


def describe(model, images, scales, mean, batch_size, device, bf16=False, aggregate="average"):
    """N x D float32 App. B descriptors of `images` over the scales Q (pixels), aggregated by
    `aggregate` ("average" or "stack"); L2 norm 1."""
    return aggregate_scales(scale_descriptors(model, images, scales, mean, batch_size, device, bf16), aggregate)


def concat_descriptors(a, b):
    """App. B's D&E: the two nets' descriptors of the same images concatenated, L2-normalised."""
    return l2_normalise(torch.cat([torch.as_tensor(a), torch.as_tensor(b)], dim=1))


# ---------------------------------------------------------------- multi-label scenes (VOC-2007 analogue)

def _resized(image, size):
    if image.shape[-1] == size:
        return image
    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < image.shape[-1]).round().clamp(0, 255).to(torch.uint8)[0]


def make_scenes(images, labels, count, canvas=56, objects_per_scene=(1, 4), object_scale=(0.5, 1.0), seed=0,
                num_classes=None):
    """`count` scenes of garments on a black canvas: N x 3 x canvas x canvas uint8, N x C multi-hot uint8.

    Each scene draws 1-4 (`objects_per_scene`) distinct source images, resizes each by a factor drawn
    log-uniformly from `object_scale` (1 = 28 px) and pastes its non-zero pixels at a random position,
    in order, so later garments may cover earlier ones; a position is kept only if every garment of
    the scene still shows at least MIN_VISIBLE of its pixels, and a garment with no such position in
    PLACEMENT_TRIES draws is left out. The labels are the classes of the garments placed, as VOC's are
    the classes present. Same scenes on every machine for a seed.
    """
    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    lo, hi = (math.log(v) for v in object_scale)
    out = torch.zeros(count, 3, canvas, canvas, dtype=torch.uint8)
    multi_hot = torch.zeros(count, num_classes, dtype=torch.uint8)
    for i in range(count):
        k = int(rng.integers(objects_per_scene[0], objects_per_scene[1] + 1))
        owner = np.full((canvas, canvas), -1)  # which placed garment shows at each pixel
        areas = []
        for source in rng.choice(len(images), size=min(k, len(images)), replace=False).tolist():
            size = min(canvas, max(1, round(images.shape[-1] * math.exp(rng.uniform(lo, hi)))))
            garment = _resized(images[source], size)
            mask = (garment.amax(0) > 0).numpy()
            if not mask.any():
                continue
            for _ in range(PLACEMENT_TRIES):
                top, left = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
                trial = owner.copy()
                trial[top:top + size, left:left + size][mask] = len(areas)
                visible = np.bincount(trial[trial >= 0], minlength=len(areas) + 1)
                if all(visible[j] >= MIN_VISIBLE * a for j, a in enumerate(areas)):
                    owner = trial
                    areas.append(int(mask.sum()))
                    view = out[i, :, top:top + size, left:left + size]
                    view[:, torch.from_numpy(mask)] = garment[:, torch.from_numpy(mask)]
                    multi_hot[i, int(labels[source])] = 1
                    break
    return out, multi_hot


def scene_splits(images, labels, sizes, canvas, objects_per_scene, object_scale, seed):
    """{'train', 'val', 'test': (scenes, multi-hot)}: a fixed split of scenes, each split built from
    its own disjoint share of the source images (shares proportional to `sizes`), so no test scene
    holds a garment image a training scene holds, as VOC's test photos are not its training photos."""
    num_classes = int(torch.as_tensor(labels).max()) + 1
    order = np.random.default_rng(seed).permutation(len(images))
    total = sum(sizes[s] for s in SCENE_SPLITS)
    bounds = np.cumsum([0] + [round(len(images) * sizes[s] / total) for s in SCENE_SPLITS])
    bounds[-1] = len(images)
    out = {}
    for i, split in enumerate(SCENE_SPLITS):
        pool = torch.from_numpy(np.sort(order[bounds[i]:bounds[i + 1]]))
        out[split] = make_scenes(images[pool], torch.as_tensor(labels)[pool], sizes[split], canvas,
                                 objects_per_scene, object_scale, seed=[seed, i], num_classes=num_classes)
    return out


# ---------------------------------------------------------------- linear SVMs and their metrics

def _svm(C, seed):
    # The primal problem (dual=False, liblinear's trust-region Newton), also where features outnumber
    # items (few-shot): our descriptors have 256-1,536 dimensions, and at large C the dual coordinate
    # descent needs thousands of iterations (few-shot digits, D stacked, C=1000: 3.5 s and a
    # ConvergenceWarning in the dual, 0.3 s converged in the primal, the same recall within 0.3 points).
    return LinearSVC(C=C, max_iter=SVM_MAX_ITER, random_state=seed, dual=False)


def _both_cores():
    # liblinear releases the GIL: one-vs-rest classes and cross-validation folds fit on threads, with
    # the same results as one after another (1.4x on 2 cores for the stacked D&E scene SVMs).
    return parallel_backend("threading", n_jobs=-1)


def mean_average_precision(y_true, scores):
    """(mAP, per-class AP), in %, by scikit-learn's `average_precision_score` (area under the
    precision-recall steps). A class with no positive item has AP NaN and is left out of the mean.

    VOC-2007's devkit, and so the paper's Table 11, used 11-point interpolated AP instead (precision
    interpolated, sampled at recall 0, 0.1, ..., 1), usually a little higher; ours is not that one.
    """
    y, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    aps = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        if y[:, c].any():
            aps[c] = 100.0 * average_precision_score(y[:, c], s[:, c])
    return (float(np.nanmean(aps)) if not np.isnan(aps).all() else math.nan), aps


def fast_mean_average_precision(y_true, scores):
    """`mean_average_precision`'s mAP (%) in vectorised numpy, ~20x faster, for the thousands of
    bootstrap resamples: each positive scores the precision at its rank, where tied items share the
    rank of the last of them (one threshold, as in scikit-learn)."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, axis=0)  # the order among tied items does not change the result
    ranked, hits = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0)
    n = len(s)
    precision = np.cumsum(hits, 0) / np.arange(1, n + 1)[:, None]
    last = np.ones_like(hits)
    last[:-1] = ranked[1:] != ranked[:-1]  # the end of each run of equal scores
    # Each row's run end: the first run end at or below it.
    end = np.minimum.accumulate(np.where(last, np.arange(n)[:, None], n)[::-1], axis=0)[::-1]
    positives = hits.sum(0)
    present = positives > 0
    if not present.any():
        return math.nan
    ap = (hits * np.take_along_axis(precision, end, 0)).sum(0)[present] / positives[present]
    return 100.0 * float(ap.mean())


def weighted_mean_average_precision(y_true, scores):
    """`fast_mean_average_precision` of bootstrap resamples given as item multiplicities: returns
    f(counts) -> R mAPs (%) for an R x N array of how often each item was drawn (NaN where no class
    has a positive drawn). Each positive's precision is the drawn items, and drawn positives, scored
    at or above it in its class (ties share the rank of the last of them, as there): two matrix
    products of the multiplicities with fixed 0/1 matrices, so no resample is sorted: 2.9x faster
    than a sort per resample on the report's scenes (2,000 items, 4,621 positives; the two products
    take N x P x 4 bytes each). float32 products of
    integer counts are exact (sums below 2^24); equal to the resample's mAP within float rounding
    (tests/test_transfer.py): the same precisions, summed in another order."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    items, classes = np.nonzero(y)  # every positive (item, class)
    at_or_above = s[:, classes] >= s[items, classes]  # N x P: items ranked with or above each positive
    counted = at_or_above.astype(np.float32)
    found = (at_or_above & y[:, classes]).astype(np.float32)
    member = np.zeros((len(items), s.shape[1]))
    member[np.arange(len(items)), classes] = 1.0  # positive -> its class

    def score(counts):
        w = np.asarray(counts, dtype=np.float32)
        drawn = (w @ counted).astype(np.float64)
        precision = np.divide((w @ found).astype(np.float64), drawn, out=np.zeros_like(drawn), where=drawn > 0)
        copies = w[:, items].astype(np.float64)  # how often each positive was drawn
        positives = copies @ member
        ap = np.full(positives.shape, np.nan)
        np.divide((copies * precision) @ member, positives, out=ap, where=positives > 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: the resample is dropped
            return 100.0 * np.nanmean(ap, 1)
    return score


def search_C(Cs, score):
    """(best C, [(C, score)] in the order tried): the candidates in increasing order, each scored
    by `score(C)` (validation, never test), the first best kept on a tie; the search ends at the
    first C that scores below the best so far.

    Why it may end early: the score over C rises while the SVM is over-regularised and falls once it
    fits noise, so after the first fall larger Cs are not expected to recover; and they are the
    costly fits (liblinear's primal Newton needs more iterations as C grows: the D&E stacked digit
    scenes took 0.9, 1.5, 2.4, 4.2, 8.6, 18.5 s at C = 0.01 ... 1000 on an Intel Xeon with AMX,
    their validation mAP peaking at C = 10). A grid that still improves at its top is reported by
    the stage as a C at the grid's edge. Used for the scene SVMs, whose validation mAP over 1,000
    scenes rose to one peak and fell in all 18 searches of 2026-12-02 (the predictions' `C_search`);
    the few-shot search scores the whole grid (train_few_shot)."""
    tried, best = [], None
    for C in sorted(Cs):
        value = score(C)
        tried.append((C, value))
        if best is None or value > best[1]:
            best = (C, value)
        elif value < best[1]:
            break
    return best[0], tried


def train_svms(train_x, train_y, val_x, val_y, Cs, seed, failures=None, tried=None):
    """(one-vs-rest linear SVMs, C) for multi-label N x C 0/1 targets (App. B, VOC protocol).

    C is the one of `Cs` with the best validation mAP, searched as `search_C` (the first best on a
    tie); the SVMs are then retrained on train + val with it. Unconverged fits are counted in
    `failures` (_fit); `tried`, a list, receives the (C, validation mAP) pairs searched.
    """
    def validation_map(C):
        svms = _fit(OneVsRestClassifier(_svm(C, seed), n_jobs=-1), train_x, train_y, failures)
        return fast_mean_average_precision(val_y, svms.decision_function(np.asarray(val_x)))

    C, searched = search_C(Cs, validation_map)
    if tried is not None:
        tried += searched
    x = np.concatenate([np.asarray(train_x), np.asarray(val_x)])
    y = np.concatenate([np.asarray(train_y), np.asarray(val_y)])
    return _fit(OneVsRestClassifier(_svm(C, seed), n_jobs=-1), x, y, failures), C


def _fit(estimator, x, y, failures=None):
    """`estimator` fitted; each liblinear fit that stopped at max_iter unconverged is counted in
    `failures` (a list, one entry per such fit), which the stages report, never silently."""
    with warnings.catch_warnings(record=True) as caught:
        # A class absent from the training items gets a constant classifier (sklearn's UserWarning);
        # ConvergenceWarning, a UserWarning too, is recorded (the later filter takes precedence).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("always", ConvergenceWarning)
        with _both_cores():
            fitted = estimator.fit(np.asarray(x), np.asarray(y))
    if failures is not None:
        failures += [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    return fitted


def few_shot_splits(labels, per_class, splits, seed):
    """[(train, test)] sorted index arrays, one per split: `per_class` random training images of every
    class, the rest test (App. B, Caltech protocol: 30 per class for Caltech-101, 60 for -256)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if (counts <= per_class).any():
        c = classes[counts <= per_class][0]
        raise StageError(f"transfer.fewshot_per_class: {per_class} training images per class leave none "
                         f"to test in class {c} ({counts[classes == c][0]} images)")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(splits):
        train = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                        for c in classes]))
        out.append((train, np.setdiff1d(np.arange(len(labels)), train)))
    return out


def train_few_shot(train_x, train_y, Cs, folds, seed, failures=None, tried=None):
    """(multi-class one-vs-rest linear SVM, C): C chosen by `folds`-fold stratified cross-validation
    of mean class recall on the training images only, then refitted on all of them; `tried`
    receives every (C, cross-validated recall).

    The whole grid, not `search_C`'s early end: cross-validation on 30 images a class gives
    quantised scores with ties and dips, and the fold means of a tie can differ in the last bit
    (garment few-shot, 2026-12-02: ended at the first fall, 2 of 27 searches stopped at C = 0.1, the
    grid's lower edge, on such a tie, where the whole grid chose a larger C; the digits' 27 agreed)."""
    folds = max(2, min(folds, int(np.bincount(np.asarray(train_y)).min())))
    search = GridSearchCV(_svm(1.0, seed), {"C": list(Cs)}, scoring="balanced_accuracy", n_jobs=-1,
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    _fit(search, train_x, train_y, failures)
    if tried is not None:
        tried += [(params["C"], float(score)) for params, score in
                  zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])]
    return search.best_estimator_, search.best_params_["C"]


def mean_class_recall(y_true, y_pred):
    """Recall averaged over the classes present in `y_true` (class indices), in % (Caltech's metric;
    scikit-learn's balanced accuracy)."""
    y, p = np.asarray(y_true), np.asarray(y_pred)
    counts = np.bincount(y)
    hits = np.bincount(y, weights=(p == y), minlength=len(counts))
    present = counts > 0
    return 100.0 * float(np.mean(hits[present] / counts[present]))


def split_table(n, splits, predictions):
    """N x S int64: each split's prediction for its test images, -1 where the image trained that split."""
    table = np.full((n, len(splits)), -1, dtype=np.int64)
    for s, ((_, test), pred) in enumerate(zip(splits, predictions)):
        table[test, s] = pred
    return table


def split_recalls(y_true, table):
    """Mean class recall (%) of each split (column of `split_table`), over its test images."""
    y = np.asarray(y_true)
    return [mean_class_recall(y[col >= 0], col[col >= 0]) for col in np.asarray(table).T]


def mean_split_recall(y_true, table):
    """Mean class recall averaged over the splits: Table 11's Caltech number, as one function of
    per-image rows, so the bootstrap can resample images."""
    return float(np.mean(split_recalls(y_true, table)))


def weighted_mean_split_recall(y_true, table):
    """`mean_split_recall` of bootstrap resamples given as item multiplicities, as
    `weighted_mean_average_precision`: f(counts R x N) -> R values (%). Each split's per-class test
    counts and hits are one matrix product of the multiplicities (exact: sums of integers)."""
    y, t = np.asarray(y_true), np.asarray(table)
    n, splits = t.shape
    classes = int(y.max()) + 1
    of_class = y[:, None] == np.arange(classes)  # N x C
    tested = ((t >= 0)[:, :, None] & of_class[:, None, :]).reshape(n, -1).astype(np.float64)
    right = ((t == y[:, None])[:, :, None] & of_class[:, None, :]).reshape(n, -1).astype(np.float64)

    def score(counts):
        w = np.asarray(counts, dtype=np.float64)
        total, hit = (w @ tested).reshape(len(w), splits, classes), (w @ right).reshape(len(w), splits, classes)
        recall = np.full(total.shape, np.nan)
        np.divide(hit, total, out=recall, where=total > 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a split with no test image drawn: NaN
            return (100.0 * np.nanmean(recall, 2)).mean(1)
    return score


# ---------------------------------------------------------------- the classifier stage's protocols

def variant_descriptors(records, single_scale):
    """{(net, variant): N x D}: for each feature record's net and for D&E (their concatenation),
    the single scale `single_scale`, the scales averaged and the scales stacked (Table 11's rows)."""
    out = {}
    for record in records:
        per_scale = torch.stack([record["descriptors"][q] for q in record["scales"]])
        out[(record["net"], "single")] = l2_normalise(record["descriptors"][single_scale])
        for how in AGGREGATIONS:
            out[(record["net"], how)] = aggregate_scales(per_scale, how)
    if len(records) == 2:
        a, b = (record["net"] for record in records)
        for variant in VARIANTS:
            out[(a + b, variant)] = concat_descriptors(out[(a, variant)], out[(b, variant)])
    return out


def classify_scenes(descriptors, labels, splits, Cs, seed, task="scenes"):
    """Scene task: per variant, SVMs trained as `train_svms` and scored on the test scenes.

    Returns (flat metrics `<task>.<net>.<variant>.map` / `.C` / `.unconverged`, predictions record for
    the bootstrap)."""
    labels = np.asarray(labels)
    train, val, test = (np.asarray(splits[s]) for s in SCENE_SPLITS)
    metrics, scores, chosen, aps, searches = {}, {}, {}, {}, {}
    for (net, variant), x in descriptors.items():
        x = x.numpy()
        failures, tried = [], []
        svms, C = train_svms(x[train], labels[train], x[val], labels[val], Cs, seed, failures, tried)
        key = f"{net}.{variant}"
        searches[key] = tried
        scores[key] = torch.from_numpy(svms.decision_function(x[test])).float()
        mean_ap, aps[key] = mean_average_precision(labels[test], scores[key].numpy())
        chosen[key] = C
        metrics[f"{task}.{key}.map"] = round(mean_ap, 4)
        metrics[f"{task}.{key}.C"] = C
        metrics[f"{task}.{key}.unconverged"] = len(failures)
    record = {"task": task, "labels": torch.from_numpy(labels[test]), "index": torch.from_numpy(test),
              "scores": scores, "C": chosen, "C_search": searches, "ap": aps}
    return metrics, record


def classify_few_shot(descriptors, labels, per_class, splits, Cs, folds, seed, task="fewshot"):
    """Few-shot task: per variant and split, an SVM trained as `train_few_shot` and scored by mean class
    recall on that split's test images; mean and (sample) std over the splits.

    Returns (flat metrics `<task>.<net>.<variant>.recall` / `.recall_std` / `.unconverged`, predictions
    record)."""
    labels = np.asarray(labels)
    index = few_shot_splits(labels, per_class, splits, seed)
    metrics, tables, chosen, searches = {}, {}, {}, {}
    for (net, variant), x in descriptors.items():
        x = x.numpy()
        predictions, Cs_used, failures, tried = [], [], [], []
        for train, test in index:
            tried.append([])
            svm, C = train_few_shot(x[train], labels[train], Cs, folds, seed, failures, tried[-1])
            predictions.append(svm.predict(x[test]))
            Cs_used.append(C)
        key = f"{net}.{variant}"
        searches[key] = tried
        tables[key] = torch.from_numpy(split_table(len(labels), index, predictions))
        recalls = split_recalls(labels, tables[key].numpy())
        chosen[key] = Cs_used
        metrics[f"{task}.{key}.recall"] = round(float(np.mean(recalls)), 4)
        metrics[f"{task}.{key}.recall_std"] = round(float(np.std(recalls, ddof=1)) if len(recalls) > 1 else 0.0, 4)
        metrics[f"{task}.{key}.unconverged"] = len(failures)
    record = {"task": task, "labels": torch.from_numpy(labels),
              "splits": [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in index],
              "predictions": tables, "C": chosen, "C_search": searches}
    return metrics, record


# ---------------------------------------------------------------- feature files

FEATURE_KEYS = ("net", "run", "task", "source", "scales", "pixels", "descriptors", "labels", "classes", "splits")


def feature_record(net, run, task, source, scales, pixel_scales, per_scale, labels, classes, splits):
    """What a feature file holds: per paper-unit Q, the N x D per-scale descriptors of
    `scale_descriptors` (flip-averaged, pooled, not yet aggregated over scales nor normalised), so
    every single-Q, averaged and stacked variant is formed later without running the net again."""
    return {"net": net, "run": run, "task": task, "source": source, "scales": list(scales),
            "pixels": list(pixel_scales), "descriptors": {q: d.clone() for q, d in zip(scales, per_scale)},
            "labels": labels, "classes": list(classes), "splits": splits}


def load_features(path, task):
    """A feature file of the `features` stage, for `task`."""
    record = load(path, "feature file")
    if not isinstance(record, dict) or set(record) != set(FEATURE_KEYS):
        raise StageError(f"{path}: invalid feature file (expected keys {', '.join(FEATURE_KEYS)})")
    if record["task"] != task:
        raise StageError(f"{path}: features for task {record['task']!r}, not {task!r}")
    return record


def check_same_images(records, paths):
    """Several nets' feature files must describe the same images, labels and scales."""
    first = records[0]
    for record, path in zip(records[1:], paths[1:]):
        for key in ("source", "scales", "classes"):
            if record[key] != first[key]:
                raise StageError(f"{path}: {key} differs from {paths[0]}'s")
        if not torch.equal(record["labels"], first["labels"]):
            raise StageError(f"{path}: labels differ from {paths[0]}'s (different images)")
    nets = [r["net"] for r in records]
    if len(set(nets)) != len(nets):
        raise StageError(f"{paths[-1]}: net {nets[-1]} given twice")


# ---------------------------------------------------------------- the target sets, from params

def load_digits_images(size=28):
    """scikit-learn's bundled handwritten digits (1,797 8 x 8 images, 0-16, ten classes; no download)
    as N x 3 x size x size uint8 white-on-black images, bilinearly upscaled to the garments' scale,
    and their labels: classes and a domain the nets never saw (App. B's target sets)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), \
        torch.from_numpy(digits.target).long()


def _source_images(dataset, fashion_mnist_root):
    """(images, labels, classes, name) of the digits or of Fashion-MNIST's test garments."""
    if dataset == "digits":
        images, labels = load_digits_images()
        return images, labels, list(DIGIT_CLASSES), "scikit-learn digits"
    images, labels = load_fashion_mnist(fashion_mnist_root)["test"]
    return images, labels, list(FASHION_MNIST_CLASSES), "Fashion-MNIST test garments"


def scenes_set(settings, fashion_mnist_root, dataset=None):
    """(images, multi-hot labels, classes, split indices, source) of the multi-label task, on
    `dataset` (default transfer.scenes_dataset)."""
    dataset = dataset or settings["scenes_dataset"]
    if dataset == "voc2007":
        voc, sets = read_voc2007(settings["scenes_root"])
        paths, labels, splits, start = [], [], {}, 0
        for split in SCENE_SPLITS:
            split_paths, split_labels = sets[split]
            paths += split_paths
            labels.append(split_labels)
            splits[split] = torch.arange(start, start + len(split_paths))
            start += len(split_paths)
        labels = torch.cat(labels)
        images = ImageSet({"kind": "files", "root": str(voc.resolve()), "paths": paths, "labels": labels,
                           "classes": list(VOC_CLASSES)})
        return images, labels, list(VOC_CLASSES), splits, f"VOC-2007 {voc}"
    images, labels, classes, name = _source_images(dataset, fashion_mnist_root)
    sizes = {split: settings[split] for split in SCENE_SPLITS}
    scenes = scene_splits(images, labels, sizes, settings["canvas"], settings["objects"],
                          settings["object_scale"], settings["seed"])
    splits, start = {}, 0
    for split in SCENE_SPLITS:
        splits[split] = torch.arange(start, start + sizes[split])
        start += sizes[split]
    lo, hi = settings["objects"]
    source = (f"scenes of {lo}-{hi} {name}, {settings['canvas']} px canvas, "
              f"objects scaled {settings['object_scale'][0]}-{settings['object_scale'][1]}x")
    return (torch.cat([scenes[s][0] for s in SCENE_SPLITS]),
            torch.cat([scenes[s][1] for s in SCENE_SPLITS]), classes, splits, source)


def fewshot_set(settings, fashion_mnist_root, dataset=None):
    """(images, labels, classes, None, source) of the few-shot task on `dataset` (default
    transfer.fewshot_dataset); splits are drawn by `transfer`."""
    dataset = dataset or settings["fewshot_dataset"]
    if dataset == "caltech":
        root = Path(settings["fewshot_root"]).resolve()
        paths, labels, classes = read_class_folders(root, settings["exclude_classes"])
        images = ImageSet({"kind": "files", "root": str(root), "paths": paths, "labels": labels,
                           "classes": classes})
        return images, labels, classes, None, f"class folders {root}"
    images, labels, classes, name = _source_images(dataset, fashion_mnist_root)
    keep = limit(labels, settings["fewshot_limit"], settings["seed"])
    return images[keep], labels[keep], classes, None, f"{len(keep)} plain {name}"


def target_set(task, settings, fashion_mnist_root):
    """(images, labels, classes, split indices or None, source) of `task` (one of TASKS) from the
    validated `transfer` params section: the garment tasks always on Fashion-MNIST's test garments."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    dataset = "fashion_mnist" if task.startswith("garment_") else None
    return (scenes_set if TASK_KIND[task] == "scenes" else fewshot_set)(settings, fashion_mnist_root, dataset)


# ---------------------------------------------------------------- full-scale readers

def _voc_dir(root):
    root = Path(root)
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (candidate / "Annotations").is_dir() and (candidate / "JPEGImages").is_dir():
            return candidate
    raise StageError(f"{root}: no VOC2007 directory (expected VOCdevkit/VOC2007/Annotations and JPEGImages)")


def read_voc2007(root, image_sets=("train", "val", "test")):
    """(VOC2007 directory, {image set: (paths relative to it, N x 20 multi-hot uint8)}) from the
    standard VOCdevkit layout: ImageSets/Main/<set>.txt lists ids, Annotations/<id>.xml names the
    objects. Objects marked difficult count as positives (VOC's own evaluation ignores an image
    whose only instances of a class are difficult; we keep one rule for training and testing)."""
    voc = _voc_dir(root)
    out = {}
    for name in image_sets:
        listing = voc / "ImageSets" / "Main" / f"{name}.txt"
        if not listing.is_file():
            raise StageError(f"{listing}: image set not found")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        labels = torch.zeros(len(ids), len(VOC_CLASSES), dtype=torch.uint8)
        for i, image_id in enumerate(ids):
            xml = voc / "Annotations" / f"{image_id}.xml"
            for class_name, _ in read_voc_boxes(xml):
                if class_name not in VOC_CLASSES:
                    raise StageError(f"{xml}: unknown VOC class {class_name!r}")
                labels[i, VOC_CLASSES.index(class_name)] = 1
        out[name] = ([f"JPEGImages/{image_id}.jpg" for image_id in ids], labels)
    return voc, out


def read_class_folders(root, exclude=CALTECH_CLUTTER):
    """(paths relative to `root`, labels, classes) of a folder of class directories of images
    (Caltech-101/256). Classes are the sorted directory names, less `exclude` (by default the
    background classes BACKGROUND_Google and 257.clutter, as the usual protocol drops them)."""
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"{root}: dataset directory not found")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in exclude)
    if not classes:
        raise StageError(f"{root}: no class directories")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f"{name}/{p.name}" for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise StageError(f"{root / name}: empty class (no images)")
        paths += files
        labels += [label] * len(files)
    return paths, torch.tensor(labels), classes


def load_predictions(path, task):
    """A predictions file of the `transfer` stage for `task` (the report's bootstrap reads it)."""
    record = load(path, "transfer predictions")
    if not isinstance(record, dict) or record.get("task") != task:
        raise StageError(f"{path}: not the transfer stage's predictions for task {task!r}")
    return record
