"""Stage `train_loc`: a localisation net (App. A.1) from the classification net D at the same S.

The last FC layer regresses boxes (SCR: one box; PCR: one per class); fine-tunes all layers or
only fc6-fc8, with the classification recipe's augmentation, the box carried along.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from stages.train import fit_and_save, relaunch_under_torchrun
from vgg import data, io, localisation, models, params
from vgg.train import Task
from vgg.transforms import TestTransform, TrainTransform, pixels


def localisation_task(regression, threshold):
    """The training loop's Task for a localisation net: Euclidean box loss; a hit is a box of the
    true class with IoU > `threshold` (what the curves' top-1 and the plateau rule count)."""
    def hits(outputs, targets):
        return localisation.box_hits(outputs, targets, regression, threshold)

    return Task(loss=lambda outputs, targets: localisation.box_loss(outputs, targets, regression), hits=hits,
                train_hits=lambda outputs, targets: hits(outputs, targets)[0],
                val_targets=localisation.centre_crop_targets)


@io.stage_main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--regression", required=True, choices=localisation.REGRESSIONS)
    parser.add_argument("--layers", required=True, choices=localisation.LAYERS)
    parser.add_argument("--init", required=True, type=Path, help="classification net, e.g. models/D_256.pt")
    parser.add_argument("--data", default="data/prepared", type=Path)
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--live-dir", required=True, type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    loc = params.section(all_params, "localisation")
    hp = params.schedule(all_params, "localisation")
    classifier, record = models.load_model(args.init)
    if "train_scale" not in record:
        raise io.StageError(f"{args.init}: no train_scale (not a trained model file)")
    # App. A.1: trained at the S of the classification net it starts from.
    hp = dataclasses.replace(hp, scale_min=record["train_scale"][0], scale_max=record["train_scale"][1])
    relaunch_under_torchrun(argv)

    stats = io.read_json(args.mean_rgb, "mean RGB file")
    try:  # App. A.1: trained on the images that have a box
        train_set = localisation.with_boxes(data.load_split(args.data / "train.pt"))
        val_set = localisation.with_boxes(data.load_split(args.data / "val.pt"))
    except ValueError as exc:
        raise io.StageError(f"{args.data}: {exc}") from None
    num_classes = classifier.classifier[-1].out_features
    model = localisation.localisation_net(classifier, args.regression, num_classes, loc["init_std"],
                                          torch.Generator().manual_seed(loc["seed"]))
    localisation.freeze_for(model, args.layers)
    crop = model.crop
    smin, smax = pixels(hp.scale_min, crop), pixels(hp.scale_max, crop)
    train_transform = TrainTransform(crop, smin, smax, stats["mean"], stats["eigval"], stats["eigvec"],
                                     hp.colour_shift_std, hp.flip)
    val_transform = TestTransform(pixels((hp.scale_min + hp.scale_max) / 2, crop), stats["mean"])
    kwargs = {**record["kwargs"], "num_classes": model.classifier[-1].out_features, "dropout": hp.dropout}
    settings = {"net": model.net, "schedule": "localisation", "hp": dataclasses.asdict(hp), "model": kwargs,
                "regression": args.regression, "layers": args.layers, "localisation": loc, "init_file": str(args.init)}
    inputs = [args.data / "train.pt", args.data / "val.pt", args.mean_rgb, args.init]
    task = localisation_task(args.regression, loc["iou_threshold"])
    fit_and_save(model, localisation.BoxTargets(train_set, train_transform), val_set, val_transform, hp, settings,
                 inputs, args.out, args.live_dir, kwargs, task=task, init_file=str(args.init),
                 regression=args.regression, layers=args.layers, classes=num_classes)


if __name__ == "__main__":
    main()
