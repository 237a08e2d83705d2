"""How often two runs of the same protocol disagree on a claim's verdict, under three seed-level
intervals, recomputed from each run's claims.csv (n_seeds, the claim's own seed sd, the committed
two-level bootstrap interval):

- bootstrap: the two-level percentile bootstrap (seeds, then images) the CSV holds
  (`vgg.stats.seed_paired_bootstrap`; the committed verdicts up to 2026-12-02);
- own t: a Student-t interval on the claim's own seed sd, n_seeds - 1 degrees of freedom;
- pooled t: the seed variance pooled over the run's claims of a kind (same trained nets, or
  different ones), as `vgg.tables.claims` now computes it.

The two t intervals here keep only the seed part (the CSVs hold no per-image outcomes); the
test-image part that `vgg.stats.seed_t_interval` adds widens them a little more.

    python -m scripts.verdict_stability intel012=reports/claims.csv intel345=runs/seeds345/claims.csv ...
"""
import argparse
import itertools
import math

import pandas as pd
from scipy.stats import t

from vgg import stats, tables

KIND = {}
for key, _, direction, x_ref, y_ref in tables.CLAIMS:
    nets = [None if ref == tables.BEST_SINGLE_NET else frozenset(m.rsplit("/", 1)[0] for m in ref[1].split("+"))
            for ref in (x_ref, y_ref)]
    KIND[key] = (tables.SAME_NETS if nets[0] is not None and nets[0] == nets[1] else tables.OTHER_NETS, direction)


def intervals(claims, margin):
    """{method: {claim key: (verdict, low, high)}} for one run's claims.csv."""
    out = {"bootstrap": {}, "own t": {}, "pooled t": {}}
    pools = {}
    for key, row in claims.iterrows():
        pools.setdefault(KIND[key][0], []).append((row["seed sd of the difference"], row["n_seeds"]))
    for key, row in claims.iterrows():
        kind, direction = KIND[key]
        diff, n, sd = row["ours: err(Y) - err(X)"], int(row["n_seeds"]), row["seed sd of the difference"]
        pool = pools[kind]
        df = sum(k - 1 for _, k in pool)
        pooled = sum(s ** 2 * (k - 1) for s, k in pool) / df
        spans = {"bootstrap": (row["CI low"] if "bootstrap CI low" not in row else row["bootstrap CI low"],
                               row["CI high"] if "bootstrap CI high" not in row else row["bootstrap CI high"]),
                 "own t": _t(diff, sd ** 2, n - 1, n), "pooled t": _t(diff, pooled, df, n)}
        for method, (low, high) in spans.items():
            out[method][key] = (stats.verdict(low, high, direction, margin), low, high)
    return out


def _t(diff, variance, df, n):
    half = t.ppf(0.975, df) * math.sqrt(variance / n)
    return diff - half, diff + half


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=path/to/claims.csv")
    parser.add_argument("--margin", type=float, default=0.5, help="report.equivalence_margin")
    args = parser.parse_args(argv)
    runs = dict(arg.split("=", 1) for arg in args.runs)
    found = {name: intervals(pd.read_csv(path, index_col="key"), args.margin) for name, path in runs.items()}
    keys = [k for k, *_ in tables.CLAIMS if all(k in f["bootstrap"] for f in found.values())]
    print(f"{len(keys)} claims in every run; run pairs: {len(runs) * (len(runs) - 1) // 2}\n")
    print("| method | verdicts that differ between two runs | of them reproduced <-> contradicted | "
          + " | ".join(f"{name}: R/C/I" for name in runs) + " |")
    print("|:--|--:|--:|" + "--:|" * len(runs))
    for method in ("bootstrap", "own t", "pooled t"):
        differ = flips = pairs = 0
        for a, b in itertools.combinations(runs, 2):
            for key in keys:
                va, vb = found[a][method][key][0], found[b][method][key][0]
                pairs += 1
                differ += va != vb
                flips += {va, vb} == {"reproduced", "contradicted"}
        counts = ["/".join(str(sum(found[r][method][k][0] == v for k in keys))
                           for v in ("reproduced", "contradicted", "inconclusive")) for r in runs]
        print(f"| {method} | {differ} of {pairs} | {flips} | " + " | ".join(counts) + " |")
    print("\n| claim | method | " + " | ".join(runs) + " |")
    print("|:--|:--|" + ":--|" * len(runs))
    for key in keys:
        for method in ("bootstrap", "pooled t"):
            cells = [f"{v[0][:5]} [{v[1]:+.2f}, {v[2]:+.2f}]" for v in (found[r][method][key] for r in runs)]
            print(f"| {key} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
