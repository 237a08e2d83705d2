"""Stage `features`: App. B descriptors of frozen nets (D and E of one seed) on one target set, at every Q,
saved once per net; the target set is built once for all of them.

`--dataset scenes`: the multi-label set (seeded scenes of scikit-learn's digits, or VOC-2007 when
transfer.scenes_dataset says so); `--dataset fewshot`: the few-shot set (plain digits, or
Caltech-101/256 class folders); `garment_scenes` and `garment_fewshot`: the same tasks built from
Fashion-MNIST test garments, the nets' own classes in a new layout. Per Q the file holds each image's
flip-averaged, pooled fc7 descriptor (L2-normalised later, once aggregated over Q, as App. B); the
`transfer` stage forms single-Q, averaged and stacked descriptors and D&E from them without running a
net again.
"""
import argparse
import time
from pathlib import Path

import torch

from vgg import io, models, params, transfer
from vgg.transforms import pixels


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--net-model", required=True, type=Path, nargs="+",
                        help="e.g. models/seed0/D_256-512.pt models/seed0/E_256-512.pt")
    parser.add_argument("--dataset", required=True, choices=transfer.TASKS)
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--out", required=True, type=Path, nargs="+",
                        help="one per --net-model, e.g. features/seed0/scenes/D.pt features/seed0/scenes/E.pt")
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    settings = params.transfer_section(all_params)
    if len(args.out) != len(args.net_model):
        raise io.StageError(f"--out: {len(args.out)} files for {len(args.net_model)} --net-model files")
    nets = [models.load_model(path) for path in args.net_model]  # every net checked before any work
    for path, (_, record) in zip(args.net_model, nets):
        if settings["nets"].get(record["net"]) != path.stem:
            raise io.StageError(f"transfer.nets.{record['net']}: {settings['nets'].get(record['net'])!r}, "
                                f"but --net-model is {path}")
    stats = io.read_json(args.mean_rgb, "mean RGB file")
    fashion_mnist_root = params.section(all_params, "data")["root"]
    # The target set is built once and described by every net.
    images, labels, classes, splits, source = transfer.target_set(args.dataset, settings, fashion_mnist_root)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for path, out, (model, record) in zip(args.net_model, args.out, nets):
        scales = [pixels(q, model.crop) for q in settings["scales"]]
        start = time.perf_counter()
        per_scale = transfer.scale_descriptors(model, images, scales, stats["mean"], settings["batch_size"], device,
                                               settings["bf16"])
        seconds = time.perf_counter() - start
        io.atomic_save(transfer.feature_record(record["net"], path.stem, args.dataset, source, settings["scales"],
                                               scales, per_scale, labels, classes, splits), out)
        print(f"features: {path.stem} on {args.dataset} ({source}): {len(labels)} images x Q={settings['scales']} "
              f"({scales} px) in {seconds:.1f} s on {device} -> {out}")

if __name__ == "__main__":
    main()
