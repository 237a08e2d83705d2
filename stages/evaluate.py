"""Stage `evaluate`: soft-max posteriors of one model on the test set, dense or multi-crop (§3.2, §4.1-4.3).

Evaluates at the model's three multi-scale test scales Q (§4.2), which include its single-scale
Q (§4.1); later stages pick, average and fuse them.
"""
import argparse
import time
from pathlib import Path

import torch

from vgg import data, evaluate, io, models, params


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, type=Path, help="e.g. models/D_256-512.pt (stem = run)")
    parser.add_argument("--protocol", required=True, choices=evaluate.PROTOCOLS)
    parser.add_argument("--test", default="data/prepared/test.pt")
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    crop = params.section(all_params, "model")["crop"]
    settings = params.section(all_params, "evaluate")
    model, record = models.load_model(args.model)
    if model.crop != crop:
        raise io.StageError(f"model.crop: {crop} in {args.params}, but {args.model} has crop {model.crop}")
    if "train_scale" not in record:
        raise io.StageError(f"{args.model}: no train_scale (not a trained model file)")
    stats = io.read_json(args.mean_rgb, "mean RGB file")
    test_set = data.load_split(args.test)
    if len(test_set.classes) > model.classifier[-1].out_features:
        raise io.StageError(f"{args.test}: {len(test_set.classes)} classes, but {args.model} has "
                            f"{model.classifier[-1].out_features} outputs")

    scales = evaluate.test_scales(*record["train_scale"], settings["scale_offset"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    posteriors = evaluate.evaluate_model(model, test_set, scales, args.protocol, stats["mean"], crop,
                                         settings["batch_size"], device, settings["grid"],
                                         settings["num_workers"], settings["bf16"])
    seconds = time.perf_counter() - start
    run = args.model.stem
    io.atomic_save(evaluate.posterior_record(run, model.net, record["train_scale"], args.protocol, posteriors,
                                             test_set.labels), args.out)
    errors = ", ".join(f"Q={q} {evaluate.top1_error(posteriors[q], test_set.labels):.2f}%" for q in scales)
    print(f"evaluate: {run} {args.protocol}: top-1 error {errors}; "
          f"{len(test_set) * len(scales) / seconds:.0f} images/s on {device} -> {args.out}")


if __name__ == "__main__":
    main()
