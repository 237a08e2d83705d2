"""Benchmarks (not tests): every figure is a ratio of two timings taken in this one run.

    python -m benchmarks.run                 # CPU, about 4 minutes on 2 cores
    python -m benchmarks.run --device cuda   # a GPU

1. training-step throughput of our A, B, D, E against torchvision's vgg11/13/16/19 (full width,
   same input size, batch and threads): fp32, and bf16 autocast + channels_last where the device
   runs bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX);
2. the whole training loop (data pipeline + step) against the step alone, at the default params
   (their precision and memory layout);
3. achieved FLOP/s of that training step against the measured matrix-multiply peak of the same
   precision;
4. dense against 150-crop evaluation cost per test image, at the default params.
"""
import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from vgg import data, device as devices, evaluate, io, models, params, train
from vgg.transforms import TrainTransform, pixels

TORCHVISION = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def sgd_step(model, x, y, device, amp=False):
    """A function doing one SGD step (forward, backward, update) on a fixed batch; returns its seconds."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        sync(device)
        start = time.perf_counter()
        with devices.autocast(device, amp):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        return time.perf_counter() - start
    return step


def step_seconds(model, x, y, device, repeats, amp=False):
    """Fastest of `repeats` SGD steps, after one that warms up allocators, kernels and momentum."""
    step = sgd_step(model, x, y, device, amp)
    step()
    return min(step() for _ in range(repeats))


def bench_against_torchvision(device, batch, size, repeats, amp=False, channels_last=False):
    print(f"\n1. training step, full width, input {size}, batch {batch}, {torch.get_num_threads()} threads, "
          f"{device}{', bf16 + channels_last' if amp else ''}")
    print(f"   {'net':4} {'ours img/s':>11} {'torchvision img/s':>18} {'ratio':>6}")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000, (batch,), device=device)
    ratios = []
    for net, name in TORCHVISION.items():
        theirs = getattr(torchvision.models, name)(weights=None).to(device, memory_format=memory_format)
        # Same weights in both (the state dicts match key for key): the same numbers flow through
        # both nets, so neither gains from its init (e.g. tiny activations turning denormal).
        ours = models.build_model(net).to(device, memory_format=memory_format)
        ours.load_state_dict(theirs.state_dict())
        steps = [sgd_step(ours, x, y, device, amp), sgd_step(theirs, x, y, device, amp)]
        for step in steps:  # warm-up: allocators, kernels, momentum buffers
            step()
        # Alternate single steps, so a drift of the machine's speed (other tenants of a VM) hits
        # both alike, and keep each one's fastest: the least disturbed measurement.
        # Which goes first also alternates, so neither always follows the other's memory traffic.
        t_ours, t_theirs = [], []
        for i in range(repeats):
            if i % 2:
                t_theirs.append(steps[1]())
                t_ours.append(steps[0]())
            else:
                t_ours.append(steps[0]())
                t_theirs.append(steps[1]())
        a, b = batch / min(t_ours), batch / min(t_theirs)
        ratios.append(a / b)
        print(f"   {net:4} {a:11.1f} {b:18.1f} {a / b:6.2f}")
        del ours, theirs, steps
    # The nets run the same operations on the same numbers; on a shared VM single ratios scatter
    # by about +-10% from run to run, so the geometric mean is the figure to compare with 1.
    print(f"   geometric mean ratio {math.prod(ratios) ** (1 / len(ratios)):.2f}")


def matmul_peak(device, n=None, repeats=10, dtype=torch.float32):
    n = n or (8192 if device.type == "cuda" else 2048)  # large enough to reach the peak on either
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
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
    transform = TrainTransform(crop, pixels(hp.scale_min, crop), pixels(hp.scale_max, crop),
                               stats["mean"], stats["eigval"], stats["eigvec"], hp.colour_shift_std, hp.flip)
    return all_params, model_params, hp, stats, train_set, transform


def bench_pipeline_and_flops(params_path, net, steps, device, full_nets, full_batch):
    all_params, model_params, hp, stats, train_set, transform = default_setup(params_path)
    # The training loop's own precision and layout (vgg.train.train).
    memory_format = torch.channels_last if hp.channels_last else torch.contiguous_format
    bf16 = hp.bf16 and devices.bf16_native(device)
    model = models.build_model(net, **params.model_kwargs(model_params), dropout=hp.dropout)
    model.to(device, memory_format=memory_format)
    optimizer = train.make_optimizer(model, 1e-3, hp.momentum, hp.weight_decay)
    batch = hp.batch_size
    batches = train.epoch_batches(len(train_set), batch, hp.seed, 0)[:steps]
    keys = [[(i, train.sample_seed(0, 0, i)) for i in b] for b in batches]
    loader = DataLoader(data.Transformed(train_set, transform), batch_sampler=keys,
                        num_workers=hp.num_workers, generator=torch.Generator())

    def one_step(images, labels):
        with devices.autocast(device, bf16):
            loss = F.cross_entropy(model(images.to(device, memory_format=memory_format)).float(), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    images, labels = next(iter(loader))
    one_step(images, labels)  # warm-up
    # Time the loader's batches and the steps separately inside one pass, so a drift of the
    # machine's speed between two separate passes cannot pass for data-pipeline cost.
    data_seconds, compute_seconds = 0.0, 0.0
    batches_iter = iter(loader)
    for _ in range(steps):
        start = time.perf_counter()
        images, labels = next(batches_iter)
        mid = time.perf_counter()
        one_step(images, labels)
        sync(device)
        data_seconds += mid - start
        compute_seconds += time.perf_counter() - mid
    loop, step_only = data_seconds + compute_seconds, compute_seconds
    n = steps * batch
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"\n2. training loop at the default params (net {net}, batch {batch}, crop {model_params['crop']}, "
          f"jittered S, {hp.num_workers} loader workers, {precision}, "
          f"{'channels_last' if hp.channels_last else 'contiguous'}, {steps} steps)")
    print(f"   loop (data + step) {n / loop:.0f} img/s, step alone {n / step_only:.0f} img/s: "
          f"data pipeline costs {100 * (loop - step_only) / loop:.1f}% of the loop")
    # §3: forward + backward is about 3 forward passes' worth of multiply-adds.
    flops = 3 * models.flops_per_image(model) * n / step_only
    peak = matmul_peak(device, dtype=torch.bfloat16 if bf16 else torch.float32)
    print(f"\n3. achieved {flops / 1e9:.1f} GFLOP/s in that training step (net {net}, default width, {precision}) "
          f"vs {'bf16' if bf16 else 'fp32'} matmul peak {peak / 1e9:.1f} GFLOP/s: {flops / peak:.2f} of peak")
    # Full width (Table 1), 224 crop: the throughput R that the README's GPU-hours divide by.
    for name in full_nets:
        full = models.build_model(name).to(device, memory_format=memory_format)
        x = torch.randn(full_batch, 3, 224, 224, device=device).contiguous(memory_format=memory_format)
        t = step_seconds(full, x, torch.randint(0, 1000, (full_batch,), device=device), device, 3, bf16)
        full_flops = 3 * models.flops_per_image(full) * full_batch / t
        print(f"   full scale (net {name}, 224, batch {full_batch}, {precision}): {full_batch / t:.0f} img/s, "
              f"{full_flops / 1e9:.1f} GFLOP/s: {full_flops / peak:.2f} of peak")
        del full, x
    return all_params, model_params, stats


def bench_evaluation(params_path, net, images, device):
    all_params = params.load_params(params_path)
    model_params = params.section(all_params, "model")
    settings = params.section(all_params, "evaluate")
    stats = io.read_json("data/mean_rgb.json", "mean RGB file")
    split = data.subset(io.load("data/prepared/test.pt"), torch.arange(images))
    test_set = data.ImageSet(split)
    model = models.build_model(net, **params.model_kwargs(model_params))
    scales = evaluate.test_scales(256, 512, 32)
    timings = {}
    for protocol in ("dense", "multi-crop"):
        start = time.perf_counter()
        evaluate.evaluate_model(model, test_set, scales, protocol, stats["mean"], model_params["crop"],
                                settings["batch_size"], device, settings["grid"], bf16=settings["bf16"])
        timings[protocol] = (time.perf_counter() - start) / images
    precision = "bf16 autocast" if settings["bf16"] and devices.bf16_native(device) else "fp32"
    print(f"\n4. evaluation per test image over Q = {scales} (net {net}, default width, {precision}, "
          f"{images} images): "
          f"dense {1e3 * timings['dense']:.2f} ms, 150-crop {1e3 * timings['multi-crop']:.2f} ms: "
          f"multi-crop costs {timings['multi-crop'] / timings['dense']:.1f}x dense")


INPUTS = ("data/mean_rgb.json", "data/prepared/train.pt", "data/prepared/test.pt")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--net", default="D", help="net for benchmarks 2-4")
    parser.add_argument("--batch", type=int, default=4, help="batch of benchmark 1 (full width, 224)")
    parser.add_argument("--repeats", type=int, default=4, help="alternated steps per net in benchmark 1")
    parser.add_argument("--steps", type=int, default=20, help="training steps of benchmark 2")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--full-nets", default="D", help="comma-separated nets of benchmark 3's full-scale step")
    parser.add_argument("--full-batch", type=int, default=8, help="batch of benchmark 3's full-scale step (64 on a GPU)")
    args = parser.parse_args()
    # Benchmarks 2-3 read pipeline outputs: fail at once, not after minutes of benchmark 1.
    for path in INPUTS:
        if not Path(path).is_file():
            raise SystemExit(f"error: {path}: not found; run `dvc repro mean_rgb` first (`make bench` does)")
    device = torch.device(args.device)
    torch.manual_seed(0)
    start = time.perf_counter()
    bench_against_torchvision(device, args.batch, 224, args.repeats)
    if devices.bf16_native(device):
        bench_against_torchvision(device, args.batch, 224, args.repeats, amp=True, channels_last=True)
    bench_pipeline_and_flops(args.params, args.net, args.steps, device, args.full_nets.split(","), args.full_batch)
    bench_evaluation(args.params, args.net, args.eval_images, device)
    print(f"\nbenchmarks took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
