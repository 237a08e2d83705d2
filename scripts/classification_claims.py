"""Tables 3-6 and the 14 classification claims of a workspace, without the appendices.

The `report` stage needs every stage's outputs, appendices included; a run that varies only the
classification part (fp32, plain Fashion-MNIST) can stop at the fusions:

    dvc repro evaluate_dense evaluate_multi_crop fuse_ilsvrc7 fuse_DE_dense fuse_DE_multi-crop \
        fuse_DE_multi-crop+dense
    python -m scripts.classification_claims --out runs/fp32

and this writes table3-6.csv and claims.csv exactly as `report` does (same code), which
`python -m scripts.compare_runs fp32=runs/fp32 ...` reads.
"""
import argparse
from pathlib import Path

from vgg import io, params, tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preds", default="preds", type=Path)
    parser.add_argument("--ensembles", default="preds/ensembles", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    found = tables.classification(params.load_params(args.params), args.preds, args.ensembles)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("table3", "table4", "table5", "table6"):
        io.atomic_write_text(tables.to_csv(found.frames[name]), args.out / f"{name}.csv")
    io.atomic_write_text(tables.to_csv(found.claims), args.out / "claims.csv")
    print(f"classification_claims: {args.out}: {found.claims['verdict'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
