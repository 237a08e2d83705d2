"""Train-time and test-time transforms, side by side (§3.1 training, §3.2 testing).

Images arrive as uint8 3 x H x W tensors with values in [0, 255]; the only normalisation
is subtracting the mean RGB (§2.1). Training randomness comes from a per-image seed, so an
image's augmentation does not depend on the process, worker or batch that loads it: a
resumed or distributed run sees exactly the crops of an uninterrupted single-process one.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from .device import to_device


def pixels(paper_scale, crop):
    """A scale in the paper's units (S or Q for a 224 crop) in pixels at this crop size: the
    default's crop 28 makes S=256, 384, 512 into 32, 48, 64 px; never below the crop."""
    return max(crop, int(round(paper_scale * crop / 224)))


def rescaled_size(height, width, size):
    """(H, W) after an isotropic rescale that makes the smallest side `size`."""
    if height <= width:
        return size, max(size, round(width * size / height))
    return max(size, round(height * size / width)), size


def rescale(image, size):
    """Isotropic rescale so the smallest side equals `size` (§3.1 "training scale").

    Takes one 3 x H x W image or an N x 3 x H x W batch of equal-sized images.
    """
    h, w = image.shape[-2:]
    if min(h, w) == size:
        return image.float()
    new = rescaled_size(h, w, size)
    batch = image if image.ndim == 4 else image[None]
    out = F.interpolate(batch.float(), size=new, mode="bilinear", align_corners=False,
                        antialias=new[0] < h).clamp_(0, 255)
    return out if image.ndim == 4 else out[0]


def colour_shift(alphas, eigval, eigvec):
    """AlexNet's PCA colour shift, sum_i alpha_i lambda_i p_i, in [0, 255] pixel units
    (for alphas of shape 3, or N x 3 giving N shifts).

    `eigval` are of the covariance of [0, 255] pixels; AlexNet's lambda are of pixels in [0, 1],
    hence lambda_255 / 255**2 * 255 = lambda_255 / 255.
    """
    return (alphas * eigval / 255.0) @ eigvec.T


class TrainTransform:
    """One random crop from the image rescaled to a random S in [scale_min, scale_max] (pixels),
    random horizontal flip, PCA colour shift, mean subtraction (§3.1).

    Two paths give the same pixels for the same draws: `__call__` transforms one image of any
    size (ImageFolder files, decoded one by one in loader workers since their sizes differ);
    `batch` transforms N equal-sized images at once with whole-batch tensor operations on
    whatever device holds them (the in-memory default, on the training device)."""

    def __init__(self, crop, scale_min, scale_max, mean, eigval, eigvec, colour_std=0.1, flip=True):
        self.crop, self.scale_min, self.scale_max = crop, scale_min, scale_max
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)
        self.colour_std, self.flip = colour_std, flip
        # per image size (and device): rescaled_sizes, resize_matrices; per device: constants_on
        self._sizes, self._matrices, self._constants = {}, {}, {}

    def draws(self, seeds, height, width):
        """The random choices for N images of one size, each from its own seed, vectorised:
        S, crop top, crop left, flip (tensors of N) and colour alphas (N x 3)."""
        u = uniforms(seeds, 10)
        scale = self.scale_min + (u[:, 0] * (self.scale_max - self.scale_min + 1)).long()
        h, w = self.rescaled_sizes(height, width)[scale - self.scale_min].unbind(1)
        top = (u[:, 1] * (h - self.crop + 1)).long()
        left = (u[:, 2] * (w - self.crop + 1)).long()
        flip = (u[:, 3] < 0.5) & self.flip
        # Box-Muller: three independent N(0, colour_std) alphas, each from its own pair of uniforms
        # (radius from u[4:7], angle from u[7:10]; no uniform feeds two alphas).
        radius = torch.sqrt(-2 * torch.log1p(-u[:, 4:7]))
        alphas = (self.colour_std * radius * torch.cos(2 * math.pi * u[:, 7:10])).float()
        return scale, top, left, flip, alphas

    def rescaled_sizes(self, height, width):
        """(H, W) after rescaling to each S in [scale_min, scale_max], one row per S."""
        if (height, width) not in self._sizes:
            self._sizes[height, width] = torch.tensor(
                [rescaled_size(height, width, s) for s in range(self.scale_min, self.scale_max + 1)])
        return self._sizes[height, width]

    def draw(self, seed, height, width):
        """The random choices for one image: S, crop corner, flip, colour alphas."""
        scale, top, left, flip, alphas = self.draws([seed], height, width)
        return int(scale[0]), int(top[0]), int(left[0]), bool(flip[0]), alphas[0]

    def __call__(self, image, seed):
        """The per-image path: rescale to the drawn S, crop, flip, colour shift, minus mean."""
        scale, top, left, flip, alphas = self.draw(seed, *image.shape[-2:])
        out = rescale(image, scale)[:, top:top + self.crop, left:left + self.crop]
        if flip:
            out = out.flip(-1)
        shift = colour_shift(alphas, self.eigval, self.eigvec)
        return out + (shift - self.mean)[:, None, None]

    def resize_matrices(self, height, width, device):
        """`rescale` to every S in [scale_min, scale_max] as two stacks of matrices, zero-padded to
        the largest S: rescale(image, S) == rows[k] @ image @ cols[k].T, k = S - scale_min, within
        float rounding (bilinear resampling, antialiased or not, is separable and linear)."""
        key = (height, width, str(device))
        if key not in self._matrices:
            sizes = self.rescaled_sizes(height, width)
            rows = torch.zeros(len(sizes), int(sizes[:, 0].max()), height)
            cols = torch.zeros(len(sizes), int(sizes[:, 1].max()), width)
            for k, (h, w) in enumerate(sizes.tolist()):
                rows[k, :h] = resize_matrix(height, h, antialias=h < height)
                # rescale() antialiases both sides when the image shrinks (h < height).
                cols[k, :w] = resize_matrix(width, w, antialias=h < height)
            self._matrices[key] = rows.to(device), cols.to(device)
        return self._matrices[key]

    def batch(self, images, seeds=None, draws=None):
        """The transform of each of N equal-sized uint8 images (N x 3 x H x W, on any device), each
        with its own seed, as whole-batch tensor operations: per image, the drawn S's resize rows
        of its crop and resize columns of its (flipped) crop, gathered by index arithmetic, then two
        batched matrix products and one batched colour shift. Equals `__call__` image by image
        within float rounding (tests/test_transforms.py); returned in channels_last memory layout.
        `draws` (as `draws` returns them) may be given instead of the seeds."""
        device = images.device
        n, channels, height, width = images.shape
        scale, top, left, flip, alphas = self.draws(seeds, height, width) if draws is None else draws
        scale, top, left, flip, alphas = (to_device(t, device) for t in (scale, top, left, flip, alphas))
        rows, cols = self.resize_matrices(height, width, device)
        crop = self.crop
        steps = torch.arange(crop, device=device)[None]
        # A flip reverses the crop's columns: it is folded into which columns are gathered.
        xs = left[:, None] + torch.where(flip[:, None], crop - 1 - steps, steps)
        ys = top[:, None] + steps
        # Row (k, y) of a stack sits at k * rows.shape[1] + y of its flat view: one index_select each.
        k = (scale - self.scale_min)[:, None]
        crop_rows = rows.flatten(0, 1).index_select(0, (k * rows.shape[1] + ys).flatten()).view(n, crop, height)
        crop_cols = cols.flatten(0, 1).index_select(0, (k * cols.shape[1] + xs).flatten()).view(n, crop, width)
        # Columns first: (N, C*H, W) @ (N, W, crop); then rows over (N, H, crop*C), which leaves the
        # result laid out as N x crop x crop x C, the channels_last layout the training step uses.
        out = torch.bmm(images.float().view(n, channels * height, width), crop_cols.transpose(1, 2))
        out = out.view(n, channels, height, crop).permute(0, 2, 3, 1).reshape(n, height, crop * channels)
        out = torch.bmm(crop_rows, out).view(n, crop, crop, channels).permute(0, 3, 1, 2)
        eigval, eigvec, mean = self.constants_on(device)
        return out + (colour_shift(alphas, eigval, eigvec) - mean)[:, :, None, None]

    def constants_on(self, device):
        """(eigval, eigvec, mean) on `device`, copied there once, not at every batch."""
        key = str(device)
        if key not in self._constants:
            self._constants[key] = tuple(to_device(t, device) for t in (self.eigval, self.eigvec, self.mean))
        return self._constants[key]


def resize_matrix(size, new_size, antialias):
    """The new_size x size matrix of F.interpolate's bilinear (align_corners=False) resampling
    along one axis: the interpolation of the identity, computed in float64."""
    eye = torch.eye(size, dtype=torch.float64)[None, None]
    return F.interpolate(eye, size=(new_size, size), mode="bilinear", align_corners=False,
                         antialias=antialias)[0, 0].float()


def uniforms(seeds, count):
    """`count` uniforms in [0, 1) per seed from a counter-based hash (splitmix64): the same
    numbers for a seed whatever batch, process or worker it is drawn in."""
    keys = np.asarray([int(s) % 2 ** 64 for s in seeds], dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        z = keys * np.uint64(count) + np.arange(1, count + 1, dtype=np.uint64)
        z = z * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53)


class TestTransform:
    """Rescale so the smallest side is Q (pixels), subtract the mean RGB (§3.2)."""

    def __init__(self, scale, mean):
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self._means = {}  # per device, copied there once

    def __call__(self, image):
        """One 3 x H x W image or an N x 3 x H x W batch, on any device."""
        key = str(image.device)
        if key not in self._means:
            self._means[key] = to_device(self.mean, image.device)
        return rescale(image, self.scale) - self._means[key]


def centre_crop(image, crop):
    h, w = image.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return image[..., top:top + crop, left:left + crop]
