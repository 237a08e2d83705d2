"""Every table of the report as a DataFrame: Tables 1-2 from the code, Tables 3-7 and the paper's
claims from saved posteriors beside the paper's numbers (paper/classification_tables.csv drives
every row), and the training summary from the logs. `vgg.report` writes them as pages.

Each row gets a stable key (`table3.D.S256-512.Q384`, `table6.DE_dense`, `table7.ours_1net`):
the frames' index, and the prefix of its entries in `metrics`.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import fusion, io, params, stats, transfer
from .models import FULL_POOLS, build_model, count_parameters, depth, describe_layers
from .paper import classification_rows, paper_csv, parameter_counts

PAPER_TOP1, PAPER_TOP5, PAPER_TEST5 = "top-1 val err (paper)", "top-5 val err (paper)", "top-5 test err (paper)"
OURS_TOP1, OURS_TOP5, OURS_ACC = "top-1 err (ours)", "top-5 err (ours)", "top-1 accuracy (ours)"
# Ours are means over the seeds (training replicates); the sd is over seeds, each seed's value beside.
OURS_TOP1_SD, OURS_TOP5_SD, N_SEEDS = "± top-1 sd (ours)", "± top-5 sd (ours)", "n_seeds"
SEED_TOP1, SEED_TOP5 = "top-1 err seed {}", "top-5 err seed {}"
BEST_SINGLE_NET = ("T5", "best", None)

# The paper's conclusions (§4.1-§4.4), each as "X beats Y" on the same test images, X and Y
# named by their table, the paper's net/train_S/test_Q notation and the evaluation protocol.
# "not better": the paper found X no better than Y.
CLAIMS = (
    ("lrn_does_not_help", "LRN does not improve A (Table 3)", "not better",
     ("T3", "A-LRN/256/256", "dense"), ("T3", "A/256/256", "dense")),
    ("depth_E_beats_A", "error falls with depth: E beats A (Table 3)", "better",
     ("T3", "E/256/256", "dense"), ("T3", "A/256/256", "dense")),
    ("depth_B_beats_A", "error falls with depth: B beats A (Table 3)", "better",
     ("T3", "B/256/256", "dense"), ("T3", "A/256/256", "dense")),
    ("C_beats_B", "1x1 convs help: C beats B, S=256 (Table 3)", "better",
     ("T3", "C/256/256", "dense"), ("T3", "B/256/256", "dense")),
    ("D_beats_C", "3x3 context beats 1x1: D beats C, S=256 (Table 3)", "better",
     ("T3", "D/256/256", "dense"), ("T3", "C/256/256", "dense")),
    ("jitter_D", "scale jittering beats fixed S: D, S=256-512 vs S=256 (Table 3)", "better",
     ("T3", "D/256-512/384", "dense"), ("T3", "D/256/256", "dense")),
    ("jitter_E", "scale jittering beats fixed S: E, S=256-512 vs S=256 (Table 3)", "better",
     ("T3", "E/256-512/384", "dense"), ("T3", "E/256/256", "dense")),
    ("multi_scale_D", "multi-scale test beats single scale: D, S=256-512 (Table 4 vs 3)", "better",
     ("T4", "D/256-512/256;384;512", "dense"), ("T3", "D/256-512/384", "dense")),
    ("multi_scale_E", "multi-scale test beats single scale: E, S=256-512 (Table 4 vs 3)", "better",
     ("T4", "E/256-512/256;384;512", "dense"), ("T3", "E/256-512/384", "dense")),
    ("mc_dense_beats_dense_D", "multi-crop & dense beats dense: D (Table 5)", "better",
     ("T5", "D/256-512/256;384;512", "multi-crop+dense"), ("T5", "D/256-512/256;384;512", "dense")),
    ("mc_dense_beats_mc_D", "multi-crop & dense beats multi-crop: D (Table 5)", "better",
     ("T5", "D/256-512/256;384;512", "multi-crop+dense"), ("T5", "D/256-512/256;384;512", "multi-crop")),
    ("mc_dense_beats_dense_E", "multi-crop & dense beats dense: E (Table 5)", "better",
     ("T5", "E/256-512/256;384;512", "multi-crop+dense"), ("T5", "E/256-512/256;384;512", "dense")),
    ("mc_dense_beats_mc_E", "multi-crop & dense beats multi-crop: E (Table 5)", "better",
     ("T5", "E/256-512/256;384;512", "multi-crop+dense"), ("T5", "E/256-512/256;384;512", "multi-crop")),
    ("fusion_beats_best_net", "fusion of D and E beats the best single net (Table 6 vs 5)", "better",
     ("T6", "D/256-512/256;384;512+E/256-512/256;384;512", "multi-crop+dense"), BEST_SINGLE_NET),
    # §4.1 (text): the strongest case for small filters; the paper's difference is in paper/text_claims.csv.
    ("b_beats_b5x5", "small filters: B beats B-5x5, its pairs of 3x3 convs as one 5x5 (§4.1, centre crop)",
     "better", ("S4.1", "B/256/256", "centre"), ("S4.1", "B-5x5/256/256", "centre")),
)
# §4.1's comparison of B and B-5x5 (S=256, one centre crop at Q=256): not a row of Tables 3-6.
SECTION41_ROWS = (("B/256/256", "centre"), ("B-5x5/256/256", "centre"))


@dataclass(frozen=True)
class Result:
    """One row of Tables 3-6: a configuration, the paper's errors and our per-image outcomes, either
    N (one training) or K x N (row k: seed `seeds[k]`; every seed on the same N test images)."""
    table: str
    key: str
    members: tuple
    protocol: str
    paper: dict
    correct1: torch.Tensor
    correct5: torch.Tensor
    seeds: tuple = (0,)

    @property
    def by_seed1(self):
        return self.correct1 if self.correct1.dim() == 2 else self.correct1[None]

    @property
    def by_seed5(self):
        return self.correct5 if self.correct5.dim() == 2 else self.correct5[None]

    @property
    def top1(self):
        """Mean over seeds (each seed's error on the same images, so the mean of all outcomes)."""
        return stats.error_percent(self.correct1)

    @property
    def top5(self):
        return stats.error_percent(self.correct5)

    @property
    def top1_per_seed(self):
        return [stats.error_percent(row) for row in self.by_seed1]

    @property
    def top5_per_seed(self):
        return [stats.error_percent(row) for row in self.by_seed5]

    @property
    def top1_sd(self):
        """Seed-to-seed sd of the top-1 error (sample sd, n - 1); 0 for one seed."""
        return _sd(self.top1_per_seed)

    @property
    def top5_sd(self):
        return _sd(self.top5_per_seed)

    @property
    def label(self):
        """E.g. 'Table 3: D S=256-512 Q=384, dense', in the paper's units."""
        nets = []
        for member in self.members:
            net, s, q = member.split("/")
            nets.append(f"{net} S={s}" + ("" if self.table == "T6" else f" Q={q.replace(';', ',')}"))
        where = "§4.1" if self.table == "S4.1" else f"Table {self.table[1:]}"
        return f"{where}: {' + '.join(nets)}, {self.protocol}"


def _sd(values):
    return float(torch.tensor(values, dtype=torch.float64).std()) if len(values) > 1 else 0.0


def stack_seeds(per_seed, seeds):
    """One list of Results from per-seed lists (same rows, same order): outcomes stacked K x N."""
    if len(per_seed) != len(seeds) or not per_seed:
        raise ValueError(f"{len(per_seed)} result lists for seeds {list(seeds)}")
    stacked = []
    for rows in zip(*per_seed):
        first = rows[0]
        if any(r.key != first.key for r in rows):
            raise ValueError(f"rows differ between seeds: {[r.key for r in rows]}")
        stacked.append(Result(first.table, first.key, first.members, first.protocol, first.paper,
                              torch.stack([r.correct1 for r in rows]), torch.stack([r.correct5 for r in rows]),
                              tuple(seeds)))
    return stacked


def section41_rows(read):
    """§4.1's B and B-5x5 on one centre crop at Q = S (Results of table 'S4.1'; the paper gives only their
    difference, paper/text_claims.csv)."""
    results = []
    for member, protocol in SECTION41_ROWS:
        posteriors, labels = fusion.member_posteriors(read, member, protocol)
        net, s, q = member.split("/")
        results.append(Result("S4.1", f"section4_1.{net}.S{s}.Q{q}.{protocol}", (member,), protocol,
                              {PAPER_TOP1: float("nan"), PAPER_TOP5: float("nan"), PAPER_TEST5: float("nan")},
                              *stats.correct_top_k(posteriors, labels, (1, 5))))
    return results


def row_config(row):
    """(members in net/train_S/Q;Q;Q notation, protocol) of a Table 3-6 row."""
    if row["table"] == "T6":
        return fusion.parse_ensemble(row["net"]), row["eval"]
    return [f"{row['net']}/{row['train_S']}/{row['test_Q']}"], row["eval"]


def row_key(row, ensemble=None):
    net, s, q = row["net"], row["train_S"], str(row["test_Q"]).replace(";", "_")
    return {"T3": f"table3.{net}.S{s}.Q{q}", "T4": f"table4.{net}.S{s}.Q{q}",
            "T5": f"table5.{net}.S{s}.{row['eval']}", "T6": f"table6.{ensemble}"}[row["table"]]


def required_preds(paper):
    """The (run, protocol) files that Tables 3-5 read, in the order they first appear."""
    needed = []
    for _, row in paper[paper["table"].isin(["T3", "T4", "T5"])].iterrows():
        members, protocol = row_config(row)
        for part in fusion.protocol_parts(protocol):
            pair = (fusion.parse_member(members[0])[0], part)
            if pair not in needed:
                needed.append(pair)
    return needed


def match_ensemble(members, protocol, ensembles):
    """The name in `fuse.ensembles` with exactly these members and protocol."""
    want = sorted((run, tuple(qs)) for run, qs in map(fusion.parse_member, members))
    for name, spec in ensembles.items():
        have = sorted((run, tuple(qs)) for run, qs in map(fusion.parse_member, spec["members"]))
        if have == want and spec["protocol"] == protocol:
            return name
    raise io.StageError(f"fuse.ensembles: no ensemble of {'+'.join(members)} with protocol {protocol} "
                        "(Table 6 needs it)")


def evaluate_rows(paper, read, ensembles, read_fused):
    """Our outcomes for every row of Tables 3-6, in the paper's order.

    read(run, protocol) and read_fused(name) return prediction records; `ensembles` is
    `fuse.ensembles`, whose entries Table 6's rows are matched to.
    """
    results, labels = [], None
    for _, row in paper[paper["table"].isin(["T3", "T4", "T5", "T6"])].iterrows():
        members, protocol = row_config(row)
        if row["table"] == "T6":
            name = match_ensemble(members, protocol, ensembles)
            record = read_fused(name)
            if record.get("members") != ensembles[name]["members"] or record.get("protocol") != protocol:
                raise io.StageError(f"fused {name}: made from {record.get('members')}, {record.get('protocol')}, "
                                    "not fuse.ensembles' members and protocol; re-run stage fuse")
            posteriors, row_labels = record["posteriors"]["fused"], record["labels"]
            key = row_key(row, name)
        else:
            posteriors, row_labels = fusion.member_posteriors(read, members[0], protocol)
            key = row_key(row)
        if labels is None:
            labels = row_labels
        elif not torch.equal(labels, row_labels):
            raise io.StageError(f"{key}: labels differ from the other rows' (different test images)")
        paper_errors = {PAPER_TOP1: row["top1_val_err"], PAPER_TOP5: row["top5_val_err"],
                        PAPER_TEST5: row["top5_test_err"]}
        results.append(Result(row["table"], key, tuple(members), protocol, paper_errors,
                              *stats.correct_top_k(posteriors, row_labels, (1, 5))))
    return results


def _frame(records):
    frame = pd.DataFrame(records).set_index("key")
    return frame.dropna(axis=1, how="all")  # e.g. Table 3 has no paper test error


def ours(r):
    """Our columns of a row: mean over seeds, the seed-to-seed sd, n, and each seed's value."""
    out = {OURS_TOP1: r.top1, OURS_TOP1_SD: r.top1_sd, OURS_TOP5: r.top5, OURS_TOP5_SD: r.top5_sd,
           N_SEEDS: len(r.seeds)}
    for seed, top1, top5 in zip(r.seeds, r.top1_per_seed, r.top5_per_seed):
        out[SEED_TOP1.format(seed)], out[SEED_TOP5.format(seed)] = top1, top5
    return out


def per_seed_columns(frame):
    """The columns holding one seed's value (kept in the CSVs, left out of the pages)."""
    return [c for c in frame.columns if c.startswith(("top-1 err seed ", "top-5 err seed "))]


def config_table(results, table):
    """Table 3, 4 or 5: net, train S, test Q (paper units), protocol; paper's errors and ours."""
    records = []
    for r in (r for r in results if r.table == table):
        net, s, q = r.members[0].split("/")
        records.append({"key": r.key, "ConvNet": net, "train S": s, "test Q": q.replace(";", ","),
                        "eval": r.protocol, **r.paper, **ours(r)})
    return _frame(records)


def ensemble_table(results):
    """Table 6: each fused ensemble (paper notation), the paper's errors and ours."""
    records = [{"key": r.key, "ensemble": r.key.split(".", 1)[1], "nets": len(r.members),
                "members": " + ".join(r.members).replace(";", ","), "eval": r.protocol, **r.paper, **ours(r)}
               for r in results if r.table == "T6"]
    return _frame(records)


def best_single_net(results):
    """Our lowest top-1 error (mean over seeds) among Table 5's single nets (where the paper found its
    best net)."""
    return min((r for r in results if r.table == "T5"), key=lambda r: r.top1)


def best_rows(results):
    """Our best row per ensemble size: {1: best of Table 5, n: best n-net ensemble of Table 6}."""
    best = {1: best_single_net(results)}
    for r in (r for r in results if r.table == "T6"):
        n = len(r.members)
        if n not in best or r.top1 < best[n].top1:
            best[n] = r
    return best


def comparison_table(paper, results, references=None):
    """Table 7: the paper's literature rows kept, our best 1-net and n-net rows, and published
    Fashion-MNIST test accuracies (`references`: method, test_accuracy, source) when given."""
    records = []
    for _, row in paper[paper["table"] == "T7"].iterrows():
        records.append({"key": f"table7.paper_row{int(row['row'])}", "method": row["net"],
                        "source": "paper (ILSVRC-2012)", PAPER_TOP1: row["top1_val_err"],
                        PAPER_TOP5: row["top5_val_err"], PAPER_TEST5: row["top5_test_err"]})
    for n, r in sorted(best_rows(results).items()):
        nets = f"{n} net" + ("s" if n > 1 else "")
        records.append({"key": f"table7.ours_{n}net", "method": f"VGG ({nets}; {r.protocol}): "
                        + " + ".join(m.rsplit("/", 1)[0] for m in r.members),
                        "source": f"ours, best of {r.key.split('.')[0].replace('table', 'Table ')}",
                        **ours(r), OURS_ACC: 100.0 - r.top1})
    if references is not None:
        for i, ref in enumerate(references.itertuples(index=False), start=1):
            records.append({"key": f"table7.reference{i}", "method": ref.method,
                            "source": f"Fashion-MNIST reference: {ref.source}",
                            "test accuracy (reference)": float(ref.test_accuracy)})
    return pd.DataFrame(records).set_index("key")


def tables(paper, results, references=None):
    """Tables 3-7 as DataFrames indexed by row key, in the paper's row order."""
    if not any(r.table == "T5" for r in results):  # a part without Tables 4-7 (PARTS)
        return {"table3": config_table(results, "T3")}
    return {"table3": config_table(results, "T3"), "table4": config_table(results, "T4"),
            "table5": config_table(results, "T5"), "table6": ensemble_table(results),
            "table7": comparison_table(paper, results, references)}


def find_result(results, ref):
    """The row named (table, net/train_S/Q notation joined by '+', protocol), or Table 5's best."""
    if ref == BEST_SINGLE_NET:
        if not any(r.table == "T5" for r in results):
            raise KeyError("no Table 5 rows: no best single net")
        return best_single_net(results)
    table, members, protocol = ref
    for r in results:
        if (r.table, "+".join(r.members), r.protocol) == (table, members, protocol):
            return r
    raise KeyError(f"no row {ref} in Tables 3-6")


SEEDS_AGREE, SEED_SD = "seeds agreeing in sign", "seed sd of the difference"
POOLED_SD, POOLED_DF, POOL = "pooled seed sd", "pooled df", "pooled with"
BOOT_LOW, BOOT_HIGH = "bootstrap CI low", "bootstrap CI high"
SAME_NETS, OTHER_NETS = "same trained nets", "different trained nets"


def trained_nets(result):
    """The trained nets (net/train S) behind a row: one for Tables 3-5, each member for Table 6."""
    return frozenset(member.rsplit("/", 1)[0] for member in result.members)


def claims(results, samples, seed, confidence, margin, only_available=False):
    """Each claim of CLAIMS with our top-1 error difference err(Y) - err(X) in points (the mean over
    seeds), its interval, how many seeds agree with its sign and the seed-to-seed sd, the paper's
    difference, and the verdict ("not better" claims: equivalence within `margin` points,
    vgg.stats.verdict). `only_available` skips the claims on rows not in `results` (a part of the tables).

    The interval: with one seed, the paired bootstrap over test images (vgg.stats.paired_bootstrap).
    With K >= 2 seeds, a Student-t interval whose seed part is the seed-to-seed variance pooled over the
    claims of the same kind (X and Y the same trained nets, evaluated two ways; or different trained
    nets) and whose test-set part is the images' (vgg.stats.seed_t_interval). Why pooled: three seeds
    give each claim's own sd 2 degrees of freedom; the two-level percentile bootstrap on them (kept
    beside it, vgg.stats.seed_paired_bootstrap) trusted a chance small sd, and two disjoint seed sets
    then gave "C beats B" opposite verdicts, each 3/3 in sign (docs/verdict_stability.md)."""
    from .paper import text_differences
    text_diffs = text_differences()
    records, outcomes = [], {}
    for i, (key, text, direction, x_ref, y_ref) in enumerate(CLAIMS):
        try:
            x, y = find_result(results, x_ref), find_result(results, y_ref)
        except KeyError:
            if only_available:
                continue
            raise
        if x.seeds != y.seeds:
            raise ValueError(f"{key}: X has seeds {x.seeds}, Y {y.seeds}")
        diff, low, high = stats.seed_paired_bootstrap(y.by_seed1, x.by_seed1, samples, seed + i, confidence)
        agree, n, sd = stats.seed_agreement(y.by_seed1, x.by_seed1)
        paper_diff = text_diffs[key] if key in text_diffs else y.paper[PAPER_TOP1] - x.paper[PAPER_TOP1]
        kind = SAME_NETS if trained_nets(x) == trained_nets(y) else OTHER_NETS
        outcomes[key] = (stats.per_seed_differences(y.by_seed1, x.by_seed1),
                         stats.image_variance(y.by_seed1, x.by_seed1), direction, kind)
        records.append({"key": key, "claim": text, "X": x.label, "Y": y.label,
                        "paper: err(Y) - err(X)": round(paper_diff, 4),
                        "ours: err(Y) - err(X)": diff, "CI low": low, "CI high": high, N_SEEDS: n,
                        SEEDS_AGREE: f"{agree}/{n}", SEED_SD: sd, POOL: kind if n > 1 else "",
                        POOLED_SD: float("nan"), POOLED_DF: float("nan"), BOOT_LOW: low, BOOT_HIGH: high})
    frame = pd.DataFrame(records).set_index("key") if records else pd.DataFrame(records)
    return pooled_verdicts(frame, outcomes, "ours: err(Y) - err(X)", confidence, margin)


def pooled_verdicts(frame, outcomes, diff_column, confidence, margin=None):
    """`frame` (one row per claim, K seeds) given each claim's pooled t interval and its verdict.

    `outcomes`: {key: (per-seed differences, test-set variance, direction, pool)}: the K values of
    `diff_column`'s difference, one per seed (vgg.stats.per_seed_differences), and the variance resampling
    the shared test items gives their mean (vgg.stats.image_variance; the transfer metrics' from the
    bootstrap, vgg.stats.seed_paired_bootstrap_metric). The seed-to-seed variance is pooled over the
    claims of a pool (vgg.stats.pooled_seed_variance): a kind (SAME_NETS, OTHER_NETS) for the
    classification claims, all on one measure (top-1 error); a kind and a measure for the appendices'
    claims (`localisation_pool`). A pool of one claim falls back to its own seed variance with K - 1 df.
    One seed keeps the paired bootstrap interval already in the frame."""
    for pool in dict.fromkeys(o[3] for o in outcomes.values()):  # in the claims' order
        keys = [k for k, o in outcomes.items() if o[3] == pool and frame.at[k, N_SEEDS] > 1]
        if not keys:
            continue
        variance, df = stats.pooled_seed_variance([outcomes[k][0] for k in keys])
        for k in keys:
            low, high = stats.seed_t_interval(frame.at[k, diff_column], variance, df, frame.at[k, N_SEEDS],
                                              outcomes[k][1], confidence)
            frame.loc[k, ["CI low", "CI high", POOLED_SD, POOLED_DF]] = [low, high, variance ** 0.5, df]
    if len(frame):
        frame["verdict"] = [stats.verdict(frame.at[k, "CI low"], frame.at[k, "CI high"], outcomes[k][2], margin)
                            for k in frame.index]
    return frame


def scale_errors(paper, reads):
    """Single-scale dense errors at each test scale Q of Table 4's models, per seed (`reads`: {seed:
    preds reader}; for the Q figure)."""
    records = []
    for _, row in paper[paper["table"] == "T4"].iterrows():
        member = row_config(row)[0][0]
        run, scales = fusion.parse_member(member)
        for seed, read_seed in reads.items():
            record = read_seed(run, "dense")
            for q in scales:
                posteriors = fusion.scale_posteriors(record, [q], member)
                records.append({"run": run, "seed": seed, "ConvNet": row["net"], "train S": row["train_S"], "Q": q,
                                OURS_TOP1: stats.top_k_error(posteriors, record["labels"], 1),
                                OURS_TOP5: stats.top_k_error(posteriors, record["labels"], 5)})
    return pd.DataFrame(records)


def depth_errors(table3):
    """Table 3's S=256 rows of A, B, C, D, E with their depth in weight layers (for the depth figure)."""
    rows = table3[(table3["train S"] == "256") & table3["ConvNet"].isin(["A", "B", "C", "D", "E"])].copy()
    rows.insert(1, "weight layers", [depth(net) for net in rows["ConvNet"]])
    return rows


def metrics(tables, claims=None):
    """Flat {key.top1/top5/accuracy: our number} of every table row we computed, plus each
    claim's difference and interval; numbers rounded to 4 decimals."""
    out = {}
    names = {OURS_TOP1: "top1", OURS_TOP1_SD: "top1_sd", OURS_TOP5: "top5", OURS_TOP5_SD: "top5_sd",
             OURS_ACC: "accuracy"}
    for frame in tables.values():
        for key, row in frame.iterrows():
            for column, name in names.items():
                if column in frame.columns and pd.notna(row[column]):
                    out[f"{key}.{name}"] = round(float(row[column]), 4)
    if claims is not None:
        for key, row in claims.iterrows():
            for column, name in (("ours: err(Y) - err(X)", "diff"), ("CI low", "ci_low"), ("CI high", "ci_high"),
                                 (SEED_SD, "seed_sd")):
                out[f"claims.{key}.{name}"] = round(float(row[column]), 4)
    return out


# ---------------------------------------------------------------- Tables 1-2: from the code

TABLE1_NETS = ("A", "A-LRN", "B", "C", "D", "E")


def table1(width=1.0, fc_width=4096, num_classes=1000, nets=TABLE1_NETS, pools=FULL_POOLS):
    """Table 1 generated from CONFIGS: one row per conv block, then the FC layers."""
    columns = {}
    for net in nets:
        blocks, current = [], []
        for layer in describe_layers(net, width, pools):
            if layer.endswith("maxpool"):
                blocks.append((current, layer))
                current = []
            else:
                current.append(layer)
        cells = []
        for layers, pool in blocks:
            cells += ["<br>".join(layers), pool]
        cells += [f"FC-{fc_width}", f"FC-{fc_width}", f"FC-{num_classes}", "soft-max"]
        columns[f"{net} ({depth(net)} weight layers)"] = cells
    rows = [name for b in range(1, len(blocks) + 1) for name in (f"conv block {b}", f"pool {b}")]
    rows += ["fc6", "fc7", "fc8", "output"]
    frame = pd.DataFrame(columns, index=rows)
    frame.index.name = "layer"
    return frame


def table2(scaled_kwargs, nets=TABLE1_NETS):
    """Table 2: exact full-scale parameter counts beside the paper's and the default model's."""
    paper = parameter_counts()
    rows = []
    for net in nets:
        full = count_parameters(build_model(net))
        scaled = count_parameters(build_model(net, **scaled_kwargs))
        rows.append({"net": net, "paper (M)": int(paper.loc[net, "params_millions"]),
                     "ours, full scale": f"{full:,}", "ours, full scale (M)": round(full / 1e6),
                     "matches paper": "yes" if full == int(paper.loc[net, "exact_params"]) else "NO",
                     "ours, default scale": f"{scaled:,}"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- training logs

def read_curve(path, name):
    """One DVCLive curve (TSV with columns step and `name`) as a frame with epoch and `name`."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise io.StageError(f"{path}: training log not found") from None
    if not {"step", name} <= set(frame.columns):
        raise io.StageError(f"{path}: expected columns step and {name}")
    # The train stage logs one step per epoch, from step 0.
    return pd.DataFrame({"epoch": frame["step"] + 1, name: frame[name]})


def load_curves(logs, runs, name="val_top1_err"):
    """{run: curve} from logs/<run>/plots/metrics/<name>.tsv for each named run."""
    return {run: read_curve(Path(logs) / run / "plots" / "metrics" / f"{name}.tsv", name) for run in runs}


def check_runs(runs, paper):
    """report.runs must hold every run whose predictions Tables 3-5 read."""
    for run, _ in required_preds(paper):
        if run not in runs:
            raise io.StageError(f"report.runs: lacks {run}, which Tables 3-5 need")


@dataclass(frozen=True)
class Classification:
    """Tables 3-7 and the claims of one workspace over its seeds, and what they were computed from."""
    rows: pd.DataFrame  # paper/classification_tables.csv (only Table 3's S=256 rows for part "s256")
    reads: dict  # {seed: fusion.preds_reader over that seed's evaluate stages' predictions}
    results: list  # a Result per row, outcomes K x N over the seeds
    frames: dict  # {"table3": DataFrame, ... "table7": ...}
    claims: pd.DataFrame
    seeds: tuple


# The S=256 part: Table 3's six S=256 rows, §4.1's B-5x5 comparison and the claims on them only (the
# second seed set of docs/results.md is run for this part).
PARTS = ("all", "s256")


def seed_dir(preds, seed):
    """preds/seed<k>: a replicate's evaluate and fuse outputs (dvc.yaml)."""
    return Path(preds) / f"seed{seed}"


def classification(all_params, preds, seeds=None, part="all"):
    """Tables 3-7 and the claims from the evaluate and fuse stages' posteriors of every seed
    (`preds`/seed<k>/<run>/<protocol>.pt, `preds`/seed<k>/ensembles/<name>.pt), as the `report` stage
    and scripts.classification_claims both need them. `seeds` defaults to params `seeds`."""
    settings = params.section(all_params, "report")
    seeds = tuple(params.seeds(all_params) if seeds is None else seeds)
    if part not in PARTS:
        raise ValueError(f"part {part!r} (choose from {', '.join(PARTS)})")
    ensemble_members = fusion.check_ensembles(params.section(all_params, "fuse")["ensembles"])
    rows = classification_rows()
    check_runs(settings["runs"], rows)
    if part == "s256":
        rows = rows[(rows["table"] == "T3") & (rows["train_S"] == "256")]
    reads = {seed: fusion.preds_reader(seed_dir(preds, seed)) for seed in seeds}
    per_seed = [evaluate_rows(rows, reads[seed], ensemble_members,
                              fusion.fused_reader(seed_dir(preds, seed) / "ensembles"))
                + section41_rows(reads[seed]) for seed in seeds]
    results = stack_seeds(per_seed, seeds)
    # The reference column (published Fashion-MNIST results) means nothing beside another dataset.
    fashion = params.section(all_params, "data")["dataset"] == "fashion_mnist"
    table_results = [r for r in results if r.table != "S4.1"]
    frames = tables(rows, table_results, paper_csv("fashion_mnist_reference.csv") if fashion else None)
    if part == "s256":
        frames = {"table3": frames["table3"]}
    found = claims(results, settings["bootstrap_samples"], settings["bootstrap_seed"], settings["confidence"],
                   settings["equivalence_margin"], only_available=part != "all")
    return Classification(rows, reads, results, frames, found, seeds)


def to_csv(frame, index=True):
    """A report CSV: six significant digits (float sums such as 0.6002499999999963 say nothing more
    than the bootstrap's own precision, and they make `git diff` of reports/ noisy)."""
    return frame.to_csv(index=index, float_format="%.6g")


def split_run(key):
    """('A_256', 0) from a curves key 'seed0/A_256' (logs/seed<k>/<run>/); (key, None) without a seed."""
    head, sep, run = key.partition("/")
    if sep and head.startswith("seed") and head[4:].isdigit():
        return run, int(head[4:])
    return key, None


def seed_runs(runs, seeds):
    """Curves keys 'seed<k>/<run>' of every run of every seed (logs/ of dvc.yaml)."""
    return [f"seed{seed}/{run}" for seed in seeds for run in runs]


def training_summary(curves, logs):
    """Per run (and seed): epochs, the initial learning rate and the drops the plateau rule made (§3.1),
    what stopped it (the plateau rule or the epoch cap), final training and validation top-1 error,
    best validation error, wall time (from DVCLive's summary)."""
    rows = []
    for key, c in curves.items():
        summary = io.read_json(Path(logs) / key / "metrics.json", "training summary")
        lr = load_curves(logs, [key], "lr")[key]["lr"]
        train_top1 = load_curves(logs, [key], "train_top1")[key]["train_top1"]
        run, seed = split_run(key)
        rows.append({"run": run, **({} if seed is None else {"seed": seed}), "epochs": len(c),
                     "initial lr": float(lr.iloc[0]), "lr drops": int((lr.diff() < 0).sum()),
                     "stopped by": summary.get("stopped_by", ""),
                     "final train top-1 err": 100.0 - train_top1.iloc[-1],
                     "final val top-1 err": c["val_top1_err"].iloc[-1],
                     "best val top-1 err": c["val_top1_err"].min(),
                     "wall time (s)": summary.get("wall_seconds")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Table 11 (App. B): very deep features

T11_NETS = {"D": "D", "E": "E", "DE": "D&E"}
T11_VARIANTS = {"single": "single Q", "average": "averaged", "stack": "stacked"}
OURS_MAP, OURS_RECALL, OURS_RECALL_STD = "scene mAP (ours)", "few-shot recall (ours)", "± (ours)"
PAPER_T11 = {"voc07_map": "VOC-2007 mAP (paper)", "voc12_map": "VOC-2012 mAP (paper)",
             "cal101_recall": "Caltech-101 recall (paper)", "cal101_std": "± Caltech-101 (paper)",
             "cal256_recall": "Caltech-256 recall (paper)", "cal256_std": "± Caltech-256 (paper)"}
# The paper's protocol per column group: VOC descriptors averaged over scales, Caltech's stacked
# (App. B), so its numbers sit beside our row of the same aggregation.
PAPER_T11_VARIANT = {"voc07_map": "average", "voc12_map": "average", "cal101_recall": "stack",
                     "cal101_std": "stack", "cal256_recall": "stack", "cal256_std": "stack"}


OURS_MAP_SD, OURS_RECALL_SD = "± mAP sd over seeds", "± recall sd over seeds"
SEED_MAP, SEED_RECALL = "scene mAP seed {}", "few-shot recall seed {}"


def table11(metrics, paper_rows, scales, single_scale):
    """Table 11: our rows (D, E, D&E x single Q / averaged / stacked; scene mAP and few-shot mean class
    recall, ± its std over the few-shot splits) beside the paper's (`paper_rows`: vgg.paper.transfer_rows()),
    then the paper's comparison rows. Scales in paper units.

    `metrics`: {seed: the transfer stages' flat metrics from the nets of that seed}. Ours are means over the
    seeds holding a row's task (the garment rows: the first seed's only), with the seed-to-seed sd and each
    seed's value beside them; the split std is the mean over seeds of each seed's."""
    records = []
    paper_by_net = {row.net: row for row in paper_rows.itertuples(index=False) if row.net}
    # Our rows on the target tasks (new classes), then the same tasks on the nets' own classes.
    for prefix, key_part, label, source in (("", "", "", "ours"),
                                            ("garment_", "garments.", " (garments: same classes, new layout)",
                                             "ours, same classes")):
        for net, name in T11_NETS.items():
            for variant, how in T11_VARIANTS.items():
                found, per_seed = {}, {}
                for column, sd_column, seed_column, task, metric in (
                        (OURS_MAP, OURS_MAP_SD, SEED_MAP, "scenes", "map"),
                        (OURS_RECALL, OURS_RECALL_SD, SEED_RECALL, "fewshot", "recall"),
                        (OURS_RECALL_STD, None, None, "fewshot", "recall_std")):
                    values = {seed: m[f"{prefix}{task}.{net}.{variant}.{metric}"] for seed, m in metrics.items()
                              if f"{prefix}{task}.{net}.{variant}.{metric}" in m}
                    if not values:
                        continue
                    found[column] = float(np.mean(list(values.values())))
                    if sd_column:
                        # One seed's row (garments) in a table of several: no sd, rather than a false 0.
                        found[sd_column] = (_sd(list(values.values())) if len(values) > 1 or len(metrics) == 1
                                            else float("nan"))
                        per_seed.update({seed_column.format(seed): v for seed, v in values.items()})
                if not found:
                    continue
                record = {"key": f"table11.{key_part}{net}.{variant}", "method": f"VGG {name}{label}",
                          "aggregation": how,
                          "test Q": str(single_scale) if variant == "single" else ",".join(map(str, scales)),
                          "source": source, **found}
                paper = paper_by_net.get(net)
                if paper is not None and not prefix:
                    record.update({column: getattr(paper, field) for field, column in PAPER_T11.items()
                                   if PAPER_T11_VARIANT[field] == variant})
                records.append({**record, **per_seed})
    for row in paper_rows.itertuples(index=False):
        if not row.net:
            records.append({"key": f"table11.paper_row{row.row}", "method": row.method, "source": "paper",
                            **{column: getattr(row, field) for field, column in PAPER_T11.items()}})
    return pd.DataFrame(records).set_index("key")


# Each claim: X beats Y on a task (or, "not better", X does not beat Y: an equivalence test), X and Y
# as (net, variant); Y "best" = the better single net.
TRANSFER_CLAIMS = (
    ("transfer_DE_beats_best_net", "D&E beats the better single net: scene mAP, scales averaged (Table 11)",
     "scenes", ("DE", "average"), "best", "better"),
    ("transfer_multi_scale_D", "multi-scale aggregation (averaged) beats a single scale: scene mAP, D (App. B)",
     "scenes", ("D", "average"), ("D", "single"), "better"),
    # The same two on the few-shot task, with the Caltech protocol's aggregation (stacking).
    ("transfer_DE_beats_best_net_fewshot", "D&E beats the better single net: few-shot mean class recall, scales "
     "stacked (Table 11, Caltech-101)", "fewshot", ("DE", "stack"), "best", "better"),
    ("transfer_multi_scale_D_fewshot", "multi-scale aggregation (stacked) beats a single scale: few-shot mean "
     "class recall, D (App. B)", "fewshot", ("D", "stack"), ("D", "single"), "better"),
    # App. B on VOC: "aggregating by averaging and stacking perform similarly" (objects at many scales).
    ("transfer_stack_no_better_scenes_D", "stacking does not beat averaging on the scene task: mAP, D (App. B, "
     "VOC)", "scenes", ("D", "stack"), ("D", "average"), "not better"),
    # App. B on Caltech: stacking beats averaging (objects fill the image, scales mean different parts).
    ("transfer_stack_beats_average_D", "stacking beats averaging on the few-shot task: mean class recall, D "
     "(App. B, Caltech)", "fewshot", ("D", "stack"), ("D", "average"), "better"),
)


def _transfer_scores(preds, net, variant):
    """(y, per-item scores, metric) of one variant in a transfer stage's predictions record. Few-shot
    items are images, each with its prediction in every split where it is a test image, so the bootstrap
    resamples images and the metric is the recall averaged over the splits, as reported."""
    key = f"{net}.{variant}"
    if preds["task"] == "scenes":
        return preds["labels"].numpy(), preds["scores"][key].numpy(), transfer.fast_mean_average_precision
    return preds["labels"].numpy(), preds["predictions"][key].numpy(), transfer.mean_split_recall


# Each transfer metric's form over resampled item multiplicities, for the bootstrap's speed.
WEIGHTED_METRICS = {transfer.fast_mean_average_precision: transfer.weighted_mean_average_precision,
                    transfer.mean_split_recall: transfer.weighted_mean_split_recall}


def _transfer_metric(preds, ref):
    y, scores, metric = _transfer_scores(preds, *ref)
    return metric(y, scores)


# The measure of each transfer task, naming its pool of seed variance (`localisation_pool`).
TRANSFER_MEASURES = {"scenes": "Table 11 scene mAP", "fewshot": "Table 11 few-shot mean class recall"}


def check_same_items(per_seed, task):
    """Every seed's transfer predictions (`per_seed`: {seed: record}) must be on the same test items:
    the same labels and, few-shot, the same items tested in each split (transfer.seed fixes both)."""
    first_seed, first = next(iter(per_seed.items()))
    for seed, record in per_seed.items():
        same = torch.equal(record["labels"], first["labels"])
        if same and "predictions" in first:
            same = all(torch.equal(record["predictions"][key] >= 0, first["predictions"][key] >= 0)
                       for key in first["predictions"])
        if not same:
            raise ValueError(f"seed {seed}'s {task} predictions are on other test items than seed {first_seed}'s")


def transfer_claims(scenes, fewshot, paper_rows, samples, seed, confidence, margin):
    """Each claim of TRANSFER_CLAIMS with our difference metric(X) - metric(Y) in points (the mean over
    seeds), its interval, how many seeds agree in sign and the seed-to-seed sd, the paper's difference where
    Table 11 gives it, and the verdict ("not better": equivalence within `margin`).

    `scenes`, `fewshot`: {seed: the transfer stage's predictions from the nets D and E of that seed}, all on
    the same test items (scenes; few-shot: images, pooled over the splits). The interval: one seed, the
    paired bootstrap over test items (vgg.stats.paired_bootstrap_metric); several, the classification
    claims' pooled t interval (`pooled_verdicts`), the seed variance pooled over the transfer claims of a
    kind and a task's measure, with the two-level bootstrap (seeds, then items) beside it."""
    preds = {"scenes": scenes, "fewshot": fewshot}
    for task, per_seed in preds.items():
        check_same_items(per_seed, task)
    if list(scenes) != list(fewshot):
        raise ValueError(f"scene predictions of seeds {list(scenes)}, few-shot of {list(fewshot)}")
    paper = {row.net: row for row in paper_rows.itertuples(index=False) if row.net}
    records, outcomes = [], {}
    for i, (key, text, task, x_ref, y_ref, direction) in enumerate(TRANSFER_CLAIMS):
        per_seed_preds = list(preds[task].values())
        if y_ref == "best":  # our better single net, by its test score over all seeds (as best_single_net)
            y_ref = max(((net, x_ref[1]) for net in ("D", "E")),
                        key=lambda ref: np.mean([_transfer_metric(p, ref) for p in per_seed_preds]))
        y, _, metric = _transfer_scores(per_seed_preds[0], *x_ref)
        scores_x = [_transfer_scores(p, *x_ref)[1] for p in per_seed_preds]
        scores_y = [_transfer_scores(p, *y_ref)[1] for p in per_seed_preds]
        diff, low, high, image_var = stats.seed_paired_bootstrap_metric(
            metric, WEIGHTED_METRICS[metric], y, scores_y, scores_x, samples, seed + i, confidence)
        per_seed = [metric(y, sx) - metric(y, sy) for sx, sy in zip(scores_x, scores_y)]
        agree, n, sd = stats.sign_agreement(per_seed)
        pool = localisation_pool(SAME_NETS if x_ref[0] == y_ref[0] else OTHER_NETS, TRANSFER_MEASURES[task])
        outcomes[key] = (per_seed, image_var, direction, pool)
        paper_diff = None  # Table 11 compares nets at one aggregation: VOC-2007 averaged, Caltech-101 stacked
        column = {"scenes": "voc07_map", "fewshot": "cal101_recall"}[task]
        if x_ref[1] == y_ref[1] and {x_ref[0], y_ref[0]} <= set(paper):
            paper_diff = round(getattr(paper[x_ref[0]], column) - getattr(paper[y_ref[0]], column), 4)
        records.append({"key": key, "claim": text, "X": f"{T11_NETS[x_ref[0]]} {T11_VARIANTS[x_ref[1]]}",
                        "Y": f"{T11_NETS[y_ref[0]]} {T11_VARIANTS[y_ref[1]]}", "paper: X - Y": paper_diff,
                        "ours: X - Y": diff, "CI low": low, "CI high": high, N_SEEDS: n,
                        SEEDS_AGREE: f"{agree}/{n}", SEED_SD: sd, POOL: pool if n > 1 else "",
                        POOLED_SD: float("nan"), POOLED_DF: float("nan"), BOOT_LOW: low, BOOT_HIGH: high})
    return pooled_verdicts(pd.DataFrame(records).set_index("key"), outcomes, "ours: X - Y", confidence, margin)


def transfer_metrics(claims):
    """Flat {claims.<key>.diff / ci_low / ci_high} of the transfer claims, rounded to 4 decimals."""
    return {f"claims.{key}.{name}": round(float(row[column]), 4) for key, row in claims.iterrows()
            for column, name in (("ours: X - Y", "diff"), ("CI low", "ci_low"), ("CI high", "ci_high"))}


# ---------------------------------------------------------------- Tables 8-9: localisation (App. A)

# Table 8's settings, in the paper's order, and the paper row each sits beside (its rows are at S=384).
# The paper's rows are at S=384 ("S=256 behaves the same"): ours at S=384 first, S=256 beside them.
TABLE8_RUNS = {"SCR-fc_384": 1, "PCR-fc_384": 2, "PCR-all_384": 3, "SCR-fc_256": 1, "PCR-fc_256": 2, "PCR-all_256": 3}
TABLE9_PAPER_ROWS = {"256/256": 1, "384/384": 2, "384/352,384": 3, "fusion 256/256 + 384/352,384": 4}
LOC_ERR, LOC_TOP1, LOC_TOP5 = "ours: loc. error (%)", "ours: top-1 loc. error (%)", "ours: top-5 loc. error (%)"
# Ours are means over the seeds (a localisation net per seed, from D of that seed), the sd over seeds.
LOC_ERR_SD, LOC_TOP1_SD, LOC_TOP5_SD = "± loc. error sd", "± top-1 loc. error sd", "± top-5 loc. error sd"
SEED_LOC, SEED_LOC1, SEED_LOC5 = "loc. error seed {}", "top-1 loc. error seed {}", "top-5 loc. error seed {}"


def _paper_value(paper, table, row):
    text = paper[(paper["table"] == table) & (paper["row"] == str(row))]["value"].iloc[0]
    return float(text.split("/")[0])  # "28.2 / 26.7": the validation number


def seed_subset(all_params, key, seeds):
    """The validated top-level list `key` of params: distinct seeds, each one of `seeds` (whose nets exist)."""
    value = all_params.get(key)
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in value)):
        raise io.StageError(f"{key}: {value!r} must be a non-empty list of distinct integers >= 0")
    missing = [k for k in value if k not in seeds]
    if missing:
        raise io.StageError(f"{key}: {missing[0]} is not in seeds {list(seeds)} (no nets of that seed)")
    return value


def localisation_seeds(all_params, seeds):
    """The validated top-level `localisation_seeds`: the seeds whose D nets App. A trains localisation
    nets from (dvc.yaml's train_loc, evaluate_loc, localise_dense), a subset of `seeds`."""
    return seed_subset(all_params, "localisation_seeds", seeds)


def loc_outcomes(per_seed, get):
    """K x N 0/1 outcomes, row k from the record of the k-th seed of `per_seed` ({seed: record});
    every seed must have scored the same test images (labels and true boxes equal)."""
    records = list(per_seed.values())
    for seed, record in per_seed.items():
        if not (torch.equal(record["labels"], records[0]["labels"])
                and torch.equal(record["true_boxes"], records[0]["true_boxes"])):
            raise ValueError(f"seed {seed}'s localisation records are on other test images than seed "
                             f"{next(iter(per_seed))}'s")
    return torch.stack([torch.as_tensor(get(record)).long() for record in records])


def _loc_columns(outcomes, seeds, mean_column, sd_column, seed_column):
    """Mean error over seeds (%), its seed-to-seed sd, and each seed's error."""
    per_seed = [stats.error_percent(row) for row in outcomes]
    out = {mean_column: stats.error_percent(outcomes), sd_column: _sd(per_seed)}
    out.update({seed_column.format(seed): value for seed, value in zip(seeds, per_seed)})
    return out


def table8(loc_preds, paper):
    """Table 8: localisation error of the true class's box on the centre crop, per setting; the mean
    over seeds (`loc_preds`: {seed: {run: evaluate_loc's record}}), its sd and each seed's."""
    seeds = list(loc_preds)
    records = []
    for run, paper_row in TABLE8_RUNS.items():
        p = loc_preds[seeds[0]][run]
        hits = loc_outcomes({seed: loc_preds[seed][run] for seed in seeds}, lambda r: r["hits"])
        records.append({"key": f"table8.{run}", "setting": run, "regression": p["regression"], "fine-tuned layers":
                        "fc6-fc8" if p["layers"] == "fc" else "all", "train S": "-".join(map(str, sorted(set(p["train_scale"])))),
                        "paper: loc. error (%, S=384)": _paper_value(paper, "T8", paper_row),
                        **_loc_columns(hits, seeds, LOC_ERR, LOC_ERR_SD, SEED_LOC), N_SEEDS: len(seeds)})
    return pd.DataFrame(records).set_index("key")


def table9(dense, paper):
    """Table 9: dense localisation with greedy merging; top-1 and top-5 localisation error, the mean
    over seeds (`dense`: {seed: localise_dense's record}), their sd and each seed's."""
    seeds = list(dense)
    records = []
    for label, paper_row in TABLE9_PAPER_ROWS.items():
        top1 = loc_outcomes(dense, lambda r: r["rows"][label]["top1"])
        top5 = loc_outcomes(dense, lambda r: r["rows"][label]["top5"])
        records.append({"key": f"table9.{label.split(' ')[0].replace('/', '_').replace(',', '-')}",
                        "S / Q": label, "paper: top-5 loc. error (%, val)": _paper_value(paper, "T9", paper_row),
                        **_loc_columns(top1, seeds, LOC_TOP1, LOC_TOP1_SD, SEED_LOC1),
                        **_loc_columns(top5, seeds, LOC_TOP5, LOC_TOP5_SD, SEED_LOC5), N_SEEDS: len(seeds)})
    return pd.DataFrame(records).set_index("key")


def loc_per_seed_columns(frame):
    """Tables 8-9's columns holding one seed's value (kept in the CSVs, left out of the page)."""
    return [c for c in frame.columns if c.startswith(("loc. error seed ", "top-1 loc. error seed ",
                                                      "top-5 loc. error seed "))]


# The measures of App. A's claims: their seed variances differ about tenfold (three localisation seeds,
# AMD EPYC, 2026-12-03: the Table 8 differences' seed sd 1.39 and 0.08 points, Table 9's 0.11 and 0.08),
# so one pool over both (sd 0.70) widened Table 9's intervals about eightfold; the rule registered then
# (docs/verdict_stability.md) pools within a kind and a measure.
CENTRE_CROP_ERROR, DENSE_TOP5_ERROR = "Table 8 centre-crop error", "Table 9 dense top-5 error"


def localisation_pool(kind, measure):
    """The pool of a localisation claim's seed variance: its kind (same or different trained nets) and
    its measure, e.g. "different trained nets, Table 8 centre-crop error"."""
    return f"{kind}, {measure}"


# Each localisation claim's pool (`localisation_claims` tests them in this order).
LOCALISATION_POOLS = {
    "pcr_beats_scr": localisation_pool(OTHER_NETS, CENTRE_CROP_ERROR),
    "all_layers_beat_fc": localisation_pool(OTHER_NETS, CENTRE_CROP_ERROR),
    "s384_beats_s256": localisation_pool(OTHER_NETS, DENSE_TOP5_ERROR),
    "two_scales_beat_one": localisation_pool(SAME_NETS, DENSE_TOP5_ERROR),  # the same S=384 nets, two ways
    "fusion_beats_best": localisation_pool(OTHER_NETS, DENSE_TOP5_ERROR),
}


# (key, claim, paper's difference err(X) - err(Y), X outcomes, Y outcomes): X is the baseline.
def localisation_claims(loc_preds, dense, samples, seed, confidence, paper):
    """The appendix's localisation conclusions, each with err(X) - err(Y) in points (positive: Y
    better; the mean over seeds), its interval (one seed: the paired bootstrap over test images; several:
    the pooled t interval of `claims`, the seed variance pooled within a kind and a measure,
    LOCALISATION_POOLS; the two-level bootstrap beside it), how many seeds agree in sign
    and the seed-to-seed sd, the paper's difference (from `paper`, vgg.paper.localisation_rows()), and
    the verdict. `loc_preds`, `dense`: {seed: record} as table8 and table9 take them."""
    seeds = list(dense)

    def hits(run):
        return loc_outcomes({k: loc_preds[k][run] for k in seeds}, lambda r: r["hits"])

    def top5(row):
        return loc_outcomes(dense, lambda r: r["rows"][row]["top5"])

    singles = ["256/256", "384/384", "384/352,384"]
    best = min(singles, key=lambda row: stats.error_percent(top5(row)))  # over all seeds, as Table 9 prints

    def gap(table, x_row, y_row):
        return _paper_value(paper, table, x_row) - _paper_value(paper, table, y_row)

    specs = [
        # Table 8's comparisons at the paper's S=384.
        ("pcr_beats_scr", "PCR beats SCR (Table 8, fc6-fc8 fine-tuned, S=384)", gap("T8", 1, 2),
         hits("SCR-fc_384"), hits("PCR-fc_384")),
        ("all_layers_beat_fc", "fine-tuning all layers beats fc6-fc8 only (Table 8, PCR, S=384)", gap("T8", 2, 3),
         hits("PCR-fc_384"), hits("PCR-all_384")),
        ("s384_beats_s256", "S=384 beats S=256 (Table 9, top-5, Q=S)", gap("T9", 1, 2),
         top5("256/256"), top5("384/384")),
        # The same S=384 nets at one test scale and at two.
        ("two_scales_beat_one", "two test scales beat one (Table 9, S=384: Q=352,384 vs 384, top-5)", gap("T9", 2, 3),
         top5("384/384"), top5("384/352,384")),
        # The paper's fusion row against its best single row (Q=352,384), as Table 9 prints them.
        ("fusion_beats_best", f"fusion beats the best single net (Table 9, top-5; ours: {best})", gap("T9", 3, 4),
         top5(best), top5("fusion 256/256 + 384/352,384")),
    ]
    records = []
    outcomes = {}
    for i, (key, text, paper_diff, x, y) in enumerate(specs):
        diff, low, high = stats.seed_paired_bootstrap(x, y, samples, seed + 100 + i, confidence)
        agree, n, sd = stats.seed_agreement(x, y)
        pool = LOCALISATION_POOLS[key]
        outcomes[key] = (stats.per_seed_differences(x, y), stats.image_variance(x, y), "better", pool)
        records.append({"key": key, "claim": text, "paper: err(X) - err(Y)": round(paper_diff, 4),
                        "ours: err(X) - err(Y)": diff, "CI low": low, "CI high": high, N_SEEDS: n,
                        SEEDS_AGREE: f"{agree}/{n}", SEED_SD: sd, POOL: pool if n > 1 else "",
                        POOLED_SD: float("nan"), POOLED_DF: float("nan"), BOOT_LOW: low, BOOT_HIGH: high})
    return pooled_verdicts(pd.DataFrame(records).set_index("key"), outcomes, "ours: err(X) - err(Y)", confidence)


def localisation_metrics(table8_frame, table9_frame, claims):
    """Flat keys for `dvc metrics diff`: loc.table8.<run>.err, loc.table9.<row>.top1/top5, loc.claims.*."""
    out = {f"loc.{key}.err": round(float(v), 4) for key, v in table8_frame[LOC_ERR].items()}
    for key, row in table9_frame.iterrows():
        out[f"loc.{key}.top1"] = round(float(row[LOC_TOP1]), 4)
        out[f"loc.{key}.top5"] = round(float(row[LOC_TOP5]), 4)
    for key, row in claims.iterrows():
        for column, name in (("ours: err(X) - err(Y)", "diff"), ("CI low", "ci_low"), ("CI high", "ci_high")):
            out[f"loc.claims.{key}.{name}"] = round(float(row[column]), 4)
    return out
