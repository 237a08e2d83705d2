"""Tables 3-6 (top-1 error) and the claims of several runs side by side, as markdown; then, where
the runs have them, the appendices' Tables 8, 9, 11 and their claims.

    python -m scripts.compare_runs default=HEAD plain=<exp-or-commit> [...] > docs/runs_compared.md

Each NAME=REV is a git revision or a DVC experiment name (`dvc exp show` lists them); the run's
committed `reports/*.csv` are read from it with `git show`, so nothing needs checking out. REV may
also be a directory holding table3-6.csv and claims.csv (`scripts/classification_claims.py`).
"""
import argparse
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

TABLES = {"table3": ["ConvNet", "train S", "test Q"], "table4": ["ConvNet", "train S", "test Q"],
          "table5": ["ConvNet", "eval"], "table6": ["ensemble", "eval"]}
PAPER = "top-1 val err (paper)"
OURS = "top-1 err (ours)"
SD = "± top-1 sd (ours)"  # runs with seeds (vgg.tables)
AGREE = "seeds agreeing in sign"
# The appendices: per table, the columns naming a row and the values compared; then
# their claims. Runs made before a file existed simply lack it.
APPENDIX_TABLES = {
    "table8": ("Table 8: localisation error (%)", ["setting"], {"ours: loc. error (%)": "error"}),
    "table9": ("Table 9: dense localisation error (%)", ["S / Q"],
               {"ours: top-1 loc. error (%)": "top-1", "ours: top-5 loc. error (%)": "top-5"}),
    "table11": ("Table 11: transfer", ["method", "aggregation", "source"],
                {"scene mAP (ours)": "scene mAP", "few-shot recall (ours)": "few-shot recall"}),
}
APPENDIX_CLAIMS = {"claims_localisation": "Localisation claims (App. A)", "claims_transfer": "Transfer claims (App. B)"}
# Runs with several localisation seeds also have the seed-to-seed sd of each localisation error.
APPENDIX_SD = {"ours: loc. error (%)": "± loc. error sd", "ours: top-1 loc. error (%)": "± top-1 loc. error sd",
               "ours: top-5 loc. error (%)": "± top-5 loc. error sd"}


def resolve(rev):
    """A git revision, the commit of a DVC experiment of that name, or a directory of CSVs."""
    if Path(rev).is_dir():
        return Path(rev)
    if subprocess.run(["git", "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], capture_output=True).returncode == 0:
        return rev
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"],
                          capture_output=True, text=True).stdout.split()
    ref = [r for r in refs if r.rsplit("/", 1)[-1] == rev]
    if len(ref) != 1:
        sys.exit(f"error: {rev}: neither a git revision nor a DVC experiment")
    return ref[0]


def read_csv(rev, path, optional=False, **kwargs):
    """A run's CSV, or None where a directory run lacks it (a part of the tables: --part s256), or
    where an `optional` file is not in the revision."""
    if isinstance(rev, Path):
        return pd.read_csv(rev / Path(path).name, **kwargs) if (rev / Path(path).name).is_file() else None
    text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if text.returncode != 0:
        if optional:
            return None
        sys.exit(f"error: {rev}:{path}: not found")
    return pd.read_csv(io.StringIO(text.stdout), **kwargs)


def verdict_changes(first, other):
    """(claims in both, verdicts that differ, flips between reproduced and contradicted)."""
    both = first.index.intersection(other.index)
    a, b = first.loc[both, "verdict"], other.loc[both, "verdict"]
    flips = ((a == "reproduced") & (b == "contradicted")) | ((a == "contradicted") & (b == "reproduced"))
    return len(both), int((a != b).sum()), int(flips.sum())


def claim_cells(claims):
    """'verdict ours [CI low, CI high]' per claim (+ the seeds agreeing in sign, where the run has seeds)."""
    ours = next(c for c in claims.columns if c.startswith("ours:"))
    agree = claims[AGREE] if AGREE in claims else pd.Series("", index=claims.index)
    return ["" if pd.isna(v) else f"{v} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (f" {a}" if isinstance(a, str) else "")
            for v, d, lo, hi, a in zip(claims["verdict"], claims[ours], claims["CI low"], claims["CI high"], agree)]


def differing_verdicts(claims):
    """One line per run after the first: how many of its verdicts differ from the first run's."""
    (base, first), *others = claims.items()
    lines = []
    for run, c in others:
        n, differ, flips = verdict_changes(first, c)
        lines.append(f"- {run} against {base}: {differ} of {n} verdicts differ, {flips} between reproduced and "
                     "contradicted.")
    return lines


def appendices(runs):
    """Markdown lines: Tables 8, 9, 11 and the appendices' claims of the runs that have them."""
    out = []
    for name, (title, keys, values) in APPENDIX_TABLES.items():
        frames = {run: frame.set_index("key") for run, rev in runs.items()
                  if (frame := read_csv(rev, f"reports/{name}.csv", optional=True)) is not None}
        if not frames:
            continue
        first = max(frames.values(), key=len)
        table = first[keys].copy()
        for run, frame in frames.items():
            for column, short in values.items():
                table[f"{run} {short}"] = frame[column].reindex(first.index).values
                if APPENDIX_SD.get(column) in frame and frame.get("n_seeds", pd.Series([1])).max() > 1:
                    table[f"{run} {short} sd"] = frame[APPENDIX_SD[column]].reindex(first.index).values
        table = table[table.iloc[:, len(keys):].notna().any(axis=1)]  # Table 11's paper-only rows
        out += [f"## {title}", "", table.to_markdown(index=False, floatfmt=".2f"), ""]
    for name, title in APPENDIX_CLAIMS.items():
        claims = {run: c for run, rev in runs.items()
                  if (c := read_csv(rev, f"reports/{name}.csv", optional=True, index_col="key")) is not None}
        if not claims:
            continue
        first = max(claims.values(), key=len)
        table = pd.DataFrame({"claim": first["claim"]})
        for run, c in claims.items():
            table[run] = claim_cells(c.reindex(first.index))
        out += [f"## {title}: verdict, difference in points [95% CI]", "", table.to_markdown(index=False), "",
                *differing_verdicts(claims), ""]
    return out


def compare(runs):
    """Markdown: per table, the paper's top-1 and each run's (rows matched by key); then each claim's
    verdict per run (with the seeds agreeing in sign, where the run has seeds), and how many verdicts
    differ from the first run's."""
    out = []
    for name, keys in TABLES.items():
        frames = {run: frame.set_index("key") for run, rev in runs.items()
                  if (frame := read_csv(rev, f"reports/{name}.csv")) is not None}
        if not frames:
            continue
        first = max(frames.values(), key=len)
        table = first[keys].copy()
        table["paper top-1 (ILSVRC)"] = first[PAPER]
        for run, frame in frames.items():
            table[f"{run} top-1"] = frame[OURS].reindex(first.index).values
            if SD in frame:
                table[f"{run} sd"] = frame[SD].reindex(first.index).values
        out += [f"## {name[:5].capitalize()} {name[5:]}: top-1 error (%)", "",
                table.to_markdown(index=False, floatfmt=".2f"), ""]
    claims = {run: c for run, rev in runs.items()
              if (c := read_csv(rev, "reports/claims.csv", index_col="key")) is not None}
    if claims:  # a directory of appendix CSVs only has none
        first = max(claims.values(), key=len)
        table = pd.DataFrame({"claim": first["claim"]})
        for run, c in claims.items():
            table[run] = claim_cells(c.reindex(first.index))
        counts = {run: c["verdict"].value_counts() for run, c in claims.items()}
        out += ["## Claims: verdict, err(Y) - err(X) in points [95% CI], seeds agreeing in sign", "",
                table.to_markdown(index=False), "",
                "; ".join(f"{run}: " + ", ".join(f"{counts[run].get(v, 0)} {v}" for v in
                                                 ("reproduced", "contradicted", "inconclusive")) for run in claims),
                "", *differing_verdicts(claims)]
    return "\n".join(out + ["", *appendices(runs)]).rstrip("\n") + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=REV")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, rev = item.partition("=")
        if not sep:
            sys.exit(f"error: {item}: expected NAME=REV")
        runs[name] = resolve(rev)
    print(compare(runs))


if __name__ == "__main__":
    main()
