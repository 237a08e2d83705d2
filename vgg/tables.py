"""Every table of the report as a DataFrame: Tables 1-2 from the code, Tables 3-7 and the paper's
claims from saved posteriors beside the paper's numbers (paper/classification_tables.csv drives
every row), and the training summary from the logs. `vgg.report` writes them as pages.

Each row gets a stable key (`table3.D.S256-512.Q384`, `table6.DE_dense`, `table7.ours_1net`):
the frames' index, and the prefix of its entries in `metrics`.
"""
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import fusion, io, stats
from .models import FULL_POOLS, build_model, count_parameters, depth, describe_layers
from .paper import parameter_counts

PAPER_TOP1, PAPER_TOP5, PAPER_TEST5 = "top-1 val err (paper)", "top-5 val err (paper)", "top-5 test err (paper)"
OURS_TOP1, OURS_TOP5, OURS_ACC = "top-1 err (ours)", "top-5 err (ours)", "top-1 accuracy (ours)"
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
)


@dataclass(frozen=True)
class Result:
    """One row of Tables 3-6: a configuration, the paper's errors and our per-image outcomes."""
    table: str
    key: str
    members: tuple
    protocol: str
    paper: dict
    correct1: torch.Tensor
    correct5: torch.Tensor

    @property
    def top1(self):
        return stats.error_percent(self.correct1)

    @property
    def top5(self):
        return stats.error_percent(self.correct5)

    @property
    def label(self):
        """E.g. 'Table 3: D S=256-512 Q=384, dense', in the paper's units."""
        nets = []
        for member in self.members:
            net, s, q = member.split("/")
            nets.append(f"{net} S={s}" + ("" if self.table == "T6" else f" Q={q.replace(';', ',')}"))
        return f"Table {self.table[1:]}: {' + '.join(nets)}, {self.protocol}"


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


def config_table(results, table):
    """Table 3, 4 or 5: net, train S, test Q (paper units), protocol; paper's errors and ours."""
    records = []
    for r in (r for r in results if r.table == table):
        net, s, q = r.members[0].split("/")
        records.append({"key": r.key, "ConvNet": net, "train S": s, "test Q": q.replace(";", ","),
                        "eval": r.protocol, **r.paper, OURS_TOP1: r.top1, OURS_TOP5: r.top5})
    return _frame(records)


def ensemble_table(results):
    """Table 6: each fused ensemble (paper notation), the paper's errors and ours."""
    records = [{"key": r.key, "ensemble": r.key.split(".", 1)[1], "nets": len(r.members),
                "members": " + ".join(r.members).replace(";", ","), "eval": r.protocol, **r.paper,
                OURS_TOP1: r.top1, OURS_TOP5: r.top5}
               for r in results if r.table == "T6"]
    return _frame(records)


def best_single_net(results):
    """Our lowest top-1 error among Table 5's single nets (where the paper found its best net)."""
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
                        OURS_TOP1: r.top1, OURS_TOP5: r.top5, OURS_ACC: 100.0 - r.top1})
    if references is not None:
        for i, ref in enumerate(references.itertuples(index=False), start=1):
            records.append({"key": f"table7.reference{i}", "method": ref.method,
                            "source": f"Fashion-MNIST reference: {ref.source}",
                            "test accuracy (reference)": float(ref.test_accuracy)})
    return pd.DataFrame(records).set_index("key")


def tables(paper, results, references=None):
    """Tables 3-7 as DataFrames indexed by row key, in the paper's row order."""
    return {"table3": config_table(results, "T3"), "table4": config_table(results, "T4"),
            "table5": config_table(results, "T5"), "table6": ensemble_table(results),
            "table7": comparison_table(paper, results, references)}


def find_result(results, ref):
    """The row named (table, net/train_S/Q notation joined by '+', protocol), or Table 5's best."""
    if ref == BEST_SINGLE_NET:
        return best_single_net(results)
    table, members, protocol = ref
    for r in results:
        if (r.table, "+".join(r.members), r.protocol) == (table, members, protocol):
            return r
    raise KeyError(f"no row {ref} in Tables 3-6")


def claims(results, samples, seed, confidence):
    """Each claim of CLAIMS with our top-1 error difference err(Y) - err(X) in points, its paired
    bootstrap interval over test images, the paper's difference, and the computed verdict."""
    records = []
    for i, (key, text, direction, x_ref, y_ref) in enumerate(CLAIMS):
        x, y = find_result(results, x_ref), find_result(results, y_ref)
        diff, low, high = stats.paired_bootstrap(y.correct1, x.correct1, samples, seed + i, confidence)
        records.append({"key": key, "claim": text, "X": x.label, "Y": y.label,
                        "paper: err(Y) - err(X)": round(y.paper[PAPER_TOP1] - x.paper[PAPER_TOP1], 4),
                        "ours: err(Y) - err(X)": diff, "CI low": low, "CI high": high,
                        "verdict": stats.verdict(low, high, direction)})
    return pd.DataFrame(records).set_index("key")


def scale_errors(paper, read):
    """Single-scale dense errors at each test scale Q of Table 4's models (for the Q figure)."""
    records = []
    for _, row in paper[paper["table"] == "T4"].iterrows():
        member = row_config(row)[0][0]
        run, scales = fusion.parse_member(member)
        record = read(run, "dense")
        for q in scales:
            posteriors = fusion.scale_posteriors(record, [q], member)
            records.append({"run": run, "ConvNet": row["net"], "train S": row["train_S"], "Q": q,
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
    names = {OURS_TOP1: "top1", OURS_TOP5: "top5", OURS_ACC: "accuracy"}
    for frame in tables.values():
        for key, row in frame.iterrows():
            for column, name in names.items():
                if column in frame.columns and pd.notna(row[column]):
                    out[f"{key}.{name}"] = round(float(row[column]), 4)
    if claims is not None:
        for key, row in claims.iterrows():
            for column, name in (("ours: err(Y) - err(X)", "diff"), ("CI low", "ci_low"), ("CI high", "ci_high")):
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


def training_summary(curves, logs):
    """Per run: epochs, learning-rate drops the plateau rule made (§3.1), final training and validation
    top-1 error, best validation error, wall time (from DVCLive's summary)."""
    rows = []
    for run, c in curves.items():
        summary = io.read_json(Path(logs) / run / "metrics.json", "training summary")
        lr = load_curves(logs, [run], "lr")[run]["lr"]
        train_top1 = load_curves(logs, [run], "train_top1")[run]["train_top1"]
        rows.append({"run": run, "epochs": len(c), "lr drops": int((lr.diff() < 0).sum()),
                     "final train top-1 err": 100.0 - train_top1.iloc[-1],
                     "final val top-1 err": c["val_top1_err"].iloc[-1],
                     "best val top-1 err": c["val_top1_err"].min(),
                     "wall time (s)": summary.get("wall_seconds")})
    return pd.DataFrame(rows)
