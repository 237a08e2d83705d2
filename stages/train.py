"""Stage `train`: one net, one schedule of §3.1 (from scratch, from init weights, or fine-tuning).

Runs on one process, or on N under torchrun (`VGG_NPROC=N` re-launches it so).
"""
import argparse
import dataclasses
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch

from vgg import data, io, models, params, train
from vgg.transforms import TestTransform, TrainTransform, pixels

CURVES = ("train_loss", "train_top1", "val_top1", "val_top5", "val_top1_err", "val_top5_err", "lr",
          "images_per_s")


def relaunch_under_torchrun(argv):
    nproc = int(os.environ.get(train.NPROC_ENV, "1"))
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "stages.train", *argv]
        os.execv(sys.executable, cmd)


def dvclive_logger(directory):
    from dvclive import Live
    live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(entry):
        for key in CURVES:
            live.log_metric(key, entry[key])
        live.next_step()
    return live, log


@io.stage_main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--net", required=True)
    parser.add_argument("--schedule", default="train", help="params section: train, finetune or jitter")
    parser.add_argument("--init", help="model file to start from; omitted = random init (params `init`)")
    parser.add_argument("--seed", type=int, default=0, help="training replicate (params `seeds`): offsets "
                        "train.seed and init.seed by vgg.params.SEED_STRIDE x seed")
    parser.add_argument("--data", default="data/prepared", type=Path)
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--live-dir", required=True, type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    net = params.check_net(args.net)
    model_params = params.section(all_params, "model")
    init_params = params.section(all_params, "init")
    hp = params.schedule(all_params, args.schedule)
    if args.seed < 0:
        raise io.StageError(f"--seed: {args.seed} must be >= 0")
    # A replicate differs from another in what a re-run varies: initial weights, data order,
    # augmentation draws, dropout masks; never in the data split or the test set.
    hp = dataclasses.replace(hp, seed=params.replicate_seed(hp.seed, args.seed))
    init_params = {**init_params, "seed": params.replicate_seed(init_params["seed"], args.seed)}
    relaunch_under_torchrun(argv)

    stats = io.read_json(args.mean_rgb, "mean RGB file")
    train_set = data.load_split(args.data / "train.pt")
    val_set = data.load_split(args.data / "val.pt")
    if model_params["num_classes"] < len(train_set.classes):
        raise io.StageError(f"model.num_classes: {model_params['num_classes']} < "
                            f"{len(train_set.classes)} classes in {args.data}")
    kwargs = {**params.model_kwargs(model_params), "dropout": hp.dropout}
    if args.init:
        start, _ = models.load_model(args.init, net)
        model = models.build_model(net, **kwargs)
        model.load_state_dict(start.state_dict())
    else:
        model = models.build_model(net, **kwargs)
        models.initialise(model, init_params["scheme"], init_params["std"],
                          torch.Generator().manual_seed(init_params["seed"]))

    crop = model_params["crop"]
    smin, smax = pixels(hp.scale_min, crop), pixels(hp.scale_max, crop)
    train_transform = TrainTransform(crop, smin, smax, stats["mean"], stats["eigval"], stats["eigvec"],
                                     hp.colour_shift_std, hp.flip)
    # Validation at Q = S (fixed S) or 0.5 (Smin + Smax) (jittered), as in §4.1.
    val_transform = TestTransform(pixels((hp.scale_min + hp.scale_max) / 2, crop), stats["mean"])
    settings = {"net": net, "schedule": args.schedule, "hp": dataclasses.asdict(hp), "model": kwargs,
                "init": init_params, "init_file": args.init, "replicate": args.seed}
    inputs = [args.data / "train.pt", args.data / "val.pt", args.mean_rgb] + ([args.init] if args.init else [])
    fit_and_save(model, data.Transformed(train_set, train_transform), val_set, val_transform, hp, settings,
                 inputs, args.out, args.live_dir, kwargs, init_file=args.init)


def fit_and_save(model, train_set, val_set, val_transform, hp, settings, inputs, out, live_dir, kwargs,
                 task=train.CLASSIFICATION, **record):
    """Train (resuming when the checkpoint matches `settings` and `inputs`), then save the model
    record to `out` and move the finished DVCLive logs to `live_dir`."""
    fp = train.fingerprint(settings, *inputs)
    rank, world, device = train.init_distributed()
    # "seed1/D_384" for a replicate's model (models/seed1/D_384.pt), "seed1/loc/PCR-all_384" for its
    # localisation net (models/seed1/loc/PCR-all_384.pt), else the file's stem: replicates of one net
    # keep their own checkpoints (.ckpt/<run>/).
    out = Path(out)
    parts = out.with_suffix("").parts
    first = next((i for i, part in enumerate(parts) if re.fullmatch(r"seed\d+", part)), None)
    run = "/".join(parts[first:]) if first is not None else out.stem
    # DVCLive clears its directory when it starts: it writes beside --live-dir and the finished
    # logs replace the old ones only once the model is saved, so a killed or failed run leaves the
    # previous logs/<run>/ as it was (a resumed run replays its history into the new directory).
    live_tmp = None
    if rank == 0:
        for stale in live_dir.parent.glob(f".{live_dir.name}.*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        live_tmp = io.temp_dir_beside(live_dir)
    try:
        live, logger = dvclive_logger(live_tmp) if rank == 0 else (None, None)
        if rank == 0:
            print(f"train: {run}: {settings['net']}, schedule {settings['schedule']}, "
                  f"S {hp.scale_min}-{hp.scale_max}, {world} process(es) on {device}")
        start = time.perf_counter()
        try:
            history = train.train(model, train_set, val_set, val_transform, hp, run, fp, device, rank, world,
                                  logger, task=task)
        except io.Interrupted as exc:
            exc.detail = (f"{run}: {out} not written, {live_dir}/ left as it was; a re-run resumes from "
                          f"{train.checkpoint_path(run)} where it exists")
            raise
        if rank == 0:
            # Wall time of this invocation (a resumed run counts only its own part).
            seconds = time.perf_counter() - start
            live.summary["wall_seconds"] = round(seconds, 1)
            live.summary["stopped_by"] = train.stopped_by(history)
            live.end()
            # No timings in the model file (they are in the logs): equal weights give equal bytes,
            # so a re-run that trains the same net leaves the evaluations downstream up to date.
            history_without_timing = [{k: v for k, v in entry.items() if k != "images_per_s"} for entry in history]
            saved = models.model_record(model.cpu(), kwargs, schedule=settings["schedule"], train_scale=
                                        (hp.scale_min, hp.scale_max), params=settings,
                                        history=history_without_timing, device=str(device), processes=world,
                                        **record)
            io.atomic_save(saved, out)
            io.replace_dir(live_tmp, live_dir)
    finally:
        if live_tmp is not None:
            shutil.rmtree(live_tmp, ignore_errors=True)
    if rank == 0:
        last = history[-1]
        print(f"train: {run}: val top-1 error {last['val_top1_err']:.2f}%, top-5 {last['val_top5_err']:.2f}% "
              f"after {last['epoch']} epochs in {seconds:.0f} s -> {out}")


if __name__ == "__main__":
    main()
