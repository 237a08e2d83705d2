"""Stage `report`: render the paper's tables into reports/, our numbers beside the paper's.

Tables 1-2 from the configuration table; Tables 3-7, the claims and the figures from the
evaluate and fuse stages' posteriors and the training logs; flat metrics to --metrics.
"""
import argparse
import shutil
from pathlib import Path

from vgg import figures, fusion, io, paper, params, report, tables, transfer


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preds", default="preds", type=Path, help="holds <run>/<protocol>.pt")
    parser.add_argument("--ensembles", default="preds/ensembles", type=Path, help="holds <ensemble>.pt")
    parser.add_argument("--logs", default="logs", type=Path, help="holds <run>/plots/metrics/*.tsv")
    parser.add_argument("--loc", default="preds/loc", type=Path, help="holds evaluate_loc's <run>.pt and dense.pt")
    parser.add_argument("--transfer-metrics", default="metrics", type=Path, help="holds transfer_<task>.json")
    parser.add_argument("--test", default="data/prepared/test.pt", type=Path, help="test split, for the sample figure")
    parser.add_argument("--compute", type=Path, help="optional JSON of compute used, listed in the README")
    parser.add_argument("--out", default="reports", type=Path)
    parser.add_argument("--metrics", default="metrics/tables.json", type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    model = params.section(all_params, "model")
    data = params.section(all_params, "data")
    schedules = {name: params.schedule(all_params, name) for name in ("train", "finetune", "jitter")}
    ensembles = fusion.check_ensembles(params.section(all_params, "fuse")["ensembles"])
    settings = params.section(all_params, "report")
    compute = io.read_json(args.compute, "compute file") if args.compute else None
    rows = paper.classification_rows()
    tables.check_runs(settings["runs"], rows)

    # Everything is computed before anything is written: a failure leaves no half report.
    read = fusion.preds_reader(args.preds)
    results = tables.evaluate_rows(rows, read, ensembles, fusion.fused_reader(args.ensembles))
    references = paper.paper_csv("fashion_mnist_reference.csv") if data["dataset"] == "fashion_mnist" else None
    frames = tables.tables(rows, results, references)
    claims = tables.claims(results, settings["bootstrap_samples"], settings["bootstrap_seed"],
                           settings["confidence"])
    curves = tables.load_curves(args.logs, settings["runs"])
    test_split = io.load(args.test, "prepared split")
    flat = tables.metrics(frames, claims)
    loc_preds = {run: io.load(args.loc / f"{run}.pt", "localisation predictions") for run in tables.TABLE8_RUNS}
    dense = io.load(args.loc / "dense.pt", "dense localisation predictions")
    loc_rows = paper.localisation_rows()
    table8, table9 = tables.table8(loc_preds, loc_rows), tables.table9(dense, loc_rows)
    loc_claims = tables.localisation_claims(loc_preds, dense, settings["bootstrap_samples"],
                                            settings["bootstrap_seed"], settings["confidence"])
    flat.update(tables.localisation_metrics(table8, table9, loc_claims))
    transfer_preds = {task: transfer.load_predictions(args.preds / "transfer" / f"{task}.pt", task)
                      for task in transfer.TASKS}
    transfer_flat = {}
    for task in transfer.TASKS:
        transfer_flat.update(io.read_json(args.transfer_metrics / f"transfer_{task}.json", "transfer metrics"))
    t11_paper = paper.transfer_rows()
    scenes = transfer_preds["scenes"]
    t11 = tables.table11(transfer_flat, t11_paper, scenes["scales"], scenes["single_scale"])
    t11_claims = tables.transfer_claims(scenes, transfer_preds["fewshot"], t11_paper, settings["bootstrap_samples"],
                                        settings["bootstrap_seed"], settings["confidence"])
    flat.update(tables.transfer_metrics(t11_claims))
    n_images = len(results[0].correct1)

    tmp = io.temp_dir_beside(args.out)
    try:
        (tmp / "table1.md").write_text(report.table1_page(model))
        t2 = tables.table2(params.model_kwargs(model))
        t2.to_csv(tmp / "table2.csv", index=False)
        (tmp / "table2.md").write_text(report.table2_page(t2))

        intro = (f"Errors in %. S and Q are in the paper's units (a 224 crop); here a scale is "
                 f"round(Q x {model['crop']} / 224) px (see README). The paper's errors are on ILSVRC-2012; "
                 f"ours on the {n_images:,} images of `{data['dataset']}` in the evaluate stage's predictions.")
        literature = frames["table7"]["source"].str.startswith("paper")
        sections = {"table7": {"The paper's comparison (ILSVRC-2012)": literature,
                               f"Ours ({data['dataset']}) beside published results on it": ~literature}}
        for name, frame in frames.items():
            frame.to_csv(tmp / f"{name}.csv")
            (tmp / f"{name}.md").write_text(
                report.results_page(report.TABLE_TITLES[name], intro, frame, sections.get(name)))
        claims.to_csv(tmp / "claims.csv")
        (tmp / "claims.md").write_text(report.claims_page(claims, settings["confidence"],
                                                          settings["bootstrap_samples"]))

        samples = figures.sample_images(test_split, tmp / "samples.png")
        fused = dense["rows"]["fusion 256/256 + 384/352,384"]
        loc_figure = figures.localisation_samples(test_split, fused["classes"][:, 0], fused["boxes"][:, 0],
                                                  tmp / "localisation_samples.png")
        table8.to_csv(tmp / "table8.csv")
        table9.to_csv(tmp / "table9.csv")
        loc_counts = loc_claims["verdict"].value_counts()
        appendices = [f"- [Tables 8-9](localisation.md) ([csv](table8.csv), [csv](table9.csv), "
                      f"[samples]({'localisation_samples.png' if loc_figure else 'localisation.md'})): localisation "
                      f"(App. A), {len(loc_claims)} claims: " + ", ".join(
                          f"{loc_counts.get(v, 0)} {v}" for v in ("reproduced", "contradicted", "inconclusive"))]
        t11.to_csv(tmp / "table11.csv")
        t11_claims.to_csv(tmp / "claims_transfer.csv")
        (tmp / "table11.md").write_text(report.table11_page(
            t11, t11_claims, settings["confidence"], settings["bootstrap_samples"],
            {task: r["source"] for task, r in transfer_preds.items()}))
        t11_counts = t11_claims["verdict"].value_counts()
        appendices.append(f"- [Table 11](table11.md) ([csv](table11.csv), [claims csv](claims_transfer.csv)): "
                          f"very deep features (App. B), "
                          f"{len(t11_claims)} claims: " + ", ".join(
                              f"{t11_counts.get(v, 0)} {v}" for v in ("reproduced", "contradicted", "inconclusive")))
        (tmp / "localisation.md").write_text(report.localisation_page(
            table8, table9, loc_claims, settings["confidence"], settings["bootstrap_samples"], len(dense["labels"]),
            loc_figure))
        figures.training_curves(curves, tmp / "training_curves.png")
        figures.error_vs_depth(tables.depth_errors(frames["table3"]), tmp / "error_vs_depth.png")
        figures.error_vs_test_scale(tables.scale_errors(rows, read), tmp / "error_vs_test_scale.png")
        (tmp / "README.md").write_text(report.readme(
            data, model, schedules, compute, n_images, claims, tables.training_summary(curves, args.logs),
            settings["confidence"], args.metrics, samples, appendices))
        io.replace_dir(tmp, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    io.atomic_write_json(flat, args.metrics)
    verdicts = claims["verdict"].value_counts().to_dict()
    print(f"report: wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} and {args.metrics}; "
          f"claims: {verdicts}")


if __name__ == "__main__":
    main()
