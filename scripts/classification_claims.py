"""Tables 3-6 and the 14 classification claims of a workspace, without the appendices.

The `report` stage needs every stage's outputs, appendices included; a run that varies only the
classification part (fp32, plain Fashion-MNIST) can stop at the fusions:

    dvc repro evaluate_dense evaluate_multi_crop evaluate_centre fuse_ilsvrc7 fuse_DE_dense \
        fuse_DE_multi-crop fuse_DE_multi-crop+dense
    python -m scripts.classification_claims --out runs/fp32

and this writes table3-6.csv and claims.csv exactly as `report` does (same code), which
`python -m scripts.compare_runs fp32=runs/fp32 ...` reads. `--part s256` needs only the S=256 nets
(Table 3's S=256 rows, §4.1's B-5x5 and the claims on them; runs/seeds345).
"""
import argparse
from pathlib import Path

from vgg import io, params, tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preds", default="preds", type=Path, help="holds seed<k>/ of every seed in params")
    parser.add_argument("--part", default="all", choices=tables.PARTS)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    found = tables.classification(params.load_params(args.params), args.preds, part=args.part)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("table3", "table4", "table5", "table6"):
        if name in found.frames:
            io.atomic_write_text(tables.to_csv(found.frames[name]), args.out / f"{name}.csv")
    io.atomic_write_text(tables.to_csv(found.claims), args.out / "claims.csv")
    print(f"classification_claims: {args.out}: {found.claims['verdict'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
