"""The localisation claims of a run re-judged under another pooling of the seed variance, from its
claims_localisation.csv alone (no predictions needed).

Until 2026-12-03 the seed variance of the localisation claims was pooled over a kind (same or different
trained nets), mixing Table 8's centre-crop error with Table 9's dense top-5 error; since then within
a kind and a measure (`vgg.tables.LOCALISATION_POOLS`, docs/verdict_stability.md). To judge an older
run by the rule now in force (or a new run by the old one), each claim's test-image variance is
solved back from its CSV interval and the interval is formed again with the other pool's seed
variance. The solve is unique only where the interval is narrower than its seed part alone (as with
the old rule's 8 seed df); with few df `vgg.stats.seed_t_interval` first narrows as the image variance
grows, and the script then stops with an error rather than guess:

    python -m scripts.repool_localisation runs/amd_loc_seeds012_patience2/claims_localisation.csv --to measure

The CSV's six significant digits bound the reconstruction's error (checked against the direct
computation in tests/test_tables.py).
"""
import argparse
from pathlib import Path

import pandas as pd
from scipy.optimize import brentq

from vgg import io, params, stats, tables


def image_variance_from_interval(diff, low, high, seed_variance, seed_df, n_seeds, confidence):
    """The test-image variance with which `stats.seed_t_interval` gives (low, high) around `diff`."""
    half = (high - low) / 2

    def excess(image_var):
        a, b = stats.seed_t_interval(diff, seed_variance, seed_df, n_seeds, image_var, confidence)
        return (b - a) / 2 - half

    if excess(0.0) >= 0:
        # With few seed df the interval first narrows as the image variance grows (Welch-Satterthwaite's
        # df rise faster than the variance), then widens: two variances give it, and the CSV cannot say which.
        raise ValueError(f"the interval [{low:g}, {high:g}] is as wide as the seed part alone or wider: "
                         "two test-image variances give it")
    # Below the seed part's width: the one root on the widening branch (at half^2 the width exceeds it).
    return brentq(excess, 0.0, half ** 2, xtol=1e-12 * max(half ** 2, 1e-12))


def kind_of(key):
    """The claim's kind (same or different trained nets), the pool of the rule before 2026-12-03."""
    return tables.LOCALISATION_POOLS[key].split(", ")[0]


def repool(claims, pools, confidence):
    """`claims` (a claims_localisation.csv frame of K >= 2 seeds) with its intervals, pooled seed sd and
    df, `pooled with` and verdicts formed again under `pools` ({key: pool label})."""
    out = claims.copy()
    groups = {}
    for key in claims.index:
        groups.setdefault(pools[key], []).append(key)
    for pool, keys in groups.items():
        rows = claims.loc[keys]
        df = int((rows[tables.N_SEEDS] - 1).sum())
        variance = float((rows[tables.SEED_SD] ** 2 * (rows[tables.N_SEEDS] - 1)).sum() / df)
        for key, row in rows.iterrows():
            if row[tables.POOLED_DF] == df and abs(row[tables.POOLED_SD] - variance ** 0.5) <= 1e-5 * variance ** 0.5:
                out.loc[key, tables.POOL] = pool  # the same claims pooled: the interval stands
                continue
            n, diff = int(row[tables.N_SEEDS]), row["ours: err(X) - err(Y)"]
            image_var = image_variance_from_interval(diff, row["CI low"], row["CI high"], row[tables.POOLED_SD] ** 2,
                                                     row[tables.POOLED_DF], n, confidence)
            low, high = stats.seed_t_interval(diff, variance, df, n, image_var, confidence)
            out.loc[key, ["CI low", "CI high", tables.POOLED_SD, tables.POOLED_DF, tables.POOL]] = [
                low, high, variance ** 0.5, df, pool]
            out.loc[key, "verdict"] = stats.verdict(low, high)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claims", type=Path, help="a claims_localisation.csv of several seeds")
    parser.add_argument("--to", choices=("measure", "kind"), default="measure",
                        help="measure: within a kind and a measure (the rule now); kind: within a kind (before)")
    parser.add_argument("--params", default="params.yaml", help="for report.confidence")
    parser.add_argument("--out", type=Path, help="write the re-judged claims here (CSV)")
    args = parser.parse_args(argv)
    confidence = params.section(params.load_params(args.params), "report")["confidence"]
    claims = pd.read_csv(args.claims, index_col="key")
    if (claims[tables.N_SEEDS] < 2).any():
        raise io.StageError(f"{args.claims}: one seed, no seed variance to pool")
    pools = tables.LOCALISATION_POOLS if args.to == "measure" else {k: kind_of(k) for k in claims.index}
    out = repool(claims, pools, confidence)
    for key, row in out.iterrows():
        before = claims.loc[key]
        print(f"{key}: {before['verdict']} [{before['CI low']:+.2f}, {before['CI high']:+.2f}] -> {row['verdict']} "
              f"[{row['CI low']:+.2f}, {row['CI high']:+.2f}] (pooled sd {row[tables.POOLED_SD]:.3f}, "
              f"{int(row[tables.POOLED_DF])} df, {row[tables.POOL]})")
    if args.out:
        io.atomic_write_text(tables.to_csv(out), args.out)


if __name__ == "__main__":
    io.stage_main(main)()
