"""Stage `localise_dense`: Table 9 — dense localisation with greedy merging (App. A.2).

For each row, the PCR net (all layers fine-tuned) and the classification net of the same S are
applied densely at each test scale Q; their boxes, pooled over the row's scales (and, for the
fusion row, over both nets), are merged greedily and ranked by the classification nets' class
posteriors, each net counted once. Top-1 / top-5 localisation error: no guess among the first 1 / 5 has the true class
and IoU > 0.5 with the true box.
"""
import argparse
from pathlib import Path

import torch

from vgg import data, evaluate, io, localisation, models, params
from vgg.transforms import pixels

CHECK_IMAGES = 100  # images whose raw candidates are saved
# Table 9's rows: (label, [(S of the nets, test scales Q)]); the last pools both nets' boxes.
ROWS = (("256/256", [("256", (256,))]),
        ("384/384", [("384", (384,))]),
        ("384/352,384", [("384", (352, 384))]),
        ("fusion 256/256 + 384/352,384", [("256", (256,)), ("384", (352, 384))]))


def dense_posteriors(path, labels, scales):
    """{Q: N x C} of an evaluate_dense posterior file at `scales`, checked to be dense and of these
    test images (`labels`)."""
    record = evaluate.load_posteriors(path)
    if record["protocol"] != "dense":
        raise io.StageError(f"{path}: {record['protocol']} posteriors, not dense")
    if not torch.equal(record["labels"], torch.as_tensor(labels).long()):
        raise io.StageError(f"{path}: posteriors of other test images than the test set's")
    missing = [q for q in scales if q not in record["posteriors"]]
    if missing:
        raise io.StageError(f"{path}: no posteriors at Q={missing[0]} (has {record['scales']})")
    return {q: record["posteriors"][q] for q in scales}


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--loc", nargs=2, required=True, type=Path, help="PCR nets at S=256 and S=384")
    parser.add_argument("--cls", nargs=2, required=True, type=Path, help="classification nets D at S=256 and 384")
    parser.add_argument("--cls-preds", nargs=2, required=True, type=Path,
                        help="their dense posteriors (evaluate_dense), at every Q of the rows")
    parser.add_argument("--test", default="data/prepared/test.pt")
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    loc = params.section(all_params, "localisation")
    bf16 = params.section(all_params, "evaluate")["bf16"]  # test-time precision, as classification's
    stats = io.read_json(args.mean_rgb, "mean RGB file")
    try:
        test_set = localisation.with_boxes(data.load_split(args.test))
    except ValueError as exc:
        raise io.StageError(f"{args.test}: {exc}") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    nets = {}
    for s, loc_path, cls_path in zip(("256", "384"), args.loc, args.cls):
        loc_model, record = models.load_model(loc_path)
        if record.get("regression") is None:
            raise io.StageError(f"{loc_path}: not a localisation net (train_loc writes those)")
        nets[s] = (loc_model, record["regression"], models.load_model(cls_path)[0])
    labels, true = test_set.labels, test_set.split["boxes"]
    scales = {s: sorted({q for _, parts in ROWS for net_s, qs in parts if net_s == s for q in qs}) for s in nets}
    # The classification nets' posteriors at each Q, Table 3's (dense, image and flip averaged): those
    # evaluate_dense saved, not computed again.
    posteriors = {(s, q): p for s, path in zip(nets, args.cls_preds)
                  for q, p in dense_posteriors(path, labels, scales[s]).items()}
    crop = nets["256"][0].crop
    candidates = {}
    for s, (loc_model, regression, cls_model) in nets.items():
        for q in scales[s]:
            candidates[s, q] = localisation.dense_predictions(loc_model, cls_model, test_set, pixels(q, crop),
                                                              stats["mean"], regression, loc["batch_size"], device,
                                                              bf16)
    rows = {}
    for label, parts in ROWS:
        keys = [(s, q) for s, qs in parts for q in qs]
        posterior = localisation.row_posteriors(posteriors, parts)  # each classification net once
        classes, boxes = localisation.localise([candidates[k] for k in keys], posterior, loc["top_k"], loc["merge_iou"])
        hits = {k: localisation.localisation_hits(classes, boxes, labels, true, loc["iou_threshold"], k) for k in (1, 5)}
        rows[label] = {"classes": classes, "boxes": boxes, "top1": hits[1], "top5": hits[5]}
        print(f"localise_dense: {label}: top-1 localisation error {100 * (1 - hits[1].double().mean()):.2f}%, "
              f"top-5 {100 * (1 - hits[5].double().mean()):.2f}%")
    # The first images' raw candidates and posteriors, so the merging can be checked independently.
    check = {f"{s}/{q}": {"boxes": [b for b, _ in candidates[s, q][:CHECK_IMAGES]],
                          "scores": [c for _, c in candidates[s, q][:CHECK_IMAGES]],
                          "posteriors": posteriors[s, q][:CHECK_IMAGES]} for s, q in candidates}
    io.atomic_save({"rows": rows, "labels": labels, "true_boxes": true, "candidates": check,
                    "merge_iou": loc["merge_iou"], "top_k": loc["top_k"]}, args.out)


if __name__ == "__main__":
    main()
