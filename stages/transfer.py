"""Stage `transfer`: linear SVMs on the frozen nets' descriptors, one task of App. B (Table 11).

`--task scenes` or `garment_scenes` (VOC protocol): one-vs-rest SVMs per class, C chosen on the validation scenes,
mean average precision on the test scenes. `--task fewshot` or `garment_fewshot` (Caltech protocol): N training images
per class, the rest test, three random splits, mean class recall as mean and std over the splits.
Every variant of Table 11: each net given and, for two, D&E; one Q, the Qs averaged, the Qs stacked.
"""
import argparse
import time
from pathlib import Path

from vgg import io, params, transfer


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", required=True, choices=transfer.TASKS)
    parser.add_argument("--features", required=True, nargs="+", type=Path,
                        help="feature files of the `features` stage, one per net (two: D&E too)")
    parser.add_argument("--out", required=True, type=Path, help="flat metrics, e.g. metrics/transfer_scenes.json")
    parser.add_argument("--preds", required=True, type=Path, help="per-test-item scores, for the report's bootstrap")
    args = parser.parse_args(argv)

    settings = params.transfer_section(params.load_params(args.params))
    if len(args.features) > 2:
        raise io.StageError(f"--features: {len(args.features)} files; Table 11 combines at most two nets (D&E)")
    records = [transfer.load_features(path, args.task) for path in args.features]
    transfer.check_same_images(records, args.features)
    if settings["single_scale"] not in records[0]["scales"]:
        raise io.StageError(f"transfer.single_scale: {settings['single_scale']} is not among the scales "
                            f"{records[0]['scales']} of {args.features[0]}; re-run stage features")

    start = time.perf_counter()
    descriptors = transfer.variant_descriptors(records, settings["single_scale"])
    labels = records[0]["labels"]
    grid = "svm_C" if transfer.TASK_KIND[args.task] == "scenes" else "fewshot_svm_C"
    if transfer.TASK_KIND[args.task] == "scenes":
        metrics, preds = transfer.classify_scenes(descriptors, labels, records[0]["splits"], settings[grid],
                                                  settings["seed"], args.task)
    else:
        metrics, preds = transfer.classify_few_shot(descriptors, labels, settings["fewshot_per_class"],
                                                    settings["fewshot_splits"], settings[grid],
                                                    settings["fewshot_cv_folds"], settings["seed"], args.task)
    preds.update(classes=records[0]["classes"], source=records[0]["source"], scales=records[0]["scales"],
                 single_scale=settings["single_scale"], runs={r["net"]: r["run"] for r in records})
    io.atomic_save(preds, args.preds)
    io.atomic_write_json(metrics, args.out)
    metric = "map" if transfer.TASK_KIND[args.task] == "scenes" else "recall"
    summary = ", ".join(f"{key.split('.', 1)[1].rsplit('.', 1)[0]} {value:.1f}" for key, value in metrics.items()
                        if key.endswith(f".{metric}"))
    print(f"transfer: {args.task} ({records[0]['source']}): {metric} {summary}; "
          f"{time.perf_counter() - start:.0f} s -> {args.out}, {args.preds}")
    # Reported, never silenced: liblinear fits stopped at max_iter, and Cs chosen at the grid's edge.
    unconverged = sum(v for k, v in metrics.items() if k.endswith(".unconverged"))
    if unconverged:
        print(f"transfer: {args.task}: {unconverged} SVM fit(s) stopped at max_iter without converging")
    if metric == "map":
        searches = preds["C_search"].values()
        print(f"transfer: {args.task}: {sum(map(len, searches))} of {len(searches) * len(settings[grid])} "
              f"C candidates scored (each search ends where validation falls: vgg.transfer.search_C)")
    chosen = [c for cs in preds["C"].values() for c in (cs if isinstance(cs, list) else [cs])]
    for edge in sorted({min(settings[grid]), max(settings[grid])} & set(chosen)):
        print(f"transfer: {args.task}: C = {edge:g}, an end of transfer.{grid}, chosen {chosen.count(edge)} "
              f"time(s) of {len(chosen)}: widen the grid")


if __name__ == "__main__":
    main()
