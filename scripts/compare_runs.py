"""Tables 3-6 (top-1 error) and the claims of several runs side by side, as markdown.

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


def read_csv(rev, path, **kwargs):
    """A run's CSV, or None where a directory run lacks it (a part of the tables: --part s256)."""
    if isinstance(rev, Path):
        return pd.read_csv(rev / Path(path).name, **kwargs) if (rev / Path(path).name).is_file() else None
    text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if text.returncode != 0:
        sys.exit(f"error: {rev}:{path}: not found")
    return pd.read_csv(io.StringIO(text.stdout), **kwargs)


def verdict_changes(first, other):
    """(claims in both, verdicts that differ, flips between reproduced and contradicted)."""
    both = first.index.intersection(other.index)
    a, b = first.loc[both, "verdict"], other.loc[both, "verdict"]
    flips = ((a == "reproduced") & (b == "contradicted")) | ((a == "contradicted") & (b == "reproduced"))
    return len(both), int((a != b).sum()), int(flips.sum())


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
    claims = {run: read_csv(rev, "reports/claims.csv", index_col="key") for run, rev in runs.items()}
    first = max(claims.values(), key=len)
    table = pd.DataFrame({"claim": first["claim"]})
    for run, c in claims.items():
        c = c.reindex(first.index)
        agree = c[AGREE] if AGREE in c else pd.Series("", index=c.index)
        table[run] = ["" if pd.isna(v) else f"{v} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (f" {a}" if isinstance(a, str) else "")
                      for v, d, lo, hi, a in zip(c["verdict"], c["ours: err(Y) - err(X)"], c["CI low"],
                                                 c["CI high"], agree)]
    counts = {run: c["verdict"].value_counts() for run, c in claims.items()}
    out += ["## Claims: verdict, err(Y) - err(X) in points [95% CI], seeds agreeing in sign", "",
            table.to_markdown(index=False), "",
            "; ".join(f"{run}: " + ", ".join(f"{counts[run].get(v, 0)} {v}" for v in
                                             ("reproduced", "contradicted", "inconclusive")) for run in runs), ""]
    base, base_claims = next(iter(claims.items()))
    for run, c in list(claims.items())[1:]:
        n, differ, flips = verdict_changes(base_claims, c)
        out.append(f"- {run} against {base}: {differ} of {n} verdicts differ, {flips} between reproduced and "
                   "contradicted.")
    return "\n".join(out) + "\n"


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
