"""Train-time and test-time transforms, side by side (§3.1 training, §3.2 testing).

Images arrive as uint8 3 x H x W tensors with values in [0, 255]; the only normalisation
is subtracting the mean RGB (§2.1). Training randomness comes from a per-image seed, so an
image's augmentation does not depend on the process, worker or batch that loads it: a
resumed or distributed run sees exactly the crops of an uninterrupted single-process one.
"""
import random

import torch
import torch.nn.functional as F


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
    """AlexNet's PCA colour shift, sum_i alpha_i lambda_i p_i, in [0, 255] pixel units.

    `eigval` are of the covariance of [0, 255] pixels; AlexNet's lambda are of pixels in [0, 1],
    hence lambda_255 / 255**2 * 255 = lambda_255 / 255.
    """
    return eigvec @ (alphas * eigval / 255.0)


class TrainTransform:
    """One random crop from the image rescaled to a random S in [scale_min, scale_max] (pixels),
    random horizontal flip, PCA colour shift, mean subtraction (§3.1)."""

    def __init__(self, crop, scale_min, scale_max, mean, eigval, eigvec, colour_std=0.1, flip=True):
        self.crop, self.scale_min, self.scale_max = crop, scale_min, scale_max
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)
        self.colour_std, self.flip = colour_std, flip

    def draw(self, seed, height, width):
        """The random choices for one image: S, crop corner, flip, colour alphas."""
        rng = random.Random(seed)
        scale = rng.randint(self.scale_min, self.scale_max)
        h, w = rescaled_size(height, width, scale)
        top, left = rng.randint(0, h - self.crop), rng.randint(0, w - self.crop)
        flip = self.flip and rng.random() < 0.5
        alphas = [rng.gauss(0.0, self.colour_std) for _ in range(3)] if self.colour_std > 0 else [0.0] * 3
        return scale, top, left, flip, torch.tensor(alphas)

    def __call__(self, image, seed):
        return self.batch(image[None], [seed])[0]

    def batch(self, images, seeds):
        """The transform of each of N equal-sized images with its own seed, rescaled per S group."""
        draws = [self.draw(seed, *images.shape[-2:]) for seed in seeds]
        out = torch.empty(len(seeds), 3, self.crop, self.crop)
        by_scale = {}
        for i, (scale, *_) in enumerate(draws):
            by_scale.setdefault(scale, []).append(i)
        for scale, members in by_scale.items():
            scaled = rescale(images[members], scale)
            for j, i in enumerate(members):
                _, top, left, flip, _ = draws[i]
                view = scaled[j, :, top:top + self.crop, left:left + self.crop]
                out[i] = view.flip(-1) if flip else view
        shift = torch.stack([colour_shift(d[4], self.eigval, self.eigvec) for d in draws])
        return out + (shift[:, :, None, None] - self.mean)


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
