"""Stage `train_loc`: a localisation net (App. A.1) from the classification net D at the same S.

The last FC layer regresses boxes (SCR: one box; PCR: one per class); fine-tunes all layers or
only fc6-fc8, with the classification recipe's augmentation, the box carried along. Trained once
per seed of `localisation_seeds`, from D of that seed: with several, Tables 8-9's verdicts see
training-to-training variance as the classification claims do.
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

# A localisation net whose loss turns non-finite is trained again from its classification net at a
# tenth of the lr, at most this many times. lr 0.03 (chosen on validation, params.yaml) is within
# about 3x of divergence: 0.1 diverged within 10 steps, and SCR-fc_384 diverged at 0.03, step 10, on
# an AMD EPYC (bf16) from that machine's seed-0 D_384 (2026-12-02). Nets that do not diverge are
# trained exactly as before; the model file and the report's training table give the lr used.
DIVERGENCE_RETRIES = 2
SETTINGS = [f"{r}-{layers}" for r in localisation.REGRESSIONS for layers in localisation.LAYERS]


def diverged(exc):
    """Whether a StageError is vgg.train's non-finite loss (raised before any checkpoint is written)."""
    return "non-finite loss" in str(exc)


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
    parser.add_argument("--setting", required=True, choices=SETTINGS,
                        help="<regression>-<fine-tuned layers>, e.g. PCR-all (Table 8's rows)")
    parser.add_argument("--seed", type=int, default=0, help="training replicate (params `localisation_seeds`): offsets "
                        "train.seed and localisation.seed by vgg.params.SEED_STRIDE x seed")
    parser.add_argument("--init", required=True, type=Path, help="classification net, e.g. models/seed0/D_256.pt")
    parser.add_argument("--data", default="data/prepared", type=Path)
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--live-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise io.StageError(f"--seed: {args.seed} must be >= 0")
    args.regression, args.layers = args.setting.split("-")

    all_params = params.load_params(args.params)
    # A replicate varies what a re-run varies (box layer init, data order, augmentation, dropout), as in
    # stages/train.py; seed 0 is the params' own run.
    loc = params.section(all_params, "localisation")
    loc = {**loc, "seed": params.replicate_seed(loc["seed"], args.seed)}
    hp = params.schedule(all_params, "localisation")
    hp = dataclasses.replace(hp, seed=params.replicate_seed(hp.seed, args.seed))
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

    def fit(lr, init):
        classifier, record = init
        fit_localisation_net(args, loc, dataclasses.replace(hp, lr=lr), classifier, record, stats, train_set,
                             val_set)

    # A retry reloads the classification net: the failed run changed the layers it shares with it.
    fit_until_finite(fit, hp.lr, (classifier, record), lambda: models.load_model(args.init), args.init)


def fit_until_finite(fit, lr, init, reload, source):
    """fit(lr, init); where its loss turns non-finite, fit(lr / 10, reload()), at most
    DIVERGENCE_RETRIES times; any other error, or the last divergence, is raised."""
    for attempt in range(DIVERGENCE_RETRIES + 1):
        try:
            return fit(lr, init)
        except io.StageError as exc:
            if not diverged(exc) or attempt == DIVERGENCE_RETRIES:
                raise
            print(f"train_loc: {exc}; training again from {source} at lr {lr / 10:g}", flush=True)
            lr, init = lr / 10, reload()


def fit_localisation_net(args, loc, hp, classifier, record, stats, train_set, val_set):
    """One training of the localisation net from `classifier` at `hp.lr`, saved to args.out."""
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
                "regression": args.regression, "layers": args.layers, "localisation": loc, "init_file": str(args.init),
                "replicate": args.seed}
    inputs = [args.data / "train.pt", args.data / "val.pt", args.mean_rgb, args.init]
    task = localisation_task(args.regression, loc["iou_threshold"])
    fit_and_save(model, localisation.BoxTargets(train_set, train_transform), val_set, val_transform, hp, settings,
                 inputs, args.out, args.live_dir, kwargs, task=task, init_file=str(args.init),
                 regression=args.regression, layers=args.layers, classes=num_classes, replicate=args.seed)


if __name__ == "__main__":
    main()
