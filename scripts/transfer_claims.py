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

from vgg import io, params, report


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
    # The report's own loading and tables; the garment rows where the first seed given has them.
    preds, flat = report.load_transfer(args.preds, args.transfer_metrics, seeds, garments_required=False)
    files, _, _, claims = report.transfer_part(preds, flat, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("table11.csv", "claims_transfer.csv"):
        io.atomic_write_text(files[name], args.out / name)
    print(f"transfer_claims: seeds {seeds} -> {args.out}: {claims['verdict'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
