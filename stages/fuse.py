"""Stage `fuse`: one ensemble of `fuse.ensembles` (§4.4), its members' soft-max posteriors averaged."""
import argparse
from pathlib import Path

from vgg import fusion, io, params, stats


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--name", required=True, help="a key of fuse.ensembles")
    parser.add_argument("--preds", default="preds", type=Path, help="holds <run>/<protocol>.pt")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    ensembles = fusion.check_ensembles(params.section(params.load_params(args.params), "fuse")["ensembles"])
    if args.name not in ensembles:
        raise io.StageError(f"--name: {args.name!r} is not in fuse.ensembles ({', '.join(ensembles)})")
    members, protocol = ensembles[args.name]["members"], ensembles[args.name]["protocol"]
    posteriors, labels = fusion.fuse(fusion.preds_reader(args.preds), members, protocol)
    io.atomic_save(fusion.ensemble_record(args.name, members, protocol, posteriors, labels), args.out)
    print(f"fuse: {args.name}: {len(members)} nets, {protocol}: top-1 error "
          f"{stats.top_k_error(posteriors, labels, 1):.2f}%, top-5 "
          f"{stats.top_k_error(posteriors, labels, 5):.2f}% -> {args.out}")


if __name__ == "__main__":
    main()
