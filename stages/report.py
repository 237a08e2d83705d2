"""Stage `report`: render the paper's tables into reports/, our numbers beside the paper's.

Tables 1-2 from the configuration table; Tables 3-7, the claims and the figures from the
evaluate and fuse stages' posteriors and the training logs; flat metrics to --metrics.
"""
import argparse
import shutil
from pathlib import Path

from vgg import io, params, report, tables


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preds", default="preds", type=Path,
                        help="holds seed<k>/<run>/<protocol>.pt, seed<k>/ensembles/<ensemble>.pt, "
                             "seed<k>/loc/ (evaluate_loc's <setting>_<S>.pt, localise_dense's dense.pt), "
                             "seed<k>/transfer/<task>.pt")
    parser.add_argument("--logs", default="logs", type=Path, help="holds seed<k>/<run>/plots/metrics/*.tsv")
    parser.add_argument("--transfer-metrics", default="metrics/transfer", type=Path,
                        help="holds seed<k>/<task>.json of the transfer stages")
    parser.add_argument("--test", default="data/prepared/test.pt", type=Path, help="test split, for the sample figure")
    parser.add_argument("--compute", type=Path, help="optional JSON of compute used, listed in the README")
    parser.add_argument("--out", default="reports", type=Path)
    parser.add_argument("--metrics", default="metrics/tables.json", type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    model = params.section(all_params, "model")
    data = params.section(all_params, "data")
    schedules = {name: params.schedule(all_params, name) for name in ("train", "finetune", "jitter")}
    settings = params.section(all_params, "report")
    compute = io.read_json(args.compute, "compute file") if args.compute else None

    # Everything is computed before anything is written: a failure leaves no half report.
    found = tables.classification(all_params, args.preds)
    rows, reads, results, frames, claims = found.rows, found.reads, found.results, found.frames, found.claims
    seeds = found.seeds
    curves = tables.load_curves(args.logs, tables.seed_runs(settings["runs"], seeds))
    test_split = io.load(args.test, "prepared split")
    flat = tables.metrics(frames, claims)
    # App. A: a localisation net per seed of localisation_seeds, from D of that seed (preds/seed<k>/loc/).
    loc_dirs = {seed: tables.seed_dir(args.preds, seed) / "loc" for seed in tables.localisation_seeds(all_params, seeds)}
    loc_preds = {seed: {run: io.load(d / f"{run}.pt", "localisation predictions") for run in tables.TABLE8_RUNS}
                 for seed, d in loc_dirs.items()}
    dense = {seed: io.load(d / "dense.pt", "dense localisation predictions") for seed, d in loc_dirs.items()}
    loc_runs = tables.seed_runs([f"loc_{run}" for run in tables.TABLE8_RUNS], loc_dirs)  # logs/seed<k>/loc_<setting>/
    loc_training = tables.training_summary(tables.load_curves(args.logs, loc_runs), args.logs)
    loc_files, loc_flat, loc_line, loc_claims = report.localisation_part(loc_preds, dense, test_split, settings,
                                                                         loc_training)
    # App. B: the target sets described by the nets of each seed; the garment tasks (the nets' own classes,
    # an extra row) by the first seed's only.
    transfer_preds, transfer_flat = report.load_transfer(args.preds, args.transfer_metrics, seeds)
    t11_files, t11_flat, t11_line, t11_claims = report.transfer_part(transfer_preds, transfer_flat, settings)
    flat.update({**loc_flat, **t11_flat})
    n_images = results[0].by_seed1.shape[1]

    forest = {"classification": claims, "App. A": loc_claims, "App. B": t11_claims}
    files = {**report.classification_part(model, data, rows, reads, frames, claims, curves, test_split, settings,
                                          n_images, forest), **loc_files, **t11_files}
    files["README.md"] = report.readme(data, model, schedules, compute, n_images, claims,
                                       tables.training_summary(curves, args.logs), settings["confidence"],
                                       args.metrics, "samples.png" in files, [loc_line, t11_line], seeds)
    tmp = io.temp_dir_beside(args.out)
    try:
        report.write_files(files, tmp)
        io.replace_dir(tmp, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    io.atomic_write_json(flat, args.metrics)
    verdicts = claims["verdict"].value_counts().to_dict()
    print(f"report: wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} and {args.metrics}; "
          f"claims: {verdicts}")


if __name__ == "__main__":
    main()
