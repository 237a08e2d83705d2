"""Test-time protocols (§3.2, §4.1-4.3): dense and multi-crop evaluation at several scales Q.

Both return soft-max class posteriors, one float32 row per test image, so that scales, protocols
and nets can be combined later by averaging posteriors (§4.2-4.4). Scales are in the paper's
units (for a 224 crop) everywhere except inside `dense_evaluate` and `multi_crop_evaluate`,
which take pixels.
"""
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .device import autocast
from .io import StageError, load
from .transforms import pixels, rescale

# §3.2 and §4.3; fusion adds their average (Table 5). "centre": one centre crop per image, no flip,
# as §4.1 scores B against B-5x5.
PROTOCOLS = ("dense", "multi-crop", "centre")
RECORD_KEYS = ("run", "net", "train_scale", "protocol", "scales", "posteriors", "labels")
# Dense evaluation holds images of other sizes back while it fills a batch of one size; this many
# batches' worth at most, so memory stays bounded on ImageFolder sets with many aspect ratios.
MAX_PENDING_BATCHES = 4


def test_scales(scale_min, scale_max, offset):
    """The three test scales Q (paper units) of §4.2 for a net trained at S in [scale_min, scale_max]:
    {S - 32, S, S + 32} for fixed S, {Smin, 0.5 (Smin + Smax), Smax} for jittered S. The middle one
    is §4.1's single scale (Q = S, or 0.5 (Smin + Smax)), which Table 3 reads from the same file.
    """
    middle = (scale_min + scale_max) // 2
    if scale_min == scale_max:
        return [middle - offset, middle, middle + offset]
    return [scale_min, middle, scale_max]


def crop_positions(height, width, crop, grid):
    """(top, left) of grid x grid crops on a regular grid: the corners and, for odd grid, the centre."""
    def steps(extent):
        if grid == 1:
            return [extent // 2]
        # Floor division puts the middle step exactly at extent // 2, as centre_crop does.
        return [i * extent // (grid - 1) for i in range(grid)]
    if height < crop or width < crop:
        raise ValueError(f"image {height}x{width} is smaller than the crop {crop}")
    return [(top, left) for top in steps(height - crop) for left in steps(width - crop)]


def _test_images(dataset, scale, mean, device, num_workers):
    """(index, image) in dataset order: rescaled so the smallest side is `scale`, mean RGB subtracted."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    # batch_size=None: one uint8 image at a time; workers only decode (ImageFolder JPEGs).
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    for index, (image, _) in enumerate(loader):
        yield index, rescale(image.to(device, non_blocking=True), scale) - mean


def _in_memory(dataset):
    """The uint8 N x 3 x H x W tensor of an in-memory split (vgg.data.ImageSet), else None."""
    split = getattr(dataset, "split", None)
    return split["images"] if isinstance(split, dict) and split.get("kind") == "tensor" else None


def _test_batches(dataset, scale, mean, device, per_step):
    """(indices, N x 3 x h x w batch) of an in-memory split, `per_step` consecutive images at a time:
    `_test_images`' images, rescaled a batch at a time (bilinear resampling is per image and channel,
    so each image is the same to the bit: tests/test_evaluate.py), without a Python step per image
    (a dense evaluation of D, 10,000 images at 3 Q: 14.5 → 12.9 s, Intel Xeon with AMX, bf16)."""
    images = _in_memory(dataset)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    for start in range(0, len(images), per_step):
        stop = min(start + per_step, len(images))
        yield list(range(start, stop)), rescale(images[start:stop].to(device, non_blocking=True), scale) - mean


def _item_image(images, i):
    if hasattr(images, "image"):  # vgg.data.ImageSet: labels may be multi-hot rows
        return images.image(i)
    item = images[i]
    return item[0] if isinstance(item, tuple) else item


def equal_shape_batches(images, per_step):
    """(indices, uint8 batch) of at most `per_step` images of one shape, every image once (in-memory
    tensors in order; files grouped by shape, so callers place results by index).

    A tensor is cut into consecutive batches; a dataset of files of many sizes is grouped by shape
    as `vgg.evaluate.dense_evaluate` does, holding back a bounded number of images.
    """
    if isinstance(images, torch.Tensor):
        for start in range(0, len(images), per_step):
            yield list(range(start, min(start + per_step, len(images)))), images[start:start + per_step]
        return
    pending = {}
    for i in range(len(images)):
        image = _item_image(images, i)
        group = pending.setdefault(tuple(image.shape), [])
        group.append((i, image))
        if len(group) == per_step:
            shape = tuple(image.shape)
        elif sum(map(len, pending.values())) > MAX_PENDING_BATCHES * per_step:
            shape = max(pending, key=lambda s: len(pending[s]))
        else:
            continue
        indices, batch = zip(*pending.pop(shape))
        yield list(indices), torch.stack(batch)
    for group in pending.values():
        indices, batch = zip(*group)
        yield list(indices), torch.stack(batch)


def centre_on_pooling_grid(x, stride):
    """Drop from the top and left half the rows and columns that do not fill a `stride`-pixel
    pooling cell, so the score map's cells sit centred on the image.

    Floor-mode max-pooling ignores the last H mod stride rows and W mod stride columns; without
    this they would all come off the bottom and right. At the default (crop 28, stride 4) every Q
    is a multiple of the stride and nothing is dropped. It is not a no-op at full scale: the
    smallest side is Q, a multiple of 32, but the long side of a non-square ILSVRC image rarely is,
    so up to 15 px come off its left or top (and up to 16 off the other end, as pooling drops them).
    """
    top = (x.shape[-2] % stride) // 2
    left = (x.shape[-1] % stride) // 2
    return x[..., top:, left:]


def _prepare(model, device):
    # channels_last: oneDNN (CPU) and cuDNN (GPU) convolutions run faster in that layout.
    return model.eval().to(device, memory_format=torch.channels_last)


def _num_classes(model):
    return model.classifier[-1].out_features


@torch.inference_mode()
def dense_evaluate(model, dataset, scale, mean, batch_size, device, num_workers=0, bf16=False):
    """N x C posteriors of the fully convolutional net on whole images rescaled to `scale` pixels (§3.2).

    `batch_size` counts network inputs, each image's horizontal flip included. `bf16`: autocast
    where the device runs it natively (`vgg.device`).
    """
    model = _prepare(model, device)
    out = torch.empty(len(dataset), _num_classes(model))
    per_step = max(1, batch_size // 2)
    pending = {}  # image shape -> [(index, image)]

    def run(indices, images):
        x = centre_on_pooling_grid(images, model.stride)
        x = torch.cat([x, x.flip(-1)]).contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            scores = model.forward_dense(x)
        # §3.2: the class score map is spatially averaged; posteriors of the image and its flip averaged.
        posteriors = F.softmax(scores.float().mean((2, 3)), dim=1)
        n = len(indices)
        out[indices] = ((posteriors[:n] + posteriors[n:]) / 2).cpu()

    if _in_memory(dataset) is not None:  # equal-sized images, in the batches the loop below would make
        for indices, images in _test_batches(dataset, scale, mean, device, per_step):
            run(indices, images)
        return out

    def run_pending(shape):
        indices, images = zip(*pending.pop(shape))
        run(list(indices), torch.stack(images))

    for index, image in _test_images(dataset, scale, mean, device, num_workers):
        shape = tuple(image.shape)
        pending.setdefault(shape, []).append((index, image))
        if len(pending[shape]) == per_step:
            run_pending(shape)
        elif sum(map(len, pending.values())) > MAX_PENDING_BATCHES * per_step:
            run_pending(max(pending, key=lambda s: len(pending[s])))
    for shape in list(pending):
        run_pending(shape)
    return out


def _crops(image, crop, grid, flips=True):
    """The grid x grid crops of one image and, with `flips`, their horizontal flips (§4.3: 50 for grid 5);
    of an N x 3 x H x W batch, N x 50 x 3 x crop x crop, each image's crops in that order."""
    views = torch.stack([image[..., t:t + crop, l:l + crop]
                         for t, l in crop_positions(*image.shape[-2:], crop, grid)], dim=-4)
    return torch.cat([views, views.flip(-1)], dim=-4) if flips else views


@torch.inference_mode()
def multi_crop_evaluate(model, dataset, scale, mean, crop, batch_size, device, grid, num_workers=0,
                        bf16=False, flips=True):
    """N x C posteriors, averaged over grid x grid crops x 2 flips of each image at `scale` pixels (§4.3);
    grid 1 without `flips` is the single centre crop of §4.1.

    `batch_size` counts crops per forward pass; crops of several images share one pass. `bf16` as
    in `dense_evaluate`.
    """
    model = _prepare(model, device)
    out = torch.empty(len(dataset), _num_classes(model))
    per_image = (2 if flips else 1) * grid * grid
    per_step = max(1, batch_size // per_image)
    indices, crops = [], []

    def run(x):
        posteriors = []
        for chunk in x.contiguous(memory_format=torch.channels_last).split(batch_size):
            with autocast(device, bf16):
                posteriors.append(F.softmax(model(chunk).float(), dim=1))
        out[indices] = torch.cat(posteriors).view(len(indices), per_image, -1).mean(1).cpu()
        indices.clear()
        crops.clear()

    if _in_memory(dataset) is not None:  # equal-sized images, in the batches the loop below would make
        for batch_indices, images in _test_batches(dataset, scale, mean, device, per_step):
            indices.extend(batch_indices)
            run(_crops(images, crop, grid, flips).flatten(0, 1))
        return out
    for index, image in _test_images(dataset, scale, mean, device, num_workers):
        indices.append(index)
        crops.append(_crops(image, crop, grid, flips))
        if len(indices) == per_step:
            run(torch.cat(crops))
    if indices:
        run(torch.cat(crops))
    return out


def evaluate_model(model, dataset, scales, protocol, mean, crop, batch_size, device, grid, num_workers=0,
                   bf16=False):
    """{Q: N x C posteriors} at each test scale Q (paper units) under `protocol` (one of PROTOCOLS)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    results = {}
    for q in scales:
        size = pixels(q, crop)
        if protocol == "dense":
            results[q] = dense_evaluate(model, dataset, size, mean, batch_size, device, num_workers, bf16)
        elif protocol == "centre":
            results[q] = multi_crop_evaluate(model, dataset, size, mean, crop, batch_size, device, 1,
                                             num_workers, bf16, flips=False)
        else:
            results[q] = multi_crop_evaluate(model, dataset, size, mean, crop, batch_size, device, grid,
                                             num_workers, bf16)
    return results


def top1_error(posteriors, labels):
    """Top-1 error in percent."""
    return 100.0 * (posteriors.argmax(1) != labels).float().mean().item()


def train_scale_name(scale_min, scale_max):
    """'256' for a fixed S, '256-512' for jittered S (paper units), as in run names and tables."""
    return str(scale_min) if scale_min == scale_max else f"{scale_min}-{scale_max}"


def posterior_record(run, net, train_scale, protocol, posteriors, labels):
    """What a posterior file holds. `train_scale` is (Smin, Smax); `posteriors` is {Q: N x C}."""
    scales = sorted(int(q) for q in posteriors)
    return {
        "run": run,
        "net": net,
        "train_scale": train_scale_name(*train_scale),
        "protocol": protocol,
        "scales": scales,
        "posteriors": {q: posteriors[q].float() for q in scales},
        "labels": torch.as_tensor(labels, dtype=torch.int64),
    }


def load_posteriors(path):
    """A posterior file of the `evaluate` stage, checked against the contract of `posterior_record`."""
    record = load(path, "posterior file")

    def bad(why):
        return StageError(f"{path}: invalid posterior file ({why})")

    if not isinstance(record, dict) or set(record) != set(RECORD_KEYS):
        raise bad(f"expected keys {', '.join(RECORD_KEYS)}")
    for key in ("run", "net", "train_scale"):
        if not isinstance(record[key], str):
            raise bad(f"{key} is not a string")
    if record["protocol"] not in PROTOCOLS:
        raise bad(f"unknown protocol {record['protocol']!r}")
    labels, scales, posteriors = record["labels"], record["scales"], record["posteriors"]
    if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.ndim == 1):
        raise bad("labels is not a 1-D int64 tensor")
    if (not isinstance(scales, list) or not scales or not all(type(q) is int for q in scales)
            or scales != sorted(set(scales))):
        raise bad("scales is not an ascending list of ints")
    if not isinstance(posteriors, dict) or sorted(posteriors) != scales:
        raise bad("posteriors are not keyed by the scales")
    for q, p in posteriors.items():
        if not (isinstance(p, torch.Tensor) and p.dtype == torch.float32 and p.ndim == 2
                and len(p) == len(labels)):
            raise bad(f"posteriors[{q}] is not a float32 tensor of {len(labels)} rows")
    return record
