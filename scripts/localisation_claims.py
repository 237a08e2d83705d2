"""Tables 8-9 and the localisation claims (App. A) of a workspace, without the rest of the report.

The `report` stage needs every stage's outputs; a run of the localisation part alone (the nets D of
each seed, then App. A) can stop at its stages:

    dvc repro evaluate_loc localise_dense      # with localisation_seeds: [0, 1, 2] in params.yaml
    python -m scripts.localisation_claims --out runs/loc_seeds012
    python -m scripts.localisation_claims --seeds 1 --out runs/loc_seed1   # what one training says

and this writes table8.csv, table9.csv and claims_localisation.csv exactly as `report` does (same
code), which `python -m scripts.compare_runs a=runs/loc_seeds012 b=runs/loc_seed1` reads.
"""
import argparse
from pathlib import Path

from vgg import io, params, paper, tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preds", default="preds", type=Path, help="holds seed<k>/loc/ of every seed used")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to use (default: params `localisation_seeds`)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    all_params = params.load_params(args.params)
    settings = params.section(all_params, "report")
    seeds = args.seeds or tables.localisation_seeds(all_params, params.seeds(all_params))
    dirs = {seed: tables.seed_dir(args.preds, seed) / "loc" for seed in seeds}
    loc = {seed: {run: io.load(d / f"{run}.pt", "localisation predictions") for run in tables.TABLE8_RUNS}
           for seed, d in dirs.items()}
    dense = {seed: io.load(d / "dense.pt", "dense localisation predictions") for seed, d in dirs.items()}
    rows = paper.localisation_rows()
    claims = tables.localisation_claims(loc, dense, settings["bootstrap_samples"], settings["bootstrap_seed"],
                                        settings["confidence"], rows)
    args.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(tables.to_csv(tables.table8(loc, rows)), args.out / "table8.csv")
    io.atomic_write_text(tables.to_csv(tables.table9(dense, rows)), args.out / "table9.csv")
    io.atomic_write_text(tables.to_csv(claims), args.out / "claims_localisation.csv")
    print(f"localisation_claims: seeds {seeds} -> {args.out}: {claims['verdict'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
