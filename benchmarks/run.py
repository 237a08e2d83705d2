"""Benchmarks (not tests): every figure is a ratio of two timings taken in this one run.

    python -m benchmarks.run            # CPU, about 3-5 minutes on 2 cores
    python -m benchmarks.run --device cuda   # adds bf16 autocast + channels_last

1. training-step throughput of our A, B, D, E against torchvision's vgg11/13/16/19 (full width,
   same input size, batch and threads);
2. the whole training loop (data pipeline + step) against the step alone, at the default params;
3. achieved FLOP/s of a training step against the measured matrix-multiply peak;
4. dense against 150-crop evaluation cost per test image.
"""
import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from vgg import data, evaluate, io, models, params, train
from vgg.transforms import TrainTransform

TORCHVISION = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_seconds(model, x, y, device, repeats, amp=False):
    """Median wall time of one SGD step (forward, backward, update) on a fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_against_torchvision(device, batch, size, repeats, amp=False, channels_last=False):
    print(f"\n1. training step, full width, input {size}, batch {batch}, {torch.get_num_threads()} threads, "
          f"{device}{', bf16 + channels_last' if amp else ''}")
    print(f"   {'net':4} {'ours img/s':>11} {'torchvision img/s':>18} {'ratio':>6}")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000, (batch,), device=device)
    for net, name in TORCHVISION.items():
        ours = models.build_model(net).to(device, memory_format=memory_format)
        theirs = getattr(torchvision.models, name)(weights=None).to(device, memory_format=memory_format)
        # Alternate the two so a drift of the machine's speed hits both alike.
        t_ours, t_theirs = [], []
        for _ in range(2):
            t_ours.append(step_seconds(ours, x, y, device, repeats, amp))
            t_theirs.append(step_seconds(theirs, x, y, device, repeats, amp))
        a, b = batch / min(t_ours), batch / min(t_theirs)
        print(f"   {net:4} {a:11.1f} {b:18.1f} {a / b:6.2f}")
        del ours, theirs


def matmul_peak(device, n=2048, repeats=10):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def default_setup(params_path):
    all_params = params.load_params(params_path)
    model_params = params.section(all_params, "model")
    hp = params.schedule(all_params, "jitter")
    stats = io.read_json("data/mean_rgb.json", "mean RGB file (run `dvc repro mean_rgb` first)")
    train_set = data.load_split("data/prepared/train.pt")
    crop = model_params["crop"]
    transform = TrainTransform(crop, params.pixels(hp["scale_min"], crop), params.pixels(hp["scale_max"], crop),
                               stats["mean"], stats["eigval"], stats["eigvec"], hp["colour_shift_std"], hp["flip"])
    return all_params, model_params, hp, stats, train_set, transform


def bench_pipeline_and_flops(params_path, net, steps, device):
    all_params, model_params, hp, stats, train_set, transform = default_setup(params_path)
    model = models.build_model(net, **params.model_kwargs(model_params, hp["dropout"])).to(device)
    optimizer = train.make_optimizer(model, 1e-3, hp["momentum"], hp["weight_decay"])
    batch = hp["batch_size"]
    batches = train.epoch_batches(len(train_set), batch, hp["seed"], 0)[:steps]
    keys = [[(i, train.sample_seed(0, 0, i)) for i in b] for b in batches]
    loader = DataLoader(data.Transformed(train_set, transform), batch_sampler=keys,
                        num_workers=hp["num_workers"], generator=torch.Generator())

    def one_step(images, labels):
        loss = F.cross_entropy(model(images.to(device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    images, labels = next(iter(loader))
    one_step(images, labels)  # warm-up
    sync(device)
    start = time.perf_counter()
    for images, labels in loader:
        one_step(images, labels)
    sync(device)
    loop = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        one_step(images, labels)
    sync(device)
    step_only = time.perf_counter() - start
    n = steps * batch
    print(f"\n2. training loop at the default params (net {net}, batch {batch}, crop {model_params['crop']}, "
          f"jittered S, {hp['num_workers']} loader workers, {steps} steps)")
    print(f"   loop (data + step) {n / loop:.0f} img/s, step alone {n / step_only:.0f} img/s: "
          f"data pipeline costs {100 * (loop - step_only) / loop:.1f}% of the loop")
    # §3: forward + backward is about 3 forward passes' worth of multiply-adds.
    flops = 3 * models.flops_per_image(model, model_params["crop"]) * n / step_only
    peak = matmul_peak(device)
    print(f"\n3. achieved {flops / 1e9:.1f} GFLOP/s in the training step (net {net}, default width) vs "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s: {flops / peak:.2f} of peak")
    full = models.build_model(net).to(device)
    x = torch.randn(8, 3, 224, 224, device=device)
    t = step_seconds(full, x, torch.randint(0, 1000, (8,), device=device), device, 2)
    full_flops = 3 * models.flops_per_image(full, 224) * 8 / t
    print(f"   full scale (net {net}, 224, batch 8): {full_flops / 1e9:.1f} GFLOP/s: {full_flops / peak:.2f} of peak")
    return all_params, model_params, stats


def bench_evaluation(params_path, net, images, device):
    all_params = params.load_params(params_path)
    model_params = params.section(all_params, "model")
    settings = params.section(all_params, "evaluate")
    stats = io.read_json("data/mean_rgb.json", "mean RGB file")
    split = data.subset(io.load("data/prepared/test.pt"), torch.arange(images))
    test_set = data.ImageSet(split)
    model = models.build_model(net, **params.model_kwargs(model_params))
    scales = evaluate.test_scales(256, 512)["multi"]
    timings = {}
    for protocol in ("dense", "multi-crop"):
        start = time.perf_counter()
        evaluate.evaluate_model(model, test_set, scales, protocol, stats["mean"], model_params["crop"],
                                settings["batch_size"], device, settings["grid"])
        timings[protocol] = (time.perf_counter() - start) / images
    print(f"\n4. evaluation per test image over Q = {scales} (net {net}, default width, {images} images): "
          f"dense {1e3 * timings['dense']:.2f} ms, 150-crop {1e3 * timings['multi-crop']:.2f} ms: "
          f"multi-crop costs {timings['multi-crop'] / timings['dense']:.1f}x dense")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--net", default="D", help="net for benchmarks 2-4")
    parser.add_argument("--batch", type=int, default=4, help="batch of benchmark 1 (full width, 224)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="training steps of benchmark 2")
    parser.add_argument("--eval-images", type=int, default=200)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    start = time.perf_counter()
    bench_against_torchvision(device, args.batch, 224, args.repeats)
    if device.type == "cuda":
        bench_against_torchvision(device, args.batch, 224, args.repeats, amp=True, channels_last=True)
    bench_pipeline_and_flops(args.params, args.net, args.steps, device)
    bench_evaluation(args.params, args.net, args.eval_images, device)
    print(f"\nbenchmarks took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
