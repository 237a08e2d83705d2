"""Top-k error, and the paired bootstrap and verdict that decide whether a paper's claim holds here.

One place for both, so every table and claims page (Tables 3-7, the appendices) scores alike.
"""
import numpy as np
import torch

VERDICTS = ("reproduced", "contradicted", "inconclusive")


def correct_top_k(scores, labels, k):
    """Per image, 1 if the label is among the k highest of N x C scores (logits or posteriors),
    else 0 (int64, length N); a tuple k gives a tuple of those, all from one ranking."""
    ks = k if isinstance(k, tuple) else (k,)
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    correct = tuple((top[:, :j] == labels.view(-1, 1)).any(dim=1).long() for j in ks)
    return correct if isinstance(k, tuple) else correct[0]


def error_percent(correct):
    """Error in % of per-image 0/1 outcomes (§4: top-k error is the share of images whose label
    is not among the k best)."""
    return 100.0 * (1.0 - torch.as_tensor(correct).double().mean().item())


def top_k_error(scores, labels, k):
    """Top-k error in %."""
    return error_percent(correct_top_k(scores, labels, k))


def paired_bootstrap(correct_a, correct_b, samples, seed, confidence):
    """err(a) - err(b) in points with a percentile `confidence` interval, test images resampled.

    Both models are scored on the same resampled images (paired), so their shared hard images
    do not widen the interval. Positive = b makes fewer errors.
    """
    a = torch.as_tensor(correct_a).long()
    b = torch.as_tensor(correct_b).long()
    if a.shape != b.shape or a.dim() != 1 or len(a) == 0:
        raise ValueError(f"paired outcomes of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    n = len(a)
    d = (b - a).numpy()  # per image: +1 only b right, -1 only a right, 0 both the same
    counts = np.array([(d == 1).sum(), (d == 0).sum(), (d == -1).sum()])
    # Resampling n images with replacement matters only through how many of each outcome are
    # drawn, a multinomial: the same distribution as index resampling, at O(samples) cost.
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=samples)
    diffs = 100.0 * (draws[:, 0] - draws[:, 2]) / n
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return float(100.0 * (counts[0] - counts[2]) / n), float(low), float(high)


def seed_paired_bootstrap(correct_a, correct_b, samples, seed, confidence):
    """err(a) - err(b) in points over several trainings (seeds) of both, with a two-level percentile
    `confidence` interval: each resample draws the seeds with replacement, then the test images with
    replacement, and averages the per-seed paired differences over the drawn seeds.

    `correct_a`, `correct_b`: K x N per-image 0/1 outcomes, row k of both from seed k (X and Y
    always paired within a seed and an image). Every seed is scored on the same N test images, so
    one image draw serves all drawn seeds: the test set is one sample shared by every training, and
    with no seed-to-seed variance the interval is the one-image-level `paired_bootstrap`'s. The
    point estimate is the mean over seeds; one seed gives `paired_bootstrap` exactly.
    """
    a, b = torch.as_tensor(correct_a).long(), torch.as_tensor(correct_b).long()
    if a.shape != b.shape or a.dim() != 2 or 0 in a.shape:
        raise ValueError(f"paired seed x image outcomes of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) == 1:
        return paired_bootstrap(a[0], b[0], samples, seed, confidence)
    k, n = a.shape
    # An image matters only through its pattern of per-seed outcomes b - a in {-1, 0, 1}^K:
    # resampling images is a multinomial over the patterns seen, at O(samples x patterns) cost.
    patterns, counts = np.unique((b - a).numpy().T, axis=0, return_counts=True)  # P x K, P
    rng = np.random.default_rng(seed)
    seed_weights = rng.multinomial(k, np.full(k, 1.0 / k), size=samples) / k  # samples x K
    image_draws = rng.multinomial(n, counts / n, size=samples) / n  # samples x P
    per_seed = image_draws @ patterns  # samples x K: each seed's paired difference on the drawn images
    diffs = 100.0 * (per_seed * seed_weights).sum(1)
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return float(100.0 * (b - a).double().mean().item()), float(low), float(high)


def per_seed_differences(correct_a, correct_b):
    """err(a) - err(b) in points, one per seed (row), from K x N paired 0/1 outcomes."""
    a, b = torch.as_tensor(correct_a).double(), torch.as_tensor(correct_b).double()
    return (100.0 * (b - a).mean(1)).tolist()


def seed_agreement(correct_a, correct_b):
    """(seeds whose err(a) - err(b) has the sign of the mean over seeds, K, the seed-to-seed sd of
    that difference in points; 0 for one seed) from K x N outcomes as `seed_paired_bootstrap`'s."""
    return sign_agreement(per_seed_differences(correct_a, correct_b))


def sign_agreement(per_seed_differences):
    """(seeds whose difference has the sign of the mean over seeds, K, the seed-to-seed sd; 0 for one
    seed) from one difference per seed."""
    per_seed = torch.as_tensor(per_seed_differences, dtype=torch.float64)
    sign = torch.sign(per_seed.mean())
    agree = int((torch.sign(per_seed) == sign).sum()) if sign != 0 else int((per_seed == 0).sum())
    sd = float(per_seed.std()) if len(per_seed) > 1 else 0.0
    return agree, len(per_seed), sd


def image_variance(correct_a, correct_b):
    """The variance (points^2) that resampling the test images gives err(a) - err(b), the mean over
    seeds of K x N paired outcomes: one test set serves every seed, so this part does not shrink with K."""
    a, b = torch.as_tensor(correct_a).double(), torch.as_tensor(correct_b).double()
    per_image = 100.0 * (b - a).mean(0)  # +1 where only b is right: err(a) - err(b) as seed_paired_bootstrap
    return float(per_image.var(unbiased=False)) / per_image.numel()


def pooled_seed_variance(per_seed_differences):
    """(s^2, df): the seed-to-seed variance of a difference pooled over several differences, each an
    array of its K per-seed values (K >= 2), df = the sum of K - 1. Three seeds give a difference's own
    sd 2 degrees of freedom, so its sd is drawn anywhere from about 0.16x to 1.9x the truth (chi with 2
    df); pooling over comparisons that share a noise source (trainings of the same recipe) is the
    standard remedy (a pooled variance, as in the two-sample t; Smyth 2004 shrinks towards it)."""
    rows = [np.asarray(d, dtype=float) for d in per_seed_differences]
    if not rows or any(len(d) < 2 for d in rows):
        raise ValueError("a pooled seed variance needs at least one difference of at least 2 seeds")
    df = sum(len(d) - 1 for d in rows)
    return float(sum(d.var(ddof=1) * (len(d) - 1) for d in rows) / df), df


def seed_t_interval(diff, seed_variance, seed_df, n_seeds, image_var, confidence):
    """(low, high): a Student-t `confidence` interval around a mean over `n_seeds` trainings whose
    seed-to-seed variance is `seed_variance` (estimated with `seed_df` degrees of freedom) and whose
    shared test set adds `image_var` (image_variance). The two parts add; the degrees of freedom are
    Welch-Satterthwaite's (the image part is known: infinite df), so with no seed variance this is the
    normal interval of the one-level paired bootstrap, and a seed variance from few df widens it."""
    from scipy.stats import t
    seed_part = seed_variance / n_seeds
    total = seed_part + image_var
    if total == 0:
        return float(diff), float(diff)
    df = np.inf if seed_part == 0 else total ** 2 / (seed_part ** 2 / seed_df)
    half = float(t.ppf(0.5 + confidence / 2, df)) * total ** 0.5
    return float(diff - half), float(diff + half)


def paired_bootstrap_metric(metric, y, scores_a, scores_b, samples, seed, confidence, weighted=None,
                            chunk=250):
    """metric(b) - metric(a) in points with a percentile `confidence` interval, test items resampled.

    For metrics that are not a mean of per-item outcomes (mAP, mean class recall): each resample
    draws n items with replacement and scores a and b on the same ones (paired). `metric(y, scores)`
    takes rows of y and of the scores (numpy arrays indexed by item on axis 0); higher is better, so
    positive = b better, as in `paired_bootstrap`. A resample where the metric is undefined (NaN,
    e.g. no positive item of any class) is dropped.

    `weighted(y, scores)`, optional, is the same metric as a function of `chunk` x n item
    multiplicities (`vgg.transfer.weighted_mean_average_precision`): the same draws, scored a chunk
    of resamples at a time without re-indexing the items; equal within float rounding.
    """
    y, a, b = np.asarray(y), np.asarray(scores_a), np.asarray(scores_b)
    if not len(y) == len(a) == len(b) or len(y) == 0:
        raise ValueError(f"paired scores of {len(a)} and {len(b)} items for {len(y)} labels")
    n = len(y)
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    if weighted is None:
        for i in range(samples):
            idx = rng.integers(0, n, n)
            diffs[i] = metric(y[idx], b[idx]) - metric(y[idx], a[idx])
    else:
        score_a, score_b = weighted(y, a), weighted(y, b)
        for start in range(0, samples, chunk):
            counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                               for _ in range(min(chunk, samples - start))])
            diffs[start:start + len(counts)] = score_b(counts) - score_a(counts)
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.nanpercentile(diffs, [tail, 100.0 - tail])
    return float(metric(y, b) - metric(y, a)), float(low), float(high)


def seed_paired_bootstrap_metric(metric, weighted, y, scores_a, scores_b, samples, seed, confidence, chunk=250):
    """metric(b) - metric(a) in points over K trainings (seeds) of both, for metrics that are not a mean of
    per-item outcomes (mAP, mean class recall): (the mean over seeds of each seed's difference, the low and
    high ends of a two-level percentile `confidence` interval, the test-set variance of that mean).

    Each resample draws the seeds with replacement, then n items with replacement, and scores a and b of
    every drawn seed on the same items (paired within a seed and an item); every seed is scored on the same
    n test items (the same labels `y`), so one item draw serves all seeds, as `seed_paired_bootstrap`'s.
    The variance (points^2) is that of the mean over all K seeds, equally weighted, over the item draws
    alone: the test-set part of `seed_t_interval`, which does not shrink with K.

    `scores_a`, `scores_b`: K arrays of per-item scores (row k of both from seed k); `weighted(y, scores)`
    gives the metric as a function of item multiplicities (vgg.transfer.weighted_*), `metric(y, scores)`
    the point estimate. One seed: `paired_bootstrap_metric` exactly, and the variance of its draws.
    Resamples where the metric is undefined (NaN) are dropped.
    """
    y = np.asarray(y)
    a, b = [np.asarray(s) for s in scores_a], [np.asarray(s) for s in scores_b]
    if len(a) != len(b) or not a or any(len(s) != len(y) for s in a + b) or len(y) == 0:
        raise ValueError(f"paired scores of {len(a)} and {len(b)} seeds for {len(y)} items")
    k, n = len(a), len(y)
    rng = np.random.default_rng(seed)
    score_a, score_b = [weighted(y, s) for s in a], [weighted(y, s) for s in b]
    diffs, image_only = np.empty(samples), np.empty(samples)
    for start in range(0, samples, chunk):
        # The item draws first, as paired_bootstrap_metric's, so that one seed draws what it draws.
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                           for _ in range(min(chunk, samples - start))])
        per_seed = np.stack([fb(counts) - fa(counts) for fa, fb in zip(score_a, score_b)], axis=1)  # draws x K
        image_only[start:start + len(counts)] = per_seed.mean(1)
        if k == 1:
            diffs[start:start + len(counts)] = per_seed[:, 0]
            continue
        seed_weights = rng.multinomial(k, np.full(k, 1.0 / k), size=len(counts)) / k
        # A seed drawn 0 times adds nothing, even where its metric is undefined.
        diffs[start:start + len(counts)] = np.where(seed_weights > 0, per_seed * seed_weights, 0.0).sum(1)
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.nanpercentile(diffs, [tail, 100.0 - tail])
    point = float(np.mean([metric(y, sb) - metric(y, sa) for sa, sb in zip(a, b)]))
    return point, float(low), float(high), float(np.nanvar(image_only))


def verdict(ci_low, ci_high, claim="better", margin=None):
    """The paper's claim judged by the interval of err(baseline) - err(claimed winner), in points.

    claim "better": the winner beats the baseline (reproduced if the interval is above 0,
    contradicted if below 0, else inconclusive). claim "not better" (e.g. LRN does not help): an
    equivalence test with `margin` points, the gain below which "does not help" holds; reproduced
    when the whole interval of the candidate's gain lies below the margin, contradicted when it
    lies above it, else inconclusive (a wide interval settles nothing, either way).
    """
    if claim == "better":
        return "reproduced" if ci_low > 0 else "contradicted" if ci_high < 0 else "inconclusive"
    if claim == "not better":
        if margin is None or margin < 0:
            raise ValueError(f"a 'not better' claim needs an equivalence margin >= 0, not {margin!r}")
        return "reproduced" if ci_high < margin else "contradicted" if ci_low > margin else "inconclusive"
    raise ValueError(f"unknown claim direction {claim!r} (better or not better)")


VERDICT_RULES = (
    "**How a verdict is reached.** Every net is trained once per seed of `seeds` ({n_seeds} here); the "
    "difference between X and Y is the mean over seeds of their paired difference on the same test images. "
    "Its {confidence:.0%} interval is a Student-t interval with two parts (`vgg.stats.seed_t_interval`): "
    "the seed-to-seed variance of the difference, **pooled over the claims of its kind** (X and Y the same "
    "trained nets evaluated two ways, or different trained nets; `pooled seed sd` with `pooled df` in the "
    "CSV), divided by the number of seeds, plus the variance of resampling the shared test images; the "
    "degrees of freedom are Welch-Satterthwaite's. A claim's own seed sd rests on seeds - 1 degrees of "
    "freedom (2 with three seeds), too few to trust alone: two disjoint seed sets each agreed 3/3 in sign "
    "on opposite verdicts with it ([docs](../docs/verdict_stability.md)). The two-level bootstrap "
    "(seeds, then images; {samples:,} resamples, `vgg.stats.seed_paired_bootstrap`) stays in the CSV "
    "beside it. One seed: the paired bootstrap over test images alone. Beside each claim: how many seeds "
    "agree in sign with the mean, and the claim's own seed-to-seed sd.\n\n"
    "- A claim 'X beats Y' is **reproduced** if the interval lies above 0, **contradicted** if it lies "
    "below 0, else **inconclusive**.\n"
    "- A claim 'X does not help' (X no better than Y) is an equivalence test with a margin of {margin:g} "
    "points (`report.equivalence_margin`): reproduced if the whole interval of X's gain lies below the "
    "margin, contradicted if it lies above it, else inconclusive.\n"
    "- A claim whose paper value is a size (B-5x5 '7 points worse than B') is tested for its sign, as the "
    "others; the size stands beside it.")
