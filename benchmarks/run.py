"""Benchmarks (not tests): every figure is a ratio of two timings taken in this one run.

    python -m benchmarks.run                 # CPU, about 4 minutes on 2 cores
    python -m benchmarks.run --device cuda   # a GPU

1. training-step throughput of our A, B, D, E against torchvision's vgg11/13/16/19 (full width,
   same input size, batch and threads): fp32, and bf16 autocast + channels_last where the device
   runs bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX);
2. the whole training loop (augmented batches + step) against the step alone, at the default
   params (their precision and memory layout), for A and D; and the augmentation alone against the
   same operations as a torchvision.transforms.v2 per-image pipeline in a DataLoader;
3. achieved FLOP/s of that training step against the measured matrix-multiply peak of the same
   precision;
4. dense against 150-crop evaluation cost per test image, at the default params;
5. one real epoch of the training stage for A and D, its wall time by section (batches,
   validation, checkpoint, logging, steps);
6. torch.compile against eager for a 150-crop pass per net, and whether the outputs are equal
   bit for bit (an option the default does not take, docs/benchmarks.md).

`--fp32` runs benchmarks 2, 3 and 5 in fp32 whatever params.yaml says (bf16 is used only where
the device runs it natively, vgg/device.py).
"""
import argparse
import dataclasses
import math
import os
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from vgg import data, device as devices, evaluate, io, models, params, train
from vgg.transforms import TestTransform, TrainTransform, pixels

TORCHVISION = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, work):
    """Seconds of `work()` from an idle device to its last queued kernel's end."""
    sync(device)
    start = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - start


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


def default_setup(params_path, fp32=False):
    all_params = params.load_params(params_path)
    model_params = params.section(all_params, "model")
    hp = params.schedule(all_params, "jitter")
    if fp32:
        hp = dataclasses.replace(hp, bf16=False)
    stats = io.read_json("data/mean_rgb.json", "mean RGB file (run `dvc repro mean_rgb` first)")
    train_set = data.load_split("data/prepared/train.pt")
    crop = model_params["crop"]
    transform = TrainTransform(crop, pixels(hp.scale_min, crop), pixels(hp.scale_max, crop),
                               stats["mean"], stats["eigval"], stats["eigvec"], hp.colour_shift_std, hp.flip)
    return all_params, model_params, hp, stats, train_set, transform


def loop_context(device, hp):
    """The training loop's own device, precision and memory layout (vgg.train.train)."""
    memory_format = torch.channels_last if hp.channels_last else torch.contiguous_format
    bf16 = hp.bf16 and devices.bf16_native(device)
    return train.Context(device, 0, 1, partial(devices.autocast, device, bf16), memory_format, Path(".ckpt")), bf16


def default_step(net, model_params, hp, ctx):
    """(model, one SGD step on a batch) at the default width, precision and layout."""
    model = models.build_model(net, **params.model_kwargs(model_params), dropout=hp.dropout)
    model.to(ctx.device, memory_format=ctx.memory_format)
    optimizer = train.make_optimizer(model, 1e-3, hp.momentum, hp.weight_decay)

    def one_step(images, labels):
        with ctx.autocast():
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, one_step


def epoch_keys(train_set, hp, count):
    batches = train.epoch_batches(len(train_set), hp.batch_size, hp.seed, 0)[:count]
    return [[(i, train.sample_seed(hp.seed, 0, i)) for i in b] for b in batches]


def bench_loop(params_path, nets, steps, device, fp32=False):
    """The training loop (vgg.train.training_batches + step) against the step alone, per net."""
    all_params, model_params, hp, stats, train_set, transform = default_setup(params_path, fp32)
    ctx, bf16 = loop_context(device, hp)
    dataset = data.Transformed(train_set, transform)
    keys = epoch_keys(train_set, hp, steps + 1)
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"\n2. training loop at the default params (batch {hp.batch_size}, crop {model_params['crop']}, "
          f"jittered S, augmentation {'batched on ' + str(device) if dataset.in_memory else 'per image'}, "
          f"{precision}, {'channels_last' if hp.channels_last else 'contiguous'}, {steps} steps)")
    for net in nets:
        _, one_step = default_step(net, model_params, hp, ctx)
        one_step(*next(train.training_batches(ctx, dataset, keys[:1], hp.num_workers)))  # warm-up
        # The loop's batches and its steps timed separately inside one pass, so a drift of the
        # machine's speed between two passes cannot pass for data-pipeline cost.
        data_seconds = compute_seconds = 0.0
        batches = train.training_batches(ctx, dataset, keys[1:], hp.num_workers)
        for _ in range(steps):
            start = time.perf_counter()
            images, labels = next(batches)
            images = images.contiguous(memory_format=ctx.memory_format)
            sync(device)
            mid = time.perf_counter()
            one_step(images, labels)
            sync(device)
            data_seconds += mid - start
            compute_seconds += time.perf_counter() - mid
        n = steps * hp.batch_size
        loop = data_seconds + compute_seconds
        print(f"   net {net}: loop (data + step) {n / loop:.0f} img/s, step alone {n / compute_seconds:.0f} img/s: "
              f"loop / step {compute_seconds / loop:.3f} (data {100 * data_seconds / loop:.1f}% of the loop)")
        # The split above synchronises between data and step, so on a GPU it adds up what the real
        # loop overlaps (the host queues batch i+1 while the device runs step i). Timed whole, as the
        # stage runs it (one synchronisation at the end), against as many steps on one batch;
        # alternated twice, each one's fastest kept. On a CPU, which runs each call to its end, the
        # two measures agree.
        whole_loop = whole_steps = float("inf")
        for _ in range(2):
            whole_loop = min(whole_loop, timed(device, lambda: [
                one_step(x.contiguous(memory_format=ctx.memory_format), y)
                for x, y in train.training_batches(ctx, dataset, keys[1:], hp.num_workers)]))
            whole_steps = min(whole_steps, timed(device, lambda: [one_step(images, labels) for _ in range(steps)]))
        print(f"   net {net}, timed whole: loop {n / whole_loop:.0f} img/s, steps alone {n / whole_steps:.0f} img/s: "
              f"loop / step {whole_steps / whole_loop:.3f}")
    bench_against_torchvision_v2(dataset, transform, hp, keys, steps, ctx)
    return all_params, model_params, hp, ctx, bf16


class TorchvisionV2Augmentation(torch.utils.data.Dataset):
    """§3.1's augmentation as a torchvision.transforms.v2 per-image pipeline, for comparison:
    RandomResize (smallest side S, antialiased), RandomCrop, RandomHorizontalFlip, the PCA colour
    shift (v2 has none: one line here), mean subtraction."""

    def __init__(self, images, labels, transform):
        from torchvision.transforms import v2
        self.images, self.labels = images, labels
        eigval, eigvec = transform.eigval, transform.eigvec
        colour_std = transform.colour_std
        self.pipeline = v2.Compose([
            v2.RandomResize(transform.scale_min, transform.scale_max + 1),
            v2.RandomCrop(transform.crop),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32),
            v2.Lambda(lambda x: x + ((colour_std * torch.randn(3) * eigval / 255.0) @ eigvec.T)[:, None, None]),
            v2.Normalize(transform.mean.tolist(), [1.0, 1.0, 1.0]),
        ])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.pipeline(self.images[index]), int(self.labels[index])


def bench_against_torchvision_v2(dataset, transform, hp, keys, steps, ctx):
    theirs = TorchvisionV2Augmentation(dataset.base.split["images"], dataset.base.labels, transform)
    loader = DataLoader(theirs, batch_sampler=[[i for i, _ in k] for k in keys[1:]], num_workers=hp.num_workers)
    ours_batches = train.training_batches(ctx, dataset, keys[1:], hp.num_workers)
    theirs_batches = iter(loader)
    ours_seconds = theirs_seconds = 0.0
    for _ in range(steps):  # alternated batch by batch, each moved to the training device
        start = time.perf_counter()
        images, _ = next(ours_batches)
        images.contiguous(memory_format=ctx.memory_format)
        sync(ctx.device)
        mid = time.perf_counter()
        images, labels = next(theirs_batches)
        images.to(ctx.device, memory_format=ctx.memory_format)
        sync(ctx.device)
        ours_seconds += mid - start
        theirs_seconds += time.perf_counter() - mid
    n = steps * hp.batch_size
    print(f"   augmentation alone: ours {n / ours_seconds:.0f} img/s, torchvision v2 per image "
          f"({hp.num_workers} loader workers) {n / theirs_seconds:.0f} img/s: ours / v2 "
          f"{theirs_seconds / ours_seconds:.1f}x")


def bench_flops(net, steps, device, full_nets, full_batch, model_params, hp, ctx, bf16):
    """Achieved FLOP/s of the default training step and of full-scale steps, against the matmul peak."""
    _, one_step = default_step(net, model_params, hp, ctx)
    x = torch.randn(hp.batch_size, 3, model_params["crop"], model_params["crop"], device=device)
    x = x.contiguous(memory_format=ctx.memory_format)
    y = torch.randint(0, model_params["num_classes"], (hp.batch_size,), device=device)
    one_step(x, y)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step(x, y)
    sync(device)
    step_only = time.perf_counter() - start
    model = models.build_model(net, **params.model_kwargs(model_params))
    precision = "bf16 autocast" if bf16 else "fp32"
    # §3: forward + backward is about 3 forward passes' worth of multiply-adds.
    flops = 3 * models.flops_per_image(model) * steps * hp.batch_size / step_only
    peak = matmul_peak(device, dtype=torch.bfloat16 if bf16 else torch.float32)
    print(f"\n3. achieved {flops / 1e9:.1f} GFLOP/s in the training step (net {net}, default width, {precision}) "
          f"vs {'bf16' if bf16 else 'fp32'} matmul peak {peak / 1e9:.1f} GFLOP/s: {flops / peak:.2f} of peak")
    # Full width (Table 1), 224 crop: the throughput R that the README's GPU-hours divide by.
    for name in full_nets:
        full = models.build_model(name).to(device, memory_format=ctx.memory_format)
        x = torch.randn(full_batch, 3, 224, 224, device=device).contiguous(memory_format=ctx.memory_format)
        t = step_seconds(full, x, torch.randint(0, 1000, (full_batch,), device=device), device, 3, bf16)
        full_flops = 3 * models.flops_per_image(full) * full_batch / t
        print(f"   full scale (net {name}, 224, batch {full_batch}, {precision}): {full_batch / t:.0f} img/s, "
              f"{full_flops / 1e9:.1f} GFLOP/s: {full_flops / peak:.2f} of peak")
        del full, x


def bench_epoch(params_path, nets, device, fp32=False):
    """One real epoch of vgg.train.train per net (default data and params, 1 epoch), its wall time
    split into timed sections: batches, validation, checkpoint write, DVCLive logging, the rest
    (the SGD steps and the loop's own bookkeeping)."""
    import tempfile
    from stages.train import dvclive_logger
    all_params, model_params, hp, stats, train_set, transform = default_setup(params_path, fp32)
    val_set = data.load_split("data/prepared/val.pt")
    val_transform = TestTransform(pixels((hp.scale_min + hp.scale_max) / 2, model_params["crop"]), stats["mean"])
    hp = dataclasses.replace(hp, epochs=1)
    print(f"\n5. one epoch of the training stage ({len(train_set)} images, jitter schedule, validation on "
          f"{len(val_set)}), wall time by section")
    originals = {name: getattr(train, name) for name in ("training_batches", "validate", "save_checkpoint")}
    for net in nets:
        sections = dict.fromkeys(("batches", "validation", "checkpoint", "logging"), 0.0)

        def timed(name, fn):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    sync(device)
                    sections[name] += time.perf_counter() - start
            return wrapper

        def timed_batches(*args, **kwargs):
            batches = originals["training_batches"](*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                sync(device)
                sections["batches"] += time.perf_counter() - start
                yield batch

        model, _ = default_step(net, model_params, hp, loop_context(device, hp)[0])
        with tempfile.TemporaryDirectory() as tmp:
            previous_dir = os.environ.get(train.CHECKPOINT_ENV)
            os.environ[train.CHECKPOINT_ENV] = tmp
            live, log = dvclive_logger(Path(tmp) / "logs")
            try:
                train.training_batches = timed_batches
                train.validate = timed("validation", originals["validate"])
                train.save_checkpoint = timed("checkpoint", originals["save_checkpoint"])
                start = time.perf_counter()
                train.train(model, data.Transformed(train_set, transform), val_set, val_transform, hp, f"bench_{net}",
                            "bench", device, logger=timed("logging", log), log=lambda _: None)
                total = time.perf_counter() - start
            finally:
                for name, fn in originals.items():
                    setattr(train, name, fn)
                if previous_dir is None:
                    os.environ.pop(train.CHECKPOINT_ENV)
                else:
                    os.environ[train.CHECKPOINT_ENV] = previous_dir
        rest = total - sum(sections.values())
        shares = ", ".join(f"{name} {100 * t / total:.1f}%" for name, t in {**sections, "steps and rest": rest}.items())
        print(f"   net {net}: {total:.1f} s, {len(train_set) / total:.0f} img/s: {shares}")


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


def _median_seconds(fn, device, repeats):
    fn()
    fn()  # the first calls compile (once per shape) and warm allocators
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_compiled(params_path, nets, device, repeats=20):
    """torch.compile (TorchInductor) against eager for one 150-crop pass of evaluate.batch_size crops
    per net, at the default width and precision: the option the default does not take
    (docs/benchmarks.md: about 1.3-2.2x a pass on a 2-core Intel Xeon with AMX, bit-equal outputs,
    but a few seconds' compiling per process and shape ate most of it at the stage level)."""
    all_params = params.load_params(params_path)
    model_params = params.section(all_params, "model")
    settings = params.section(all_params, "evaluate")
    bf16 = settings["bf16"] and devices.bf16_native(device)
    crop = model_params["crop"]
    print(f"\n6. torch.compile against eager, one pass of {settings['batch_size']} crops "
          f"({'bf16 autocast' if bf16 else 'fp32'}, channels_last; median of {repeats}, compiling not counted)")
    for net in nets:
        torch.manual_seed(0)
        model = models.initialise(models.build_model(net, **params.model_kwargs(model_params)), "glorot")
        model = model.eval().to(device, memory_format=torch.channels_last)
        x = (torch.randn(settings["batch_size"], 3, crop, crop, device=device) * 50).contiguous(
            memory_format=torch.channels_last)
        fast = torch.compile(model, dynamic=False)
        with torch.inference_mode(), devices.autocast(device, bf16):
            start = time.perf_counter()
            same = torch.equal(model(x), fast(x))
            first = time.perf_counter() - start
            eager = _median_seconds(lambda: model(x), device, repeats)
            compiled = _median_seconds(lambda: fast(x), device, repeats)
        print(f"   {net}: eager {1e3 * eager:.1f} ms, compiled {1e3 * compiled:.1f} ms: {eager / compiled:.2f}x "
              f"(first call, compiling, {first:.1f} s); outputs {'equal bit for bit' if same else 'NOT bit-equal'}")


INPUTS = ("data/mean_rgb.json", "data/prepared/train.pt", "data/prepared/val.pt", "data/prepared/test.pt")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--net", default="D", help="net for benchmarks 3-4")
    parser.add_argument("--batch", type=int, default=4, help="batch of benchmark 1 (full width, 224)")
    parser.add_argument("--repeats", type=int, default=4, help="alternated steps per net in benchmark 1")
    parser.add_argument("--steps", type=int, default=40, help="training steps of benchmarks 2 and 3")
    parser.add_argument("--fp32", action="store_true", help="benchmarks 2, 3, 5 in fp32")
    parser.add_argument("--loop-nets", default="A,D", help="comma-separated nets of benchmark 2 (loop / step)")
    parser.add_argument("--epoch-nets", default="A,D", help="nets of benchmark 5 (one epoch by section); '' skips it")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--parts", default="1,2,3,4,5,6", help="which benchmarks to run (3 needs 2)")
    parser.add_argument("--compiled-nets", default="A,D,E", help="nets of benchmark 6 (compiled against eager)")
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
    parts = set(args.parts.split(","))
    if "1" in parts:
        bench_against_torchvision(device, args.batch, 224, args.repeats)
        if devices.bf16_native(device):
            bench_against_torchvision(device, args.batch, 224, args.repeats, amp=True, channels_last=True)
    if parts & {"2", "3"}:
        _, model_params, hp, ctx, bf16 = bench_loop(args.params, args.loop_nets.split(","), args.steps, device,
                                                    args.fp32)
    if "3" in parts:
        bench_flops(args.net, args.steps, device, [n for n in args.full_nets.split(",") if n], args.full_batch, model_params, hp,
                    ctx, bf16)
    if "4" in parts:
        bench_evaluation(args.params, args.net, args.eval_images, device)
    if "5" in parts and args.epoch_nets:
        bench_epoch(args.params, args.epoch_nets.split(","), device, args.fp32)
    if "6" in parts:
        bench_compiled(args.params, args.compiled_nets.split(","), device)
    print(f"\nbenchmarks took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
