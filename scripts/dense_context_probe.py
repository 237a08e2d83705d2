"""Why dense evaluation (§3.2) of a fine-tuned net at Q > crop can be far worse than its crops.

Dense evaluation differs from evaluating the same windows as crops in two ways, and this probe
separates them on one split (the validation split by default; the claims use the test split):

- context: a cell of the dense score map sees the whole image through its receptive field
  (`vgg.models.receptive_field`: 4 crops for D at crop 28, 1.8 at 224), a crop sees zero padding
  beyond its border, as every training crop did;
- aggregation: §3.2 averages the class scores over the map, then takes the soft-max; averaging the
  per-cell posteriors is the other reading (Table 1 ends each net with a soft-max layer).

For each model and Q it reports top-1 error (%) of four evaluations of the same h x w windows,
each with its horizontal flip: dense scores-averaged (the pipeline's `dense_evaluate`), dense
posteriors-averaged, the windows as separate crops with scores averaged, and with posteriors averaged.

    python -m scripts.dense_context_probe --models models/seed0/D_384.pt models/seed0/E_256-512.pt --out /tmp/probe.md
"""
import argparse
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from vgg import data, evaluate, io, models, params
from vgg.device import autocast
from vgg.report import markdown
from vgg.transforms import pixels, rescale

VARIANTS = ("dense, scores averaged (§3.2)", "dense, posteriors averaged", "crops, scores averaged",
            "crops, posteriors averaged")


@torch.inference_mode()
def window_posteriors(model, images, size, mean, bf16, batch=100):
    """{variant: N x C posteriors} of `model` on uint8 `images` rescaled to `size` px (VARIANTS)."""
    model = model.eval().to(memory_format=torch.channels_last)
    stride, crop = model.stride, model.crop
    mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    outputs = {v: [] for v in VARIANTS}
    for start in range(0, len(images), batch):
        x = torch.stack([rescale(image, size) - mean for image in images[start:start + batch]])
        x = evaluate.centre_on_pooling_grid(x, stride)
        x = torch.cat([x, x.flip(-1)]).contiguous(memory_format=torch.channels_last)
        with autocast("cpu", bf16):
            scores = model.forward_dense(x).float()
        rows, cols = scores.shape[-2:]
        crops = []
        for i in range(rows):
            for j in range(cols):
                window = x[..., i * stride:i * stride + crop, j * stride:j * stride + crop]
                with autocast("cpu", bf16):
                    crops.append(model(window.contiguous(memory_format=torch.channels_last)).float())
        crops = torch.stack(crops)  # cells x 2B x C
        found = (F.softmax(scores.mean((2, 3)), 1), F.softmax(scores, 1).mean((2, 3)),
                 F.softmax(crops.mean(0), 1), F.softmax(crops, 2).mean(0))
        n = len(x) // 2
        for variant, posteriors in zip(VARIANTS, found):
            outputs[variant].append((posteriors[:n] + posteriors[n:]) / 2)
    return {v: torch.cat(p) for v, p in outputs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models", nargs="+", required=True, type=Path)
    parser.add_argument("--split", default="data/prepared/val.pt")
    parser.add_argument("--mean-rgb", default="data/mean_rgb.json")
    parser.add_argument("--q", type=int, nargs="*", help="test scales (paper units); default: each model's "
                                                          "single-scale Q (§4.1)")
    parser.add_argument("--out", type=Path, help="markdown table; else printed")
    args = parser.parse_args(argv)
    settings = params.section(params.load_params(args.params), "evaluate")
    split = data.load_split(args.split)
    images = [split.image(i) for i in range(len(split))]
    mean = io.read_json(args.mean_rgb, "mean RGB file")["mean"]
    records = []
    for path in args.models:
        model, record = models.load_model(path)
        qs = args.q or [evaluate.test_scales(*record["train_scale"], settings["scale_offset"])[1]]
        for q in qs:
            size = pixels(q, model.crop)
            found = window_posteriors(model, images, size, mean, settings["bf16"])
            records.append({"model": path.stem, "Q": q, "px": size,
                            **{v: round(evaluate.top1_error(p, split.labels), 2) for v, p in found.items()}})
            print(records[-1], flush=True)
    page = markdown(pd.DataFrame(records))
    if args.out:
        io.atomic_write_text(page + "\n", args.out)
    else:
        print(page)


if __name__ == "__main__":
    main()
