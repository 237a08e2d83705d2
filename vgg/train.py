"""The training loop of §3.1: mini-batch SGD with momentum, weight decay, dropout, and the
learning rate divided by 10 when validation accuracy stops improving.

One loop serves one process or N (torch.distributed, launched by torchrun): the global
batch is split across processes and the loss is scaled so the averaged gradient is the
single-process one (§3.3: multi-GPU training gives the same result as one GPU).
Checkpoints hold everything needed to continue bit-exactly on CPU.
"""
import hashlib
import json
import math
import os
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .device import autocast as mixed_precision
from .io import StageError, atomic_save, load
from .stats import correct_top_k
from .transforms import centre_crop

CHECKPOINT_ENV = "VGG_CHECKPOINT_DIR"
NPROC_ENV = "VGG_NPROC"


# ---------------------------------------------------------------- processes and devices

def init_distributed():
    """(rank, world size, device). Under torchrun: gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def all_reduce_sum(values, device, world):
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------- data order

def epoch_batches(n, batch_size, seed, epoch):
    """The global mini-batches of one epoch: a seeded permutation cut into batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


def sample_seed(seed, epoch, index):
    """Seed of one image's augmentation in one epoch: independent of process and batch."""
    return (seed * 1_000_003 + epoch) * 100_000_007 + index


def shard(batch, rank, world):
    return batch[rank::world]


# ---------------------------------------------------------------- learning-rate schedule

def plateau_step(state, val_top1, lr_factor, patience, max_drops, threshold=0.0):
    """§3.1: divide the lr by 10 when validation accuracy stops improving, at most 3 times.

    "Improving" means beating the best validation top-1 (%) by more than `threshold` points: on a
    few thousand validation images a gain below the sampling noise (binomial s.e. ~0.5 point at 5k
    images and 80%) is no evidence that accuracy still improves.
    """
    state = dict(state)
    if val_top1 > state["best"] + threshold:
        state["best"], state["bad_epochs"] = val_top1, 0
    else:
        state["bad_epochs"] += 1
        if state["bad_epochs"] > patience and state["drops"] < max_drops:
            state["lr"] *= lr_factor
            state["drops"] += 1
            state["bad_epochs"] = 0
    return state


def make_optimizer(model, lr, momentum, weight_decay):
    # Weight decay on weights only, as in the authors' Caffe definitions (bias decay_mult 0).
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return torch.optim.SGD([{"params": weights, "weight_decay": weight_decay},
                            {"params": biases, "weight_decay": 0.0}], lr=lr, momentum=momentum)


# ---------------------------------------------------------------- checkpoints

def checkpoint_path(run):
    return Path(os.environ.get(CHECKPOINT_ENV, ".ckpt")) / run / "last.pt"


def fingerprint(config, *files):
    """Hash of a run's settings and input files: a checkpoint resumes only a run with the same."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def rng_state():
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def try_resume(path, fp, log):
    """The checkpoint at `path` if its fingerprint is `fp`; else None (and say why)."""
    if not path.exists():
        return None
    try:
        ckpt = load(path, "checkpoint")
    except StageError as exc:
        log(f"checkpoint unreadable, starting fresh: {exc}")
        return None
    if ckpt.get("fingerprint") != fp:
        log(f"{path}: checkpoint is of other params or weights; starting fresh")
        return None
    log(f"{path}: resuming at epoch {ckpt['epoch'] + 1}, step {ckpt['step']}")
    return ckpt


# ---------------------------------------------------------------- evaluation during training

@torch.no_grad()
def validate(model, dataset, transform, crop, batch_size, device, rank, world, autocast):
    """Top-1 and top-5 accuracy (%) of centre crops: the plateau rule's signal."""
    model.eval()
    indices = list(range(len(dataset)))[rank::world]
    correct1 = correct5 = 0
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images = torch.stack([centre_crop(transform(dataset.image(i)), crop) for i in chunk]).to(device)
        labels = dataset.labels[chunk].to(device)
        with autocast():
            logits = model(images).float()
        hit1, hit5 = correct_top_k(logits, labels, (1, 5))
        correct1 += hit1.sum().item()
        correct5 += hit5.sum().item()
    c1, c5, n = all_reduce_sum([correct1, correct5, len(indices)], device, world)
    return 100.0 * c1 / n, 100.0 * c5 / n


# ---------------------------------------------------------------- the loop

def train(model, train_set, val_set, val_transform, hp, run, fp, device,
          rank=0, world=1, logger=None, log=print):
    """Train `model` in place with the §3.1 recipe in `hp`; return the per-epoch history.

    `train_set` yields augmented (image, label) for (index, seed) keys; `val_set` is an ImageSet.

    Resumes from the run's checkpoint when its fingerprint `fp` matches; `logger(entry)` is
    called once per epoch (replayed for resumed epochs) on the main process.
    """
    from tqdm import tqdm

    is_main = rank == 0
    cuda = device.type == "cuda"
    autocast = partial(mixed_precision, device, hp["bf16"])
    # channels_last also on CPU: oneDNN convolutions run 1.3-1.5x faster so (benchmarks/run.py).
    memory_format = torch.channels_last if hp["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer(model, hp["lr"], hp["momentum"], hp["weight_decay"])
    plateau = {"best": -1.0, "bad_epochs": 0, "drops": 0, "lr": hp["lr"]}
    start_epoch, start_step, history, running = 0, 0, [], None
    torch.manual_seed(hp["seed"] * 1000 + rank)  # dropout masks

    ckpt_path = checkpoint_path(run)
    ckpt = try_resume(ckpt_path, fp, log if is_main else (lambda _: None))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        plateau, history = ckpt["plateau"], ckpt["history"]
        start_epoch, start_step = ckpt["epoch"], ckpt["step"]
        set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        # A mid-epoch checkpoint carries each process's running sums, so the resumed epoch's
        # train_loss and train_top1 cover all its steps, as in an uninterrupted run.
        running = ckpt.get("running", [None] * world)[rank] if start_step else None
    if logger and is_main:
        for entry in history:
            logger(entry)

    def save(epoch, step, sums=(0, 0.0, 0)):
        """Checkpoint at (epoch, step); `sums` = this process's (seen, loss_sum, correct) so far in the epoch."""
        states, sums_all = [rng_state()], [sums]
        if world > 1:
            states, sums_all = [None] * world, [None] * world
            dist.all_gather_object(states, rng_state())
            dist.all_gather_object(sums_all, sums)
        if is_main:
            atomic_save({"fingerprint": fp, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "plateau": plateau, "epoch": epoch, "step": step, "rng": states,
                         "running": sums_all, "history": history}, ckpt_path)

    batch_size = hp["batch_size"]
    if batch_size % world:
        raise StageError(f"train.batch_size: {batch_size} does not split evenly over {world} processes")
    for epoch in range(start_epoch, hp["epochs"]):
        for group in optimizer.param_groups:
            group["lr"] = plateau["lr"]
        batches = epoch_batches(len(train_set), batch_size, hp["seed"], epoch)
        keys = [[(i, sample_seed(hp["seed"], epoch, i)) for i in shard(b, rank, world)] for b in batches]
        loader = DataLoader(train_set, batch_sampler=keys[start_step:], num_workers=hp["num_workers"],
                            generator=torch.Generator(), pin_memory=cuda,
                            persistent_workers=False)
        model.train()
        seen, loss_sum, correct = running or (0, 0.0, 0)
        running, t0, seen_here = None, time.perf_counter(), 0
        bar = tqdm(loader, desc=f"{run} epoch {epoch + 1}/{hp['epochs']}", unit="batch",
                   initial=start_step, total=len(batches), disable=not is_main or None, leave=False)
        for step, (images, labels) in enumerate(bar, start=start_step):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            global_size = len(batches[step])
            with autocast():
                logits = ddp(images)
                # Sum over the local shard / global batch x world: DDP's gradient average is
                # then exactly the gradient of the mean loss over the global batch.
                loss = F.cross_entropy(logits.float(), labels, reduction="sum") * (world / global_size)
            if not torch.isfinite(loss):
                raise StageError(f"{run}: non-finite loss at epoch {epoch + 1}, step {step + 1} "
                                 f"(lr {plateau['lr']:g}); last good checkpoint kept at {ckpt_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
            seen_here += len(labels)
            loss_sum += loss.item() * global_size / world
            correct += (logits.argmax(1) == labels).sum().item()
            if is_main:
                bar.set_postfix(img_s=f"{seen_here * world / (time.perf_counter() - t0):.0f}")
            if hp["checkpoint_every"] and (step + 1) % hp["checkpoint_every"] == 0 and step + 1 < len(batches):
                save(epoch, step + 1, (seen, loss_sum, correct))
        bar.close()
        elapsed = time.perf_counter() - t0
        seen_all, correct_all, loss_all, seen_here_all = all_reduce_sum([seen, correct, loss_sum, seen_here],
                                                                        device, world)
        val_top1, val_top5 = validate(model, val_set, val_transform, model.crop, batch_size, device,
                                      rank, world, autocast)
        entry = {"epoch": epoch + 1, "lr": plateau["lr"],
                 "train_loss": loss_all / max(seen_all, 1),
                 "train_top1": 100.0 * correct_all / max(seen_all, 1),
                 "val_top1": val_top1, "val_top5": val_top5,
                 "val_top1_err": 100.0 - val_top1, "val_top5_err": 100.0 - val_top5,
                 "images_per_s": seen_here_all / elapsed}  # this invocation's steps only
        history.append(entry)
        plateau = plateau_step(plateau, val_top1, hp["lr_factor"], hp["lr_patience"], hp["max_lr_drops"],
                               hp["lr_threshold"])
        start_step = 0
        save(epoch + 1, 0)
        if is_main:
            log(f"{run} epoch {entry['epoch']}: loss {entry['train_loss']:.4f}, train top-1 "
                f"{entry['train_top1']:.2f}%, val top-1 {val_top1:.2f}% top-5 {val_top5:.2f}%, "
                f"lr {entry['lr']:g}, {entry['images_per_s']:.0f} img/s")
            if logger:
                logger(entry)
    if not math.isfinite(sum(p.detach().float().sum().item() for p in model.parameters())):
        raise StageError(f"{run}: non-finite weights after training")
    return history
