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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .device import autocast as mixed_precision, to_device
from .io import StageError, atomic_save, load
from .stats import correct_top_k
from .transforms import centre_crop, rescaled_size

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

def plateau_step(state, val_top1, lr_factor, patience, max_drops, threshold):
    """§3.1: divide the lr by 10 when validation accuracy stops improving, at most 3 times; stop
    at the plateau after the last drop (state["stopped"]).

    "Improving" means beating the best validation top-1 (%) by more than `threshold` points: on a
    few thousand validation images a gain below the sampling noise (binomial s.e. ~0.5 point at 5k
    images and 80%) is no evidence that accuracy still improves.

    Hand-written, not torch's ReduceLROnPlateau: that has the same test (mode max, abs threshold,
    patience) but no cap on the number of drops; min_lr = lr * 0.1**3 emulates the cap only up to
    float rounding (1.0000000000000003e-05 against three drops' 1e-05), so runs would not be
    bit-identical to this rule's.
    """
    state = dict(state)
    if val_top1 > state["best"] + threshold:
        state["best"], state["bad_epochs"] = val_top1, 0
    else:
        state["bad_epochs"] += 1
        if state["bad_epochs"] > patience:
            if state["drops"] < max_drops:
                state["lr"] *= lr_factor
                state["drops"] += 1
                state["bad_epochs"] = 0
            else:
                # §3.1: "the learning rate was decreased 3 times, and the learning was stopped": a
                # plateau after the last drop ends the run (the epoch cap is only a bound).
                state["stopped"] = True
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

@dataclass(frozen=True)
class Task:
    """What a run learns: its summed loss over a batch, its per-item 0/1 hits (top-1, top-5) that the
    curves and the plateau rule count, and the validation targets of dataset items at a scale."""
    loss: object  # (outputs, targets) -> loss summed over the batch
    hits: object  # (outputs, targets) -> (hit1, hit5), on validation
    train_hits: object  # (outputs, targets) -> hit1, on training batches
    val_targets: object  # (dataset, indices, scale px, crop) -> targets


# §3.1: multinomial logistic regression; the tables' top-1 and top-5 classification accuracy.
CLASSIFICATION = Task(
    loss=lambda logits, labels: F.cross_entropy(logits.float(), labels, reduction="sum"),
    hits=lambda logits, labels: correct_top_k(logits, labels, (1, 5)),
    train_hits=lambda logits, labels: logits.argmax(1) == labels,
    val_targets=lambda dataset, indices, scale, crop: dataset.labels[indices])


def validation_crops(dataset, chunk, transform, crop, device):
    """Centre crops of the rescaled images `chunk` on `device`: an in-memory split's rescaled as one
    batch there, files decoded one by one."""
    if dataset.split["kind"] == "tensor":
        return centre_crop(transform(dataset.images_on(device)[to_device(torch.tensor(chunk), device)]), crop)
    return torch.stack([centre_crop(transform(dataset.image(i)), crop) for i in chunk]).to(device)


def validation_batches(dataset, transform, crop, batch_size, device, rank, world, task):
    """(centre crops, targets) on `device` of this process's share of `dataset`, `batch_size` at a time."""
    indices = list(range(len(dataset)))[rank::world]
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        # Copies that do not stall the host (vgg.device.to_device): on a GPU the chunks queue up.
        yield (validation_crops(dataset, chunk, transform, crop, device),
               to_device(task.val_targets(dataset, chunk, transform.scale, crop), device))


# Validation inputs kept on the device across epochs up to this size (a crop is a view of its rescaled
# image: the default's 5,000 validation images at 48 px, S=384, take 138 MB); larger sets, and image
# files, are formed again at every epoch.
VALIDATION_CACHE_BYTES = 2 ** 30


class ValidationInputs:
    """What `validate` scores at the end of every epoch: the same centre crops and targets each time,
    so an in-memory split's are formed once per run and kept on the device. Forming them was a
    sixth of a localisation epoch (PCR-fc_384: 0.47 of 3.0 s, the rescale and the box targets;
    cProfile, 2026-12-04) and the rescale about 0.17 s of every classification epoch at S=384."""

    def __init__(self, dataset, transform, crop, batch_size, device, rank=0, world=1, task=CLASSIFICATION):
        self.count = len(range(rank, len(dataset), world))
        self._args = (dataset, transform, crop, batch_size, device, rank, world, task)
        self._keep = False
        if dataset.split["kind"] == "tensor":  # one size for all: the rescaled float images kept
            h, w = rescaled_size(*dataset.split["images"].shape[-2:], transform.scale)
            self._keep = self.count * 3 * h * w * 4 <= VALIDATION_CACHE_BYTES
        self._kept = None

    def __iter__(self):
        if not self._keep:
            return validation_batches(*self._args)
        if self._kept is None:
            self._kept = list(validation_batches(*self._args))
        return iter(self._kept)


@torch.no_grad()
def validate(model, inputs, device, world, autocast, task=CLASSIFICATION):
    """Top-1 and top-5 accuracy (%) of the centre crops of `inputs` (ValidationInputs): the plateau
    rule's signal."""
    model.eval()
    correct1 = correct5 = 0
    for images, labels in inputs:
        with autocast():
            logits = model(images).float()
        hit1, hit5 = task.hits(logits, labels)
        correct1 += hit1.sum()
        correct5 += hit5.sum()
    c1, c5, n = all_reduce_sum([int(correct1), int(correct5), inputs.count], device, world)
    return 100.0 * c1 / n, 100.0 * c5 / n


# ---------------------------------------------------------------- the loop

@dataclass
class Progress:
    """Where a run stands, besides weights and optimiser state: all a checkpoint needs to go on."""
    plateau: dict
    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the current epoch
    history: list = field(default_factory=list)  # one entry per finished epoch
    sums: tuple = (0, 0.0, 0)  # this process's (images, loss sum, correct) so far in the epoch


@dataclass(frozen=True)
class Context:
    """How a run executes: device, processes and numerics (none of it changes the maths)."""
    device: torch.device
    rank: int
    world: int
    autocast: object  # () -> context manager: bf16 autocast where native, else a no-op
    memory_format: torch.memory_format
    checkpoint: Path
    task: Task = CLASSIFICATION

    @property
    def is_main(self):
        return self.rank == 0


def save_checkpoint(ctx, model, optimizer, progress, fp):
    """Atomically write weights, optimiser, progress and every process's RNG state and sums."""
    states, sums = [rng_state()], [progress.sums]
    if ctx.world > 1:
        states, sums = [None] * ctx.world, [None] * ctx.world
        dist.all_gather_object(states, rng_state())
        dist.all_gather_object(sums, progress.sums)
    if ctx.is_main:
        atomic_save({"fingerprint": fp, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "plateau": progress.plateau, "epoch": progress.epoch, "step": progress.step,
                     "rng": states, "running": sums, "history": progress.history}, ctx.checkpoint)


def resume(ctx, model, optimizer, lr, fp, log):
    """The run's progress: from its checkpoint when the fingerprint matches, else from the start."""
    progress = Progress(plateau={"best": -1.0, "bad_epochs": 0, "drops": 0, "lr": lr})
    ckpt = try_resume(ctx.checkpoint, fp, log if ctx.is_main else (lambda _: None))
    if ckpt is None:
        return progress
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"][ctx.rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
    # A mid-epoch checkpoint carries each process's running sums, so the resumed epoch's
    # train_loss and train_top1 cover all its steps, as in an uninterrupted run.
    sums = tuple(ckpt["running"][ctx.rank]) if ckpt["step"] and "running" in ckpt else (0, 0.0, 0)
    return Progress(ckpt["plateau"], ckpt["epoch"], ckpt["step"], ckpt["history"], sums)


def training_batches(ctx, train_set, keys, num_workers):
    """The epoch's augmented batches on the training device, from the per-batch (index, seed) keys.

    In-memory data (the default): gathered and augmented as whole batches on the device itself,
    no loader, no per-image tuples. Image files (ImageFolder): decoded and augmented one by one
    in DataLoader workers, the only place where images of different sizes can be handled apart."""
    if train_set.in_memory:
        yield from train_set.batches(keys, ctx.device)
        return
    loader = DataLoader(train_set, batch_sampler=keys, num_workers=num_workers, generator=torch.Generator(),
                        pin_memory=ctx.device.type == "cuda")
    for images, targets in loader:
        yield images.to(ctx.device, non_blocking=True), targets.to(ctx.device, non_blocking=True)


class RunningSums:
    """An epoch's training loss and hits, summed on the device: reading them at every step
    (`.item()`) would make the host wait for a GPU's step before it could queue the next."""

    def __init__(self, sums, device):
        self.device = device
        self.reset(sums)

    def reset(self, sums):
        """Start from plain (images, loss sum, correct), e.g. a checkpoint's."""
        device = self.device
        self.seen, self.base_loss, self.base_correct = sums
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first non-finite step

    def add(self, step, loss, hits, size, weight):
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)
        self.loss += loss.detach().double() * weight
        self.correct += hits.sum()
        self.seen += size

    def read(self):
        """(images, loss sum, correct) as plain numbers, and the first non-finite step or None."""
        bad = int(self.first_bad)
        return (self.seen, self.base_loss + float(self.loss), self.base_correct + int(self.correct)), \
            (None if bad < 0 else bad)


def train_one_epoch(ctx, model, ddp, optimizer, train_set, hp, progress, run, fp):
    """The SGD steps of epoch `progress.epoch` from step `progress.step`; returns the images this
    call processed on this process and its seconds (for the throughput curve)."""
    from tqdm import tqdm

    epoch, world = progress.epoch, ctx.world
    batches = epoch_batches(len(train_set), hp.batch_size, hp.seed, epoch)
    keys = [[(i, sample_seed(hp.seed, epoch, i)) for i in shard(b, ctx.rank, world)] for b in batches]
    model.train()
    sums = RunningSums(progress.sums, ctx.device)

    def settle(step):
        """Move the device's sums into `progress`; stop at a non-finite loss before any checkpoint
        is written, so the last one on disk is the last good one."""
        progress.sums, bad = sums.read()
        if bad is not None:
            raise StageError(f"{run}: non-finite loss at epoch {epoch + 1}, step {bad + 1} "
                             f"(lr {progress.plateau['lr']:g}); last good checkpoint kept at {ctx.checkpoint}")
        progress.step = step
        sums.reset(progress.sums)

    seen_here, t0 = 0, time.perf_counter()
    bar = tqdm(training_batches(ctx, train_set, keys[progress.step:], hp.num_workers),
               desc=f"{run} epoch {epoch + 1}/{hp.epochs}", unit="batch", initial=progress.step,
               total=len(batches), disable=not ctx.is_main or None, leave=False)
    for step, (images, targets) in enumerate(bar, start=progress.step):
        images = images.contiguous(memory_format=ctx.memory_format)
        global_size = len(batches[step])
        with ctx.autocast():
            logits = ddp(images)
            # Sum over the local shard / global batch x world: DDP's gradient average is
            # then exactly the gradient of the mean loss over the global batch.
            loss = ctx.task.loss(logits, targets) * (world / global_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums.add(step, loss, ctx.task.train_hits(logits.detach(), targets), len(targets), global_size / world)
        seen_here += len(targets)
        if ctx.is_main:
            bar.set_postfix(img_s=f"{seen_here * world / (time.perf_counter() - t0):.0f}")
        if hp.checkpoint_every and (step + 1) % hp.checkpoint_every == 0 and step + 1 < len(batches):
            settle(step + 1)
            save_checkpoint(ctx, model, optimizer, progress, fp)
    settle(len(batches))
    bar.close()
    return seen_here, time.perf_counter() - t0


def end_epoch(ctx, model, val_inputs, hp, progress, seen_here, seconds):
    """Validate, append the epoch's entry to the history and apply the plateau rule (§3.1)."""
    seen, loss_sum, correct = progress.sums
    seen, correct, loss_sum, seen_here = all_reduce_sum([seen, correct, loss_sum, seen_here], ctx.device, ctx.world)
    val_top1, val_top5 = validate(model, val_inputs, ctx.device, ctx.world, ctx.autocast, ctx.task)
    entry = {"epoch": progress.epoch + 1, "lr": progress.plateau["lr"],
             "train_loss": loss_sum / max(seen, 1), "train_top1": 100.0 * correct / max(seen, 1),
             "val_top1": val_top1, "val_top5": val_top5,
             "val_top1_err": 100.0 - val_top1, "val_top5_err": 100.0 - val_top5,
             "images_per_s": seen_here / seconds}  # this invocation's steps only
    progress.history.append(entry)
    progress.plateau = plateau_step(progress.plateau, val_top1, hp.lr_factor, hp.lr_patience,
                                    hp.max_lr_drops, hp.lr_threshold)
    entry["plateau_stop"] = bool(progress.plateau.get("stopped"))
    progress.epoch, progress.step, progress.sums = progress.epoch + 1, 0, (0, 0.0, 0)
    return entry


def train(model, train_set, val_set, val_transform, hp, run, fp, device,
          rank=0, world=1, logger=None, log=print, task=CLASSIFICATION):
    """Train `model` in place with the §3.1 recipe of the Schedule `hp`; return the per-epoch history.

    `train_set` yields augmented (image, label) for (index, seed) keys; `val_set` is an ImageSet.
    Resumes from the run's checkpoint when its fingerprint `fp` matches; `logger(entry)` is
    called once per epoch (replayed for resumed epochs) on the main process.
    """
    if hp.batch_size % world:
        raise StageError(f"train.batch_size: {hp.batch_size} does not split evenly over {world} processes")
    # channels_last also on CPU: oneDNN convolutions run 1.3-1.5x faster so (benchmarks/run.py).
    ctx = Context(device, rank, world, partial(mixed_precision, device, hp.bf16),
                  torch.channels_last if hp.channels_last else torch.contiguous_format, checkpoint_path(run), task)
    model.to(device, memory_format=ctx.memory_format)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer(model, hp.lr, hp.momentum, hp.weight_decay)
    torch.manual_seed(hp.seed * 1000 + rank)  # dropout masks
    progress = resume(ctx, model, optimizer, hp.lr, fp, log)
    val_inputs = ValidationInputs(val_set, val_transform, model.crop, hp.batch_size, device, rank, world, task)
    if logger and ctx.is_main:
        for entry in progress.history:
            logger(entry)
    while progress.epoch < hp.epochs and not progress.plateau.get("stopped"):
        for group in optimizer.param_groups:
            group["lr"] = progress.plateau["lr"]
        seen_here, seconds = train_one_epoch(ctx, model, ddp, optimizer, train_set, hp, progress, run, fp)
        entry = end_epoch(ctx, model, val_inputs, hp, progress, seen_here, seconds)
        save_checkpoint(ctx, model, optimizer, progress, fp)
        if ctx.is_main:
            log(f"{run} epoch {entry['epoch']}: loss {entry['train_loss']:.4f}, train top-1 "
                f"{entry['train_top1']:.2f}%, val top-1 {entry['val_top1']:.2f}% top-5 {entry['val_top5']:.2f}%, "
                f"lr {entry['lr']:g}, {entry['images_per_s']:.0f} img/s")
            if logger:
                logger(entry)
    if not math.isfinite(sum(p.detach().float().sum().item() for p in model.parameters())):
        raise StageError(f"{run}: non-finite weights after training")
    if ctx.is_main:
        log(f"{run}: stopped after {progress.epoch} epochs, " + (
            f"on the plateau after {progress.plateau['drops']} lr drop(s)" if progress.plateau.get("stopped")
            else f"at the epoch cap ({hp.epochs}), validation still improving or drops left"))
    return progress.history


def stopped_by(history):
    """'plateau' when the plateau rule ended the run, else 'epoch cap' (reported beside every run)."""
    return "plateau" if history and history[-1].get("plateau_stop") else "epoch cap"
