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
    random horizontal flip, PCA colour shift, mean subtraction (§3.1)."""

    def __init__(self, crop, scale_min, scale_max, mean, eigval, eigvec, colour_std=0.1, flip=True):
        self.crop, self.scale_min, self.scale_max = crop, scale_min, scale_max
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)
        self.colour_std, self.flip = colour_std, flip

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
        return torch.tensor([rescaled_size(height, width, s) for s in range(self.scale_min, self.scale_max + 1)])

    def draw(self, seed, height, width):
        """The random choices for one image: S, crop corner, flip, colour alphas."""
        scale, top, left, flip, alphas = self.draws([seed], height, width)
        return int(scale[0]), int(top[0]), int(left[0]), bool(flip[0]), alphas[0]

    def __call__(self, image, seed):
        return self.batch(image[None], [seed])[0]

    def batch(self, images, seeds):
        """The transform of each of N equal-sized images, each with its own seed."""
        height, width = images.shape[-2:]
        scale, top, left, flip, alphas = self.draws(seeds, height, width)
        if min(height, width) <= self.scale_min:
            sizes = self.rescaled_sizes(height, width)[scale - self.scale_min]
            out = upscaled_crops(images.float(), sizes, top, left, flip, self.crop)
        else:  # shrinking: rescale with antialiasing, one call per distinct S
            out = torch.empty(len(seeds), 3, self.crop, self.crop)
            for s in scale.unique().tolist():
                members = (scale == s).nonzero().flatten().tolist()
                scaled = rescale(images[members], s)
                for j, i in enumerate(members):
                    view = scaled[j, :, top[i]:top[i] + self.crop, left[i]:left[i] + self.crop]
                    out[i] = view.flip(-1) if flip[i] else view
        shift = colour_shift(alphas, self.eigval, self.eigvec)
        return out + (shift[:, :, None, None] - self.mean)


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


def upscaled_crops(images, sizes, top, left, flip, crop):
    """Crops of each image bilinearly rescaled to its own size (N x 2: H, W), in one grid_sample call.

    Samples exactly the pixels that F.interpolate (bilinear, align_corners=False) followed by a
    crop would give, without materialising the rescaled images; only valid when enlarging (no
    antialiasing needed)."""
    h, w = sizes.double().unbind(1)
    h, w = h[:, None], w[:, None]
    steps = torch.arange(crop, dtype=torch.float64)[None]
    cols = torch.where(flip[:, None], crop - 1 - steps, steps)
    # Normalised coordinates of output pixel centres: (position + 0.5) / size * 2 - 1.
    gy = (top[:, None] + steps + 0.5) / h * 2 - 1
    gx = (left[:, None] + cols + 0.5) / w * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).float()
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class TestTransform:
    """Rescale so the smallest side is Q (pixels), subtract the mean RGB (§3.2)."""

    def __init__(self, scale, mean):
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]

    def __call__(self, image):
        return rescale(image, self.scale) - self.mean


def centre_crop(image, crop):
    h, w = image.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return image[..., top:top + crop, left:left + crop]
