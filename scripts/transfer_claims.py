"""Table 11 and the transfer claims (App. B) of a workspace, without the rest of the report.

The `report` stage needs every stage's outputs; the transfer part can be read alone once its stages ran,
for all seeds or some (what one training says):

    dvc repro transfer_scenes transfer_fewshot transfer_garment_scenes transfer_garment_fewshot
    python -m scripts.transfer_claims --out runs/transfer_seeds012
    python -m scripts.transfer_claims --seeds 1 --out runs/transfer_seed1   # seed 1's nets alone

and this writes table11.csv and claims_transfer.csv exactly as `report` does (same code), which
`python -m scripts.compare_runs a=runs/transfer_seeds012 b=runs/transfer_seed1` reads. The garment rows
(the nets' own classes) are in table11.csv where the first seed given has them.
"""
import argparse
from pathlib import Path

from vgg import io, params, paper, tables, transfer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preds", default="preds", type=Path, help="holds seed<k>/transfer/<task>.pt")
    parser.add_argument("--transfer-metrics", default="metrics/transfer", type=Path, help="holds seed<k>/<task>.json")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to use (default: params `seeds`)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    all_params = params.load_params(args.params)
    settings = params.section(all_params, "report")
    seeds = args.seeds or params.seeds(all_params)
    preds = {task: {seed: transfer.load_predictions(tables.seed_dir(args.preds, seed) / "transfer" / f"{task}.pt", task)
                    for seed in seeds} for task in ("scenes", "fewshot")}
    flat = {seed: {} for seed in seeds}
    for seed in seeds:
        for task in transfer.TASKS:
            path = args.transfer_metrics / f"seed{seed}" / f"{task}.json"
            # The garment tasks: the first seed's only, as the report (where that seed has them).
            if task in ("scenes", "fewshot") or (seed == seeds[0] and path.is_file()):
                flat[seed].update(io.read_json(path, "transfer metrics"))
    rows = paper.transfer_rows()
    scenes = preds["scenes"][seeds[0]]
    t11 = tables.table11(flat, rows, scenes["scales"], scenes["single_scale"])
    claims = tables.transfer_claims(preds["scenes"], preds["fewshot"], rows, settings["bootstrap_samples"],
                                    settings["bootstrap_seed"], settings["confidence"], settings["equivalence_margin"])
    args.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(tables.to_csv(t11), args.out / "table11.csv")
    io.atomic_write_text(tables.to_csv(claims), args.out / "claims_transfer.csv")
    print(f"transfer_claims: seeds {seeds} -> {args.out}: {claims['verdict'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
