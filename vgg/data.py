"""Datasets: Fashion-MNIST (the scaled-down default) and ImageFolder trees (ILSVRC-2012).

`prepare` turns either into three stored splits (train, val, test) that every later stage
reads the same way: Fashion-MNIST as uint8 RGB tensors, an ImageFolder tree as verified
file lists decoded on demand. `val` is held out of the training set and drives the
learning-rate plateau rule (§3.1); `test` (Fashion-MNIST's 10k, ILSVRC's val) is what the
tables report.
"""
import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .device import to_device
from .io import StageError

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Files read as images (by Pillow: torchvision 0.29 deprecates its own decoders, decode_image
# included, for TorchCodec); any other file in a class directory (.gif, .txt, ...) is skipped,
# and a class directory left with none is an error (README: full scale).
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp"}
SPLITS = ("train", "val", "test")


def read_idx(path):
    """An IDX file (optionally gzipped) as a uint8 tensor."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        values = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
        return values.reshape(shape)
    except (OSError, EOFError, ValueError, RuntimeError, struct.error) as exc:
        raise StageError(f"{path}: unreadable IDX file ({exc})") from None


def _find_idx(root, name):
    for candidate in (root / f"{name}.gz", root / name, root / "FashionMNIST" / "raw" / name):
        if candidate.exists():
            return candidate
    return None


def load_fashion_mnist(root, download_dir="data/raw"):
    """{'train': (images, labels), 'test': (images, labels)}, images as N x 3 x 28 x 28 uint8.

    Reads the IDX files in `root` (Debian's dataset-fashion-mnist puts them in
    /usr/share/datasets/fashion-mnist); where they are absent, downloads with torchvision.
    """
    root = Path(root)
    if _find_idx(root, FASHION_MNIST_FILES["train"][0]) is None:
        root = _download_fashion_mnist(root, Path(download_dir))
    splits = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        paths = [_find_idx(root, images_name), _find_idx(root, labels_name)]
        missing = [n for n, p in zip((images_name, labels_name), paths) if p is None]
        if missing:
            raise StageError(f"{root / missing[0]}: Fashion-MNIST file missing")
        images, labels = read_idx(paths[0]), read_idx(paths[1]).long()
        if images.ndim != 3 or len(images) != len(labels):
            raise StageError(f"{paths[0]}: {tuple(images.shape)} images for {len(labels)} labels")
        # Grey to RGB so every later stage treats it like ImageNet.
        splits[split] = (images[:, None].expand(-1, 3, -1, -1).contiguous(), labels)
    return splits


def _download_fashion_mnist(root, download_dir):
    from torchvision.datasets import FashionMNIST
    print(f"{root}: no Fashion-MNIST files there; downloading into {download_dir}")
    try:
        for train in (True, False):
            FashionMNIST(download_dir, train=train, download=True)
    except Exception as exc:  # no network, a proxy error, a partial file
        raise StageError(f"{root}: Fashion-MNIST not found and download failed "
                         f"({exc.__class__.__name__}: {exc}); install the Debian package "
                         f"dataset-fashion-mnist or set data.root") from None
    return download_dir / "FashionMNIST" / "raw"


def scan_imagefolder(root, verify=True):
    """{'train': (paths, labels), 'val': (paths, labels)}, classes: an ILSVRC-style tree.

    Classes are the sorted sub-directories of train/; val/ must have the same ones. An
    empty class, a missing directory or (with `verify`) an undecodable image is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"{root}: dataset directory not found")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise StageError(f"{train_dir}: directory not found (expected train/<class>/*.JPEG)")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise StageError(f"{train_dir}: no class directories")
    splits = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise StageError(f"{split_dir}: directory not found (expected {split}/<class>/*.JPEG)")
        found = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        if found != classes:
            extra = sorted(set(found) ^ set(classes))
            raise StageError(f"{split_dir}: classes differ from train/ ({', '.join(extra[:3])})")
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = sorted(str(p.relative_to(root)) for p in (split_dir / name).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise StageError(f"{split_dir / name}: empty class (no images)")
            paths += files
            labels += [label] * len(files)
        if verify:
            for rel in paths:
                verify_image(root / rel)
        splits[split] = (paths, torch.tensor(labels))
    return splits, classes


def manifest(data):
    """Rows (path, bytes, mtime_ns, read|skipped) of every file `prepare` would look at, so that DVC
    re-runs `prepare` when a file of the dataset is added, removed or replaced (`manifest` stage).

    Only sizes and modification times, no hashing: cheap enough to run on every `dvc repro`, even
    for ILSVRC's 1.3M files. Fashion-MNIST lists its four IDX files (none: `prepare` downloads them).
    """
    root = Path(data["root"])
    rows = []
    if data["dataset"] == "fashion_mnist":
        for name in (n for pair in FASHION_MNIST_FILES.values() for n in pair):
            path = _find_idx(root, name)
            if path is not None:
                rows.append((str(path), path.stat().st_size, path.stat().st_mtime_ns, "read"))
        return rows
    if not root.is_dir():
        raise StageError(f"{root}: dataset directory not found (data.root)")
    for split in ("train", "val"):
        for path in sorted((root / split).rglob("*")):
            if path.is_file():
                stat = path.stat()
                kind = "read" if path.suffix.lower() in IMAGE_SUFFIXES else "skipped"
                rows.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns, kind))
    if data["box_dir"]:  # App. A's boxes
        for path in sorted(Path(data["box_dir"]).rglob("*.xml")):
            stat = path.stat()
            rows.append((str(path), stat.st_size, stat.st_mtime_ns, "read"))
    return rows


def read_voc_boxes(path):
    """(class name, (x0, y0, x1, y1) or None where it has no <bndbox>) of every <object> of a VOC /
    ILSVRC annotation XML. Their xmin..xmax are 1-based inclusive pixel indices: here 0-based with
    x1, y1 exclusive, as `tight_boxes`."""
    import xml.etree.ElementTree as ET
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise StageError(f"{path}: unreadable annotation XML ({exc.__class__.__name__})") from None
    objects = []
    for obj in tree.getroot().iter("object"):
        box = obj.find("bndbox")
        if box is None:
            objects.append((obj.findtext("name", "").strip(), None))
            continue
        try:
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise StageError(f"{path}: an <object> whose <bndbox> is not numeric") from None
        objects.append((obj.findtext("name", "").strip(), (x0 - 1, y0 - 1, x1, y1)))
    return objects


def imagefolder_boxes(box_dir, paths):
    """N x 4 boxes of ImageFolder images from ILSVRC-style XMLs: `<box_dir>/<split>/<class>/<stem>.xml`
    where the box tree mirrors the image tree, else any `<box_dir>/**/<stem>.xml` (as the ILSVRC-2012
    bbox archives unpack; their file names are unique); the largest object's box where an image has several, NaN
    where it has none (ILSVRC-2012 boxes about 40% of its training images, all validation images)."""
    box_dir = Path(box_dir)
    index = {p.stem: p for p in box_dir.rglob("*.xml")}
    if not index:
        raise StageError(f"{box_dir}: no .xml box files (data.box_dir)")
    boxes = torch.full((len(paths), 4), float("nan"))
    for i, rel in enumerate(paths):
        mirrored = (box_dir / rel).with_suffix(".xml")  # a box tree laid out like the image tree
        xml = mirrored if mirrored.is_file() else index.get(Path(rel).stem)
        if xml is not None:
            found = [box for _, box in read_voc_boxes(xml) if box is not None]
            if found:
                boxes[i] = torch.tensor(max(found, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])))
    return boxes


def verify_image(path):
    try:
        with Image.open(path) as im:
            im.convert("RGB").load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise StageError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None


def split_validation(n, val_size, seed):
    """Indices (train, val): `val_size` images held out of `n`, chosen by `seed`."""
    if val_size >= n:
        raise StageError(f"data.val_size: {val_size} leaves no training images (train has {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def limit(labels, count, seed):
    """Sorted indices of a seeded, class-stratified subset of `count` images (0 = all): the tiny
    subsets tests and smoke runs use. Classes take turns, so every class is in it (an ImageFolder
    list is sorted by class: its first N images would hold only the first classes)."""
    n = len(labels)
    if count == 0 or count >= n:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rank = torch.empty(n, dtype=torch.long)  # each image's place among its class in `order`
    for c in labels.unique():
        members = order[labels[order] == c]
        rank[members] = torch.arange(len(members))
    # Round-robin over classes: all first images of a class, then all second ones, ...
    turns = rank[order] * n + torch.arange(n)
    return order[turns.argsort()[:count]].sort().values


def scale_objects(images, object_scale, seed, canvas=None, spread=1.0):
    """Scale-varied copies of N x 3 x H x W uint8 images on `canvas` x `canvas` px (default H), and
    each object's tight box.

    Each image is resized to a side of `factor` x `canvas` px, `factor` drawn log-uniformly from
    `object_scale` ([min, max]), and pasted at a random position on a black canvas, so objects appear
    at many scales and places, as ILSVRC's do (what scale jittering, §3.1, and multi-scale testing,
    §4.2, exploit). A canvas larger than the image stores garments at up to their native 28 px while
    the net at S=256 sees the canvas shrunk to 32 px: as with ILSVRC's ~400-px photos, a larger S
    then shows more of each object's detail, not only a larger picture of it.
    Boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive: the tight box of each derived image's
    non-zero pixels (Fashion-MNIST's background is exactly 0). Same numbers on every machine for a seed.
    `spread` is the share of the free space the object's position ranges over, centred: 1 = anywhere
    on the canvas, 0 = always in the middle (photographers centre their subject; ILSVRC's objects are
    near the image centre far more often than near its edges).
    """
    n, channels, height, width = images.shape
    canvas = height if canvas is None else canvas
    g = torch.Generator().manual_seed(seed)
    lo, hi = (math.log(v) for v in object_scale)
    factor = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64))
    size = (factor * canvas).round().long().clamp(1, canvas)
    u_top, u_left = torch.rand(2, n, generator=g, dtype=torch.float64)
    free = canvas - size
    top = ((free - spread * free) / 2 + u_top * (spread * free + 1)).long().clamp(max=free)
    left = ((free - spread * free) / 2 + u_left * (spread * free + 1)).long().clamp(max=free)
    out = torch.zeros(n, channels, canvas, canvas, dtype=images.dtype)
    for s in size.unique().tolist():
        members = (size == s).nonzero().flatten()
        if s == height == width:  # the image as it is (plain Fashion-MNIST at canvas 28)
            resized = images[members]
        else:  # antialiased when shrinking; plain bilinear when enlarging
            resized = F.interpolate(images[members].float(), size=(s, s), mode="bilinear", align_corners=False,
                                    antialias=True).round().clamp(0, 255).to(torch.uint8)
        for j, i in enumerate(members.tolist()):
            out[i, :, top[i]:top[i] + s, left[i]:left[i] + s] = resized[j]
    return out, tight_boxes(out)


def tight_boxes(images):
    """(x0, y0, x1, y1) of the non-zero pixels of each of N x C x H x W images (x1, y1 exclusive);
    the whole image where nothing is non-zero."""
    mask = images.amax(1) > 0
    h, w = mask.shape[-2:]
    rows, cols = mask.any(2), mask.any(1)
    boxes = []
    for r, c in zip(rows, cols):
        ys, xs = r.nonzero().flatten(), c.nonzero().flatten()
        boxes.append([int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1] if len(xs) else [0, 0, w, h])
    return torch.tensor(boxes, dtype=torch.long).reshape(-1, 4)


def prepare(data):
    """The three stored splits from the validated `data` params section."""
    if data["dataset"] == "fashion_mnist":
        raw = load_fashion_mnist(data["root"])
        store = {}
        for offset, (split, (images, labels)) in enumerate(raw.items()):
            # Derived before any subset is taken, so a smoke run sees the full run's images.
            images, boxes = scale_objects(images, data["object_scale"], data["seed"] * 1000 + offset,
                                          data["canvas"], data["object_spread"])
            store[split] = {"kind": "tensor", "images": images, "labels": labels, "boxes": boxes}
        classes, source = list(FASHION_MNIST_CLASSES), "Fashion-MNIST"
        lo, hi = data["object_scale"]
        if (lo, hi) != (1, 1):
            source += f", objects shrunk {lo}-{hi}x (log-uniform) at random positions"
    else:
        raw, classes = scan_imagefolder(data["root"], data["verify_images"])
        root = str(Path(data["root"]).resolve())
        store = {("test" if split == "val" else split):
                 {"kind": "files", "root": root, "paths": paths, "labels": labels}
                 for split, (paths, labels) in raw.items()}
        source = f"ImageFolder {root}"
        if data["box_dir"]:  # App. A: localisation boxes
            for split in store.values():
                split["boxes"] = imagefolder_boxes(data["box_dir"], split["paths"])
            source += f", boxes from {data['box_dir']}"
    store["train"] = subset(store["train"], limit(store["train"]["labels"], data["train_limit"], data["seed"]))
    store["test"] = subset(store["test"], limit(store["test"]["labels"], data["test_limit"], data["seed"] + 1))
    train_idx, val_idx = split_validation(len(store["train"]["labels"]), data["val_size"], data["seed"])
    store["val"] = subset(store["train"], val_idx)
    store["train"] = subset(store["train"], train_idx)
    for split in SPLITS:
        store[split]["classes"] = classes
    meta = {"source": source, "classes": classes,
            "sizes": {split: len(store[split]["labels"]) for split in SPLITS}}
    return store, meta


def subset(split, indices):
    out = dict(split)
    out["labels"] = split["labels"][indices]
    if "boxes" in split:
        out["boxes"] = split["boxes"][indices]
    if split["kind"] == "tensor":
        out["images"] = split["images"][indices]
    else:
        out["paths"] = [split["paths"][i] for i in indices.tolist()]
    return out


class ImageSet(Dataset):
    """A stored split: `image(i)` is a uint8 3 x H x W tensor, `labels[i]` its class."""

    def __init__(self, split):
        self.split = split
        self.labels = split["labels"]
        self.classes = split["classes"]

    def __len__(self):
        return len(self.labels)

    def image(self, i):
        if self.split["kind"] == "tensor":
            return self.split["images"][i]
        path = Path(self.split["root"]) / self.split["paths"][i]
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise StageError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)

    def __getitem__(self, i):
        return self.image(i), int(self.labels[i])

    def images_on(self, device):
        """An in-memory split's uint8 images on `device`, copied there once (CUDA: 0.24 GB for
        the default's 25k 56-px images) so that batches are gathered and augmented where they train."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.split["images"]
        if getattr(self, "_copy", (None, None))[0] != device:
            self._copy = (device, self.split["images"].to(device))
        return self._copy[1]


class Transformed(Dataset):
    """`base` with a per-item transform; keys may be (index, seed) pairs for seeded augmentation.

    In-memory splits are augmented a whole batch at a time on the training device (`batch`);
    files are decoded and transformed one by one (`__getitem__`, in DataLoader workers)."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform
        self.in_memory = base.split["kind"] == "tensor"

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.base.image(index)
        out = self.transform(image) if seed is None else self.transform(image, seed)
        return out, int(self.base.labels[index])

    def batches(self, keys, device):
        """(images, labels) per batch of (index, seed) keys, gathered and augmented together on `device`."""
        for _, images, draws, labels in gathered_batches(self.base, self.transform, keys, device, on_device=True):
            yield self.transform.batch(images, draws=draws), labels


def gathered_batches(base, transform, keys, device, on_device=False):
    """Per batch of (index, seed) keys of an in-memory split: (indices, its uint8 images on `device`,
    their draws, their labels). The draws of all batches come from one vectorised call: per batch,
    the hash and its dozen small tensor operations would cost a tenth of a small net's step on a
    2-core CPU. `on_device`: the draws and labels are copied to `device` once for all batches (on a
    GPU each per-batch copy would stall the host, vgg.device.to_device); else they stay on the CPU."""
    images = base.images_on(device)
    flat = [key for batch in keys for key in batch]
    if not flat:
        return
    draws = transform.draws([seed for _, seed in flat], *images.shape[-2:])
    indices = torch.tensor([index for index, _ in flat])
    labels = base.labels[indices]
    if on_device:
        draws, labels = tuple(to_device(d, device) for d in draws), to_device(labels, device)
    indices_there = to_device(indices, device)
    start = 0
    for batch in keys:
        stop = start + len(batch)
        yield (indices[start:stop], images.index_select(0, indices_there[start:stop]),
               tuple(d[start:stop] for d in draws), labels[start:stop])
        start = stop


def load_split(path):
    from .io import load
    return ImageSet(load(path, "prepared split"))


def rgb_statistics(dataset, max_images=0):
    """Mean RGB and the eigen-decomposition of the RGB covariance over training pixels (§2.1).

    Pixel values are in [0, 255]; the eigenvectors are the columns of `eigvec`, as
    AlexNet's PCA colour augmentation uses them.
    """
    n = len(dataset) if max_images == 0 else min(len(dataset), max_images)
    if n == 0:
        raise StageError("mean_rgb: the training split is empty")
    total = torch.zeros(3, dtype=torch.float64)
    outer = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    # Evenly spaced images when capped, so the estimate covers every class.
    indices = torch.linspace(0, len(dataset) - 1, n).round().long().tolist()
    if dataset.split["kind"] == "tensor":
        chunks = [dataset.split["images"][torch.tensor(indices[i:i + 4096])] for i in range(0, n, 4096)]
    else:
        chunks = (dataset.image(i)[None] for i in indices)
    for chunk in chunks:
        pixels = chunk.permute(1, 0, 2, 3).reshape(3, -1).double()
        total += pixels.sum(1)
        outer += pixels @ pixels.T
        count += pixels.shape[1]
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    eigval, eigvec = torch.linalg.eigh(cov)
    eigval = eigval.clamp(min=0).flip(0)
    eigvec = eigvec.flip(1)
    return {"mean": mean.tolist(), "eigval": eigval.tolist(), "eigvec": eigvec.tolist(),
            "images": n, "pixels": count}
