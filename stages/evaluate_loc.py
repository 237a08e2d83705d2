"""Stage `evaluate_loc`: Table 8 — the true class's box predicted on the centre crop at Q = S (App. A.2).

Localisation error: the share of test images whose predicted box overlaps the true one by IoU <= 0.5.
"""
import argparse
from pathlib import Path

import torch

from vgg import data, io, localisation, models, params
from vgg.transforms import pixels


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, type=Path, help="e.g. models/seed0/loc/PCR-all_256.pt")
    parser.add_argument("--test", default="data/prepared/test.pt")
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    loc = params.section(all_params, "localisation")
    bf16 = params.section(all_params, "evaluate")["bf16"]  # test-time precision, as classification's
    model, record = models.load_model(args.model)
    if "regression" not in record:
        raise io.StageError(f"{args.model}: not a localisation net (train_loc writes those)")
    stats = io.read_json(args.mean_rgb, "mean RGB file")
    try:
        test_set = localisation.with_boxes(data.load_split(args.test))
    except ValueError as exc:
        raise io.StageError(f"{args.test}: {exc}") from None
    scale = record["train_scale"][0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    labels, true = test_set.labels, test_set.split["boxes"]
    boxes = localisation.centre_crop_boxes(model, test_set, labels, pixels(scale, model.crop), stats["mean"],
                                           record["regression"], loc["batch_size"], device, bf16)
    hits = localisation.iou_hits(boxes, true, loc["iou_threshold"])
    io.atomic_save({"run": args.model.stem, "replicate": record.get("replicate", 0),
                    "regression": record["regression"], "layers": record["layers"],
                    "train_scale": record["train_scale"], "test_scale": scale, "boxes": boxes,
                    "true_boxes": true, "labels": labels, "hits": hits}, args.out)
    print(f"evaluate_loc: {args.model.stem}: localisation error {100 * (1 - hits.double().mean()):.2f}% "
          f"(centre crop, Q={scale}, true class) -> {args.out}")


if __name__ == "__main__":
    main()
