"""Appendix A: object localisation with the very deep nets.

A localisation net is net D whose last FC layer predicts a bounding box instead of class scores
(App. A.1): 4 numbers (centre x, centre y, width, height, as fractions of the crop) shared by all
classes (single-class regression, SCR) or 4 per class (per-class regression, PCR). It starts
from the classification net trained at the same S and is trained with a Euclidean loss on the box
of the ground-truth class, fine-tuning all layers or only fc6-fc8 (as OverFeat does).

Testing (App. A.2): Table 8 scores the ground-truth class's box predicted on the centre crop;
Table 9 applies the net densely to the whole image (FC layers as convolutions, one box per
location and class), merges close boxes greedily (OverFeat) and ranks them by the classification
net's class scores. Boxes are (x0, y0, x1, y1) pixels unless named `cxcywh`.
"""
import copy

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from .data import gathered_batches
from .device import autocast, to_device
from .evaluate import centre_on_pooling_grid, equal_shape_batches
from .models import receptive_field
from .transforms import rescaled_size

REGRESSIONS = ("SCR", "PCR")
LAYERS = ("fc", "all")


# ---------------------------------------------------------------- nets (App. A.1)

def localisation_net(classifier, regression, num_classes, std, generator):
    """A copy of a trained classification VGG whose last FC layer regresses boxes: 4 outputs (SCR)
    or 4 per class (PCR), drawn from N(0, std) with zero bias; every other weight is kept."""
    if regression not in REGRESSIONS:
        raise ValueError(f"regression {regression!r} (choose {', '.join(REGRESSIONS)})")
    model = copy.deepcopy(classifier)
    fc8 = model.classifier[6]
    outputs = 4 if regression == "SCR" else 4 * num_classes
    model.classifier[6] = nn.Linear(fc8.in_features, outputs)
    with torch.no_grad():
        model.classifier[6].weight.normal_(0, std, generator=generator)
        model.classifier[6].bias.zero_()
    return model


def freeze_for(model, layers):
    """`fc`: only fc6, fc7 and the box layer learn (OverFeat's choice); `all`: every layer does."""
    if layers not in LAYERS:
        raise ValueError(f"layers {layers!r} (choose {', '.join(LAYERS)})")
    for p in model.features.parameters():
        p.requires_grad_(layers == "all")
    return model


def class_boxes(outputs, classes, regression):
    """The predicted box (N x 4 cxcywh) of each item's class: the one box for SCR, the class's for PCR."""
    if regression == "SCR":
        return outputs
    return outputs.view(len(outputs), -1, 4)[torch.arange(len(outputs)), classes]


def box_loss(outputs, targets, regression):
    """§A.1: Euclidean loss between predicted and true box parameters, summed over the batch.
    `targets` rows: class, cx, cy, w, h (fractions of the crop)."""
    pred = class_boxes(outputs.float(), targets[:, 0].long(), regression)
    return ((pred - targets[:, 1:]) ** 2).sum()


def box_hits(outputs, targets, regression, threshold):
    """Per item 1 where the true class's box overlaps the true box by IoU > `threshold` (§A.2), else 0;
    returned twice (top-1 and top-5 slots of the training loop: one box per crop)."""
    pred = box_convert(class_boxes(outputs.float(), targets[:, 0].long(), regression), "cxcywh", "xyxy")
    true = box_convert(targets[:, 1:].float(), "cxcywh", "xyxy")
    hit = (paired_iou(pred, true) > threshold).long()
    return hit, hit


def paired_iou(a, b):
    """IoU of a[i] with b[i] (N x 4 each, xyxy); 0 where a box is empty or inverted."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(1)
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


# ---------------------------------------------------------------- boxes through the transforms

def boxes_to_crop(boxes, height, width, sizes, top, left, flip, crop):
    """Boxes of H x W images (N x 4 xyxy px) in the coordinates of their crops: each image rescaled
    to its (h, w) in `sizes` (N x 2), cropped at (top, left), flipped where `flip`.

    Not clipped to the crop: as in OverFeat, which App. A follows, each window regresses the whole
    object's box, also where it extends past the window; that is what lets the boxes of many windows
    be merged into one (Table 9). A clipped target teaches a window to see only its own part."""
    boxes = boxes.double()
    sy, sx = sizes[:, 0].double() / height, sizes[:, 1].double() / width
    x0, y0, x1, y1 = boxes.unbind(1)
    x0, x1 = x0 * sx - left, x1 * sx - left
    y0, y1 = y0 * sy - top, y1 * sy - top
    x0, x1 = torch.where(flip, crop - x1, x0), torch.where(flip, crop - x0, x1)
    return torch.stack([x0, y0, x1, y1], 1)


def crops_meeting_boxes(boxes, height, width, sizes, top, left, crop):
    """(top, left) moved as little as needed for each crop to hold at least a pixel of its object: a
    crop that misses the object has no box to regress (App. A.1 trains on windows of the object), so
    it is moved, not redrawn, to the nearest position that overlaps the box (integer steps, inside the
    image): one draw per image, the crop distribution changed only for the misses."""
    boxes = boxes.double()
    sy, sx = sizes[:, 0].double() / height, sizes[:, 1].double() / width
    x0, y0, x1, y1 = boxes[:, 0] * sx, boxes[:, 1] * sy, boxes[:, 2] * sx, boxes[:, 3] * sy

    def move(start, lo, hi, extent):
        # At least a pixel of overlap: start <= hi - 1 and start + crop >= lo + 1, else the nearest
        # start that has it (a sliver of the object is no more a window of it than none).
        start = torch.where(start + crop < lo + 1, torch.ceil(lo + 1).long() - crop, start)
        start = torch.where(start > hi - 1, torch.floor(hi - 1).long(), start)
        return torch.minimum(start.clamp(min=0), extent - crop)

    return move(top, y0, y1, sizes[:, 0]), move(left, x0, x1, sizes[:, 1])


def boxes_from_crop(boxes, height, width, size, top, left):
    """The inverse for unflipped crops: crop-coordinate boxes back to the H x W image."""
    h, w = size
    boxes = boxes.double()
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + left) * width / w, (y0 + top) * height / h,
                        (x1 + left) * width / w, (y1 + top) * height / h], -1)


def centre_crop_offsets(height, width, scale, crop):
    """(rescaled (h, w), top, left) of the centre crop of an H x W image rescaled to `scale` px."""
    h, w = rescaled_size(height, width, scale)
    return (h, w), (h - crop) // 2, (w - crop) // 2


def centre_crop_targets(dataset, indices, scale, crop):
    """Rows (class, cx, cy, w, h as fractions of the crop) of the true boxes in the centre crops at
    `scale` px, not clipped: the validation targets of a localisation run. A rescale and a shift
    change no IoU, so a predicted box's IoU with this target is its IoU with the image's box once
    mapped back: validation scores exactly what Table 8 scores.

    All items in one `boxes_to_crop` call (elementwise, so each row is what a call of its own gives,
    bit for bit; tests/test_localisation.py): per item it was 0.3 of the 0.8 s that validating
    PCR-fc_384 took every epoch (cProfile, 5,000 images, 2026-12-04)."""
    indices = list(indices)
    image_sizes = [image_size(dataset, i) for i in indices]
    offsets = [centre_crop_offsets(height, width, scale, crop) for height, width in image_sizes]
    heights, widths = torch.tensor(image_sizes, dtype=torch.double).view(-1, 2).unbind(1)
    sizes = torch.tensor([size for size, _, _ in offsets], dtype=torch.long).view(-1, 2)
    tops = torch.tensor([top for _, top, _ in offsets], dtype=torch.long)
    lefts = torch.tensor([left for _, _, left in offsets], dtype=torch.long)
    boxes = boxes_to_crop(dataset.split["boxes"][indices], heights, widths, sizes, tops, lefts,
                          torch.zeros(len(indices), dtype=torch.bool), crop)
    return targets_of(dataset.labels[indices], boxes, crop)


def with_boxes(dataset):
    """The items of an ImageSet that have a true box (ILSVRC boxes only part of its training set);
    an error naming the cure when the split has no boxes at all."""
    from .data import ImageSet, subset
    if "boxes" not in dataset.split:
        raise ValueError("no boxes (Fashion-MNIST has them; an ImageFolder tree needs data.box_dir)")
    keep = torch.isfinite(dataset.split["boxes"]).all(1).nonzero().flatten()
    return dataset if len(keep) == len(dataset) else ImageSet(subset(dataset.split, keep))


def image_size(dataset, i):
    """(H, W) of item i (in-memory splits share one size; files are decoded)."""
    images = dataset.split.get("images")
    return tuple(images.shape[-2:]) if images is not None else tuple(dataset.image(i).shape[-2:])


def _images(dataset):
    """What equal_shape_batches takes: an in-memory split's tensor (batches in order), else the set."""
    return dataset.split["images"] if dataset.split["kind"] == "tensor" else dataset


def targets_of(labels, crop_boxes, crop):
    return torch.cat([labels.double()[:, None], box_convert(crop_boxes / crop, "xyxy", "cxcywh")], 1).float()


class BoxTargets(Dataset):
    """Training crops (the classification augmentation of §3.1: rescale to S, random crop, flip,
    colour shift) with the ground-truth box carried through the same rescale, crop and flip.
    Keys are (index, seed) pairs as for `vgg.data.Transformed`."""

    def __init__(self, base, transform):
        if "boxes" not in base.split:
            raise ValueError("localisation needs a split with boxes (Fashion-MNIST, or ImageFolder with data.box_dir)")
        self.base, self.transform = base, transform
        self.in_memory = base.split["kind"] == "tensor"

    def __len__(self):
        return len(self.base)

    def _on_object(self, indices, draws, height, width):
        """The draws with each crop moved onto its object (crops_meeting_boxes), and the targets:
        the whole object's box in the crop's coordinates (boxes_to_crop, not clipped)."""
        scale, top, left, flip, alphas = draws  # the images' own draws
        sizes = self.transform.rescaled_sizes(height, width)[scale.cpu() - self.transform.scale_min]
        crop, boxes = self.transform.crop, self.base.split["boxes"][indices]
        top, left = crops_meeting_boxes(boxes, height, width, sizes, top.cpu(), left.cpu(), crop)
        targets = targets_of(self.base.labels[indices], boxes_to_crop(boxes, height, width, sizes, top, left,
                                                                      flip.cpu(), crop), crop)
        return (scale, top, left, flip, alphas), targets

    def batches(self, keys, device):
        """(images, targets) per batch of (index, seed) keys, transformed together on `device` (as
        vgg.data.Transformed)."""
        # The draws stay on the CPU: the crops are moved onto their objects there, per batch.
        for indices, images, draws, _ in gathered_batches(self.base, self.transform, keys, device):
            draws, targets = self._on_object(indices, draws, *images.shape[-2:])
            yield self.transform.batch(images, draws=draws), to_device(targets, device)

    def __getitem__(self, key):
        index, seed = key
        image = self.base.image(index)
        draws, targets = self._on_object([index], self.transform.draws([seed], *image.shape[-2:]), *image.shape[-2:])
        # One image through the batch transform: the crop may have moved from its drawn position.
        return self.transform.batch(image[None].contiguous(), draws=draws)[0].contiguous(), targets[0]


# ---------------------------------------------------------------- testing (App. A.2)

def _for_inference(model, device):
    # channels_last: oneDNN (CPU) and cuDNN (GPU) convolutions run faster in that layout (as
    # vgg.evaluate's nets).
    return model.eval().to(device, memory_format=torch.channels_last)


@torch.no_grad()
def centre_crop_boxes(model, dataset, labels, scale, mean, regression, batch_size, device, bf16=False):
    """Table 8: the box of class labels[i] predicted on image i's centre crop at `scale` px, in image pixels.
    `bf16`: autocast where native (vgg.device), as the nets were trained and validated."""
    from .transforms import TestTransform, centre_crop
    model = _for_inference(model, device)
    crop = model.crop
    transform = TestTransform(scale, mean)
    out = torch.empty(len(dataset), 4)
    for indices, images in equal_shape_batches(_images(dataset), batch_size):
        height, width = images.shape[-2:]
        (h, w), top, left = centre_crop_offsets(height, width, scale, crop)
        x = centre_crop(transform(images), crop).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            pred = class_boxes(model(x).float().cpu(), labels[indices], regression)
        out[indices] = boxes_from_crop(box_convert(pred.double() * crop, "cxcywh", "xyxy"), height, width,
                                       (h, w), top, left).float()
    return out


@torch.no_grad()
def dense_predictions(loc_model, cls_model, dataset, scale, mean, regression, batch_size, device, bf16=False):
    """§A.2: both nets applied densely to whole images rescaled to `scale` px. Per image, a list
    entry (boxes L x C x 4 in image pixels, the classification net's soft-max class scores L x C):
    one box per location and class, the candidates that greedy merging works on.

    The windows are those of the classification net's dense map: crop-sized, `stride` px apart. The
    localisation net sees each of them as the crop it was trained on when its receptive field is
    wider than the crop (window_crops), else through its fully convolutional form. `bf16`: both nets
    under autocast where native (vgg.device), as classification's dense evaluation and the nets'
    training; with channels_last, 1.7x faster than fp32 on an AMD EPYC (docs/results.md)."""
    from .transforms import TestTransform
    loc_model, cls_model = _for_inference(loc_model, device), _for_inference(cls_model, device)
    transform = TestTransform(scale, mean)
    crop, stride = loc_model.crop, loc_model.stride
    as_crops = window_crops(loc_model)
    out = [None] * len(dataset)
    for indices, images in equal_shape_batches(_images(dataset), batch_size):
        height, width = images.shape[-2:]
        x = transform(images)
        h, w = x.shape[-2:]
        x = centre_on_pooling_grid(x, stride).to(device)
        dy, dx = (h % stride) // 2, (w % stride) // 2  # the rows and columns it dropped
        with autocast(device, bf16):
            if as_crops:
                maps = forward_windows(loc_model, x, batch_size)  # n x 4K x gh x gw
            else:
                maps = loc_model.forward_dense(x.contiguous(memory_format=torch.channels_last)).float().cpu()
            cls = cls_model.forward_dense(x.contiguous(memory_format=torch.channels_last)).float().cpu()
        cls = torch.softmax(cls, 1)  # n x C x gh x gw
        n, _, gh, gw = maps.shape
        classes = cls.shape[1]
        maps = maps.view(n, -1, 4, gh, gw).permute(0, 3, 4, 1, 2)  # n x gh x gw x K x 4
        maps = maps.expand(n, gh, gw, classes, 4) if regression == "SCR" else maps
        # §3.2: cell (i, j) of the map sees the crop-sized window at (i, j) x stride of the input.
        oy = (torch.arange(gh, dtype=torch.float64) * stride + dy)[:, None, None]
        ox = (torch.arange(gw, dtype=torch.float64) * stride + dx)[None, :, None]
        xyxy = box_convert(maps.double() * crop, "cxcywh", "xyxy")
        xyxy = xyxy + torch.stack(torch.broadcast_tensors(ox, oy, ox, oy), -1)[None]
        boxes = (xyxy * torch.tensor([width / w, height / h] * 2, dtype=torch.float64)).float()
        per_image = zip(boxes.reshape(n, gh * gw, classes, 4).unbind(0),
                        cls.permute(0, 2, 3, 1).reshape(n, gh * gw, classes).unbind(0))
        for i, candidates in zip(indices, per_image):
            out[i] = candidates
    return out


def window_crops(model):
    """Whether dense localisation must cut each window out as a crop: when a unit of the last conv
    map sees more than the crop. At crop 224 D's unit sees 212 px, inside the window, and §A.2
    applies the net densely; the default's crop 28 keeps 2 of 5 pools and D's unit sees 88 px, 3.1
    crops, so a dense map's cell regresses its box from image content around the window that every
    training crop had as zero padding. Measured on the first 100 test images of the three-seed
    default (docs/results.md): PCR-all_384's true-class box hit (IoU > 0.5) in 55% of the 36 dense
    windows at Q=384 and in 92% of the same windows as crops. A class score does not depend on where
    the window's edges are, as a box in window coordinates does, so the classification net stays
    dense (its map is Table 3's dense evaluation)."""
    return receptive_field(model)[0] > model.crop


def forward_windows(model, x, batch_size):
    """The net applied to every crop-sized window of x (n x 3 x H x W) at its output stride, each as
    a crop, `batch_size` windows a pass: n x outputs x gh x gw, the layout of forward_dense, whose
    cell (i, j) is the window at (i, j) x stride."""
    crop, stride = model.crop, model.stride
    windows = x.unfold(2, crop, stride).unfold(3, crop, stride)  # n x 3 x gh x gw x crop x crop
    n, channels, gh, gw = windows.shape[:4]
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(n * gh * gw, channels, crop, crop)
    outputs = torch.cat([model(part.contiguous(memory_format=torch.channels_last)).float().cpu()
                         for part in windows.split(batch_size)])
    return outputs.view(n, gh, gw, -1).permute(0, 3, 1, 2)


def greedy_merge(boxes, scores, merge_iou):
    """OverFeat's greedy merging for one class: while two boxes overlap by IoU > `merge_iou`, replace
    the most overlapping pair by the mean of their coordinates (each weighted by how many predictions
    it already merges) and the sum of their scores. Returns the merged boxes and scores, best first.

    OverFeat's match score mixes centre distance and overlap; IoU is the overlap test of §A.2's
    "spatially close". numpy: a few dozen boxes per class, where torch's per-call overhead dominates.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    s = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
    n = np.ones(len(b))
    alive = np.ones(len(b), dtype=bool)
    iou = _iou_matrix(b, b)
    np.fill_diagonal(iou, -1)
    while alive.sum() > 1:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] <= merge_iou:
            break
        b[i] = (b[i] * n[i] + b[j] * n[j]) / (n[i] + n[j])
        s[i], n[i], alive[j] = s[i] + s[j], n[i] + n[j], False
        iou[j, :] = iou[:, j] = -1  # j is gone; only i's overlaps change
        row = np.where(alive, _iou_matrix(b[i:i + 1], b)[0], -1)
        row[i] = -1
        iou[i, :] = iou[:, i] = row
    b, s = b[alive], s[alive]
    order = np.argsort(-s, kind="stable")
    return b[order], s[order]


def _iou_matrix(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _batch_iou(a, b):
    """B x La x Lb IoU of every box of a[k] with every box of b[k] (xyxy, float64), the same float
    operations as _iou_matrix, so the merges below equal greedy_merge's bit for bit. The x and y
    overlaps are formed apart (the intersection is their product, as prod(-1) over the pair): no
    B x La x Lb x 2 strided temporaries; 2-3x faster at 130 candidates, 1.2x at 65 (2,000 sets)."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    w = (torch.minimum(ax2[:, :, None], bx2[:, None, :]) - torch.maximum(ax1[:, :, None], bx1[:, None, :])).clamp_(min=0)
    h = (torch.minimum(ay2[:, :, None], by2[:, None, :]) - torch.maximum(ay1[:, :, None], by1[:, None, :])).clamp_(min=0)
    inter = w.mul_(h)
    area_a = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def best_merged_boxes(boxes, scores, merge_iou):
    """greedy_merge for B candidate sets at once (B x L x 4 boxes, B x L scores; the same L): the best
    merged box of each (B x 4). Every set takes its next merge in the same step, so a step is a few
    tensor operations over all of them (the merging of one set is inherently sequential). Equal to
    greedy_merge's first box (tests/test_localisation.py); float64 throughout, as there.

    Each row of the IoU matrices keeps its maximum and where it is (the first column), so a step
    finds every set's most overlapping pair in O(B L), not O(B L^2): after merging j into i only row
    i, and the rows whose maximum sat in column i or j, are searched again; any other row's maximum
    can only be beaten (or tied from the left) by its new overlap with i."""
    b, s = boxes.double().clone(), scores.double().clone()
    sets, count = s.shape
    n = torch.ones_like(s)
    alive = torch.ones(sets, count, dtype=torch.bool)
    iou = _batch_iou(b, b)
    iou[:, torch.arange(count), torch.arange(count)] = -1
    row_max, row_arg = iou.max(2)  # the first maximum of each row
    minus_one = torch.tensor(-1.0, dtype=torch.float64)
    while True:
        # The first maximum of the flattened matrix, as np.argmax: the first row holding the
        # largest value, at that row's first column holding it.
        best, i = row_max.max(1)
        active = (best > merge_iou).nonzero().flatten()
        if len(active) == 0:
            break
        k, i = active, i[active]
        j = row_arg[k, i]
        ni, nj = n[k, i], n[k, j]
        b[k, i] = (b[k, i] * ni[:, None] + b[k, j] * nj[:, None]) / (ni + nj)[:, None]
        s[k, i], n[k, i], alive[k, j] = s[k, i] + s[k, j], ni + nj, False
        iou[k, j, :] = -1
        iou[k, :, j] = -1
        row = torch.where(alive[k], _batch_iou(b[k, i][:, None], b[k])[:, 0], minus_one)
        row[torch.arange(len(k)), i] = -1
        iou[k, i, :] = row
        iou[k, :, i] = row
        # Row maxima: rows i and j, and rows whose maximum was in column i or j, searched again; the
        # others compare their maximum with their new overlap with i (a tie goes to the first column).
        old_max, old_arg = row_max[k], row_arg[k]
        stale = (old_arg == i[:, None]) | (old_arg == j[:, None])
        stale[torch.arange(len(k)), i] = True
        stale[torch.arange(len(k)), j] = True
        wins = (row > old_max) | ((row == old_max) & (i[:, None] < old_arg))
        old_max = torch.where(wins, row, old_max)
        old_arg = torch.where(wins, i[:, None].expand_as(old_arg), old_arg)
        kk, rr = stale.nonzero(as_tuple=True)
        old_max[kk, rr], old_arg[kk, rr] = iou[k[kk], rr].max(1)
        row_max[k], row_arg[k] = old_max, old_arg
    best = torch.where(alive, s, torch.tensor(-torch.inf, dtype=torch.float64)).argmax(1)  # first of equals
    return b[torch.arange(sets), best]


def row_posteriors(posteriors, parts):
    """N x C class posteriors that rank a Table 9 row's classes, each classification net counted once:
    a net's posteriors averaged over its test scales, then the nets averaged. `posteriors`: {(S, Q):
    N x C}; `parts`: [(S, (Q, ...))], the row's nets and their scales. The paper ranks by its best
    classification system (§A.2); a plain mean over the (net, Q) pairs of the fusion row
    256/256 + 384/352,384 would weigh D_384, at two scales, twice."""
    return torch.stack([torch.stack([posteriors[s, q] for q in qs]).mean(0) for s, qs in parts]).mean(0)


def localise(candidates, posteriors, top_k, merge_iou, chunk=2000):
    """§A.2 for each image: the classes ranked by the classification net's posteriors, and for each
    of the top `top_k` the best merged box of its candidates. `candidates`: one dense_predictions
    list per net and scale, whose predictions are pooled (the union). Returns classes N x top_k and
    boxes N x top_k x 4. Images with as many candidates are merged together, `chunk` at a time
    (best_merged_boxes)."""
    classes = posteriors.topk(top_k, dim=1).indices
    out = torch.zeros(len(posteriors), top_k, 4)
    pooled = [(torch.cat([per_image[i][0] for per_image in candidates]),  # L x C x 4, all nets and scales
               torch.cat([per_image[i][1] for per_image in candidates])) for i in range(len(posteriors))]
    by_count = {}
    for i, (boxes, _) in enumerate(pooled):
        by_count.setdefault(len(boxes), []).append(i)
    for images in by_count.values():
        for start in range(0, len(images), chunk):
            part = torch.tensor(images[start:start + chunk])
            boxes = torch.stack([pooled[i][0] for i in part.tolist()])  # B x L x C x 4
            scores = torch.stack([pooled[i][1] for i in part.tolist()])  # B x L x C
            for r in range(top_k):
                c = classes[part, r]
                picked = boxes[torch.arange(len(part)), :, c]  # B x L x 4: each image's class-c candidates
                out[part, r] = best_merged_boxes(picked, scores[torch.arange(len(part)), :, c], merge_iou).float()
    return classes, out


def localisation_hits(classes, boxes, labels, true_boxes, threshold, k):
    """Per image 1 when one of the first k (class, box) guesses has the true class and overlaps the
    true box by IoU > `threshold` (ILSVRC's localisation criterion), else 0."""
    hits = torch.zeros(len(labels), dtype=torch.long)
    for r in range(k):
        iou = paired_iou(boxes[:, r].double(), true_boxes.double())
        hits |= ((classes[:, r] == labels) & (iou > threshold)).long()
    return hits


def iou_hits(pred_boxes, true_boxes, threshold):
    """Table 8's per-image outcome: 1 where the predicted box overlaps the true one by IoU > `threshold`."""
    return (paired_iou(pred_boxes.double(), true_boxes.double()) > threshold).long()


