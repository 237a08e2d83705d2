"""§3.1 training-time augmentation and the §3.2 test-time rescale."""
import pytest
import torch

from vgg.data import ImageSet, Transformed
from vgg import transforms
from vgg.transforms import TrainTransform, centre_crop, colour_shift, pixels, rescale, rescaled_size

MEAN = [120.0, 110.0, 100.0]
EIGVAL = [300.0, 50.0, 10.0]
# An orthonormal basis that is not the identity, so rows and columns differ.
EIGVEC = torch.linalg.qr(torch.tensor([[2.0, 1.0, 0.5], [0.3, 1.5, -1.0], [0.7, -0.4, 1.2]]))[0].tolist()
CROP, S_MIN, S_MAX = 32, 36, 64


def random_image(height, width, seed=0):
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def transform(**kwargs):
    settings = {"crop": CROP, "scale_min": S_MIN, "scale_max": S_MAX, "mean": MEAN, "eigval": EIGVAL,
                "eigvec": EIGVEC, "colour_std": 0.1, "flip": True, **kwargs}
    return TrainTransform(**settings)


@pytest.mark.parametrize("height, width, size", [
    (200, 100, 50),   # portrait, down
    (90, 160, 45),    # landscape, down
    (333, 500, 256),  # landscape, ILSVRC-like
    (500, 375, 256),  # portrait, ILSVRC-like
    (20, 30, 64),     # landscape, up
    (31, 17, 48),     # portrait, up
    (40, 40, 25),     # square
])
def test_rescale_makes_the_smallest_side_s_and_keeps_the_aspect_ratio(height, width, size):
    out = rescale(random_image(height, width), size)
    h, w = out.shape[-2:]
    assert out.shape[0] == 3
    assert min(h, w) == size
    assert (h <= w) == (height <= width)  # orientation kept
    long_side, expected = (w, width * size / height) if height <= width else (h, height * size / width)
    assert abs(long_side - expected) <= 0.5  # aspect ratio kept up to rounding
    assert (h, w) == rescaled_size(height, width, size)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255


def test_rescale_keeps_a_constant_image_constant():
    image = torch.full((3, 90, 160), 77, dtype=torch.uint8)
    for size in (30, 45, 200):
        torch.testing.assert_close(rescale(image, size), torch.full_like(rescale(image, size), 77.0))


def test_downscaling_averages_instead_of_aliasing():
    # Random pixels have std ~74; an 8x antialiased downscale averages ~64 of them each.
    out = rescale(random_image(256, 256), 32)
    assert out.shape == (3, 32, 32)
    assert out.std() < 20
    assert abs(out.mean().item() - 127.5) < 3


def test_rescale_at_the_current_size_is_the_identity():
    image = random_image(40, 60)
    assert torch.equal(rescale(image, 40), image.float())


@pytest.mark.parametrize("height, width", [(50, 80), (90, 40), (36, 36), (20, 20), (300, 200)])
def test_train_transform_outputs_a_crop_by_crop_image(height, width):
    t = transform()
    for seed in range(10):
        out = t(random_image(height, width), seed)
        assert out.shape == (3, CROP, CROP)
        assert out.dtype == torch.float32


def test_train_scale_is_drawn_per_image_within_the_range():
    t = transform()
    scales = [t.draw(seed, 60, 90)[0] for seed in range(2000)]
    assert min(scales) == S_MIN and max(scales) == S_MAX
    assert set(scales) == set(range(S_MIN, S_MAX + 1))  # every integer S occurs
    # The crop always lies inside the rescaled image.
    for seed in range(200):
        scale, top, left, _, _ = t.draw(seed, 60, 90)
        h, w = rescaled_size(60, 90, scale)
        assert 0 <= top <= h - CROP and 0 <= left <= w - CROP


def test_fixed_scale_when_min_equals_max():
    t = transform(scale_min=40, scale_max=40)
    assert {t.draw(seed, 70, 50)[0] for seed in range(100)} == {40}


def test_same_seed_same_output_different_seeds_differ():
    t = transform()
    image = random_image(70, 90)
    first = t(image, 123)
    assert torch.equal(first, t(image, 123))
    assert torch.equal(first, transform()(image, 123))  # a fresh transform, same seed
    outputs = [t(image, seed) for seed in range(10)]
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert not torch.equal(outputs[i], outputs[j])


def test_flip_happens_about_half_the_time():
    t = transform()
    flips = [t.draw(seed, 60, 60)[3] for seed in range(2000)]
    assert 0.45 < sum(flips) / len(flips) < 0.55
    no_flip = transform(flip=False)
    assert not any(no_flip.draw(seed, 60, 60)[3] for seed in range(200))


def test_without_colour_shift_or_flip_output_is_the_rescaled_crop_minus_mean():
    t = transform(colour_std=0.0, flip=False)
    image = random_image(75, 50)
    mean = torch.tensor(MEAN)[:, None, None]
    for seed in range(20):
        scale, top, left, flip, alphas = t.draw(seed, 75, 50)
        assert not flip and torch.equal(alphas, torch.zeros(3))
        expected = rescale(image, scale)[:, top:top + CROP, left:left + CROP] - mean
        torch.testing.assert_close(t(image, seed), expected)


def test_flipped_output_is_the_mirrored_crop():
    t = transform(colour_std=0.0)
    image = random_image(64, 80)
    mean = torch.tensor(MEAN)[:, None, None]
    seeds = [s for s in range(50) if t.draw(s, 64, 80)[3]]
    assert seeds
    for seed in seeds[:5]:
        scale, top, left, _, _ = t.draw(seed, 64, 80)
        crop = rescale(image, scale)[:, top:top + CROP, left:left + CROP]
        torch.testing.assert_close(t(image, seed), crop.flip(-1) - mean)


def test_colour_shift_is_sum_of_alpha_lambda_p():
    alphas = torch.tensor([0.5, -1.0, 2.0])
    eigval, eigvec = torch.tensor(EIGVAL), torch.tensor(EIGVEC)
    expected = sum(alphas[i] * eigval[i] / 255.0 * eigvec[:, i] for i in range(3))  # p_i = column i
    torch.testing.assert_close(colour_shift(alphas, eigval, eigvec), expected)


def test_colour_shift_is_added_to_every_pixel():
    t = transform(colour_std=0.1, flip=False)
    plain = transform(colour_std=0.0, flip=False)
    image = random_image(60, 70)
    shifts = []
    for seed in range(20):
        scale, top, left, _, alphas = t.draw(seed, 60, 70)
        # Same S and crop as without colour: the colour draws come after them.
        assert plain.draw(seed, 60, 70)[:3] == (scale, top, left)
        assert alphas.abs().sum() > 0
        shift = torch.tensor(EIGVEC) @ (alphas * torch.tensor(EIGVAL) / 255.0)
        torch.testing.assert_close(colour_shift(alphas, t.eigval, t.eigvec), shift)
        difference = t(image, seed) - plain(image, seed)
        # Pixels near 255 in float32: allow their rounding error (~1.5e-5), not more.
        torch.testing.assert_close(difference, shift[:, None, None].expand(3, CROP, CROP), atol=1e-4, rtol=0)
        shifts.append(shift)
    # Alphas ~ N(0, 0.1): the shift's spread along p_1 is about 0.1 * lambda_1 / 255.
    along_p1 = torch.stack(shifts) @ torch.tensor(EIGVEC)[:, 0]
    assert 0.02 < along_p1.std().item() / (EIGVAL[0] / 255.0) < 0.3


def test_the_three_colour_alphas_are_independent():
    # Each alpha from its own two uniforms: with a uniform shared between two alphas (radius of
    # one, angle of the next) their squares correlate at about 0.06.
    _, _, _, _, alphas = transform(colour_std=1.0).draws(range(40000), 40, 40)
    squares = torch.corrcoef((alphas.double() ** 2).T)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert abs(squares[i, j].item()) < 0.025, (i, j)
    torch.testing.assert_close(alphas.double().std(0), torch.ones(3, dtype=torch.float64), atol=0.03, rtol=0)


def test_augmentation_depends_only_on_the_seed_not_the_loader():
    images = torch.stack([random_image(40, 40, seed=i) for i in range(3)])
    base = ImageSet({"kind": "tensor", "images": images, "labels": torch.tensor([0, 1, 2]), "classes": ["a", "b", "c"]})
    t = transform()
    dataset = Transformed(base, t)
    out, label = dataset[(2, 77)]
    assert label == 2
    assert torch.equal(out, t(images[2], 77))
    assert torch.equal(out, Transformed(base, transform())[(2, 77)][0])


def test_test_transform_rescales_to_q_and_subtracts_mean():
    image = random_image(60, 90)
    out = transforms.TestTransform(48, MEAN)(image)
    assert out.shape == (3, 48, 72)
    torch.testing.assert_close(out, rescale(image, 48) - torch.tensor(MEAN)[:, None, None])


def test_centre_crop():
    image = torch.arange(3 * 6 * 8).reshape(3, 6, 8)
    out = centre_crop(image, 4)
    assert torch.equal(out, image[:, 1:5, 2:6])


# The batched path resamples by matrix products where `rescale` runs F.interpolate's two passes:
# the same bilinear (antialiased when shrinking) weights summed in another order, so pixels in
# [0, 255] differ by float32 rounding only (measured: at most 9e-4), never by a pixel's worth.
ROUNDING = 2e-3


@pytest.mark.parametrize("height, width", [(40, 56), (56, 40), (64, 64), (30, 30)])
def test_batched_augmentation_equals_the_per_image_path_for_the_same_draws(height, width):
    # S in [36, 64] both shrinks and enlarges a 40 x 56 image; 64 x 64 only shrinks; 30 x 30 only enlarges.
    t = transform()
    images = torch.stack([random_image(height, width, seed=i) for i in range(48)])
    seeds = list(range(500, 548))
    batch = t.batch(images, seeds)
    assert batch.shape == (48, 3, CROP, CROP) and batch.dtype == torch.float32
    mean = torch.tensor(MEAN)[:, None, None]
    draws = [t.draw(seed, height, width) for seed in seeds]
    for image, out, (scale, top, left, flip, alphas) in zip(images, batch, draws):
        # The per-image reference written out from the draws: rescale, crop, flip, colour, mean.
        expected = rescale(image, scale)[:, top:top + CROP, left:left + CROP]
        expected = expected.flip(-1) if flip else expected
        expected = expected + colour_shift(alphas, t.eigval, t.eigvec)[:, None, None] - mean
        torch.testing.assert_close(out, expected, atol=ROUNDING, rtol=0)
    for i, seed in enumerate(seeds[:8]):
        torch.testing.assert_close(batch[i], t(images[i], seed), atol=ROUNDING, rtol=0)
    assert len({d[0] for d in draws}) > 10 and 0 < sum(d[3] for d in draws) < len(draws)


def test_an_image_gets_the_same_pixels_in_any_batch():
    # Draws are a function of the seed alone (resume and DDP exactness): an image's output does
    # not depend on the other images of its batch or their order.
    t = transform()
    images = torch.stack([random_image(40, 56, seed=i) for i in (0, 0, 2, 3, 4, 5)])
    seeds = [3, 3, 10, 11, 12, 400]
    batch = t.batch(images, seeds)
    torch.testing.assert_close(batch[[4, 0]], t.batch(images[[4, 0]], [12, 3]), atol=ROUNDING, rtol=0)
    torch.testing.assert_close(batch[0], batch[1], atol=0, rtol=0)  # same image, same seed

    base = ImageSet({"kind": "tensor", "images": images, "labels": torch.arange(6), "classes": list("abcdef")})
    dataset = Transformed(base, t)
    keys = [(5, 1), (0, 2), (5, 1), (3, 9)]
    together, labels = next(dataset.batches([keys], torch.device("cpu")))
    assert labels.tolist() == [5, 0, 5, 3]
    for out, key in zip(together, keys):
        torch.testing.assert_close(out, dataset[key][0], atol=ROUNDING, rtol=0)


def test_pixels_scale_paper_units_to_the_crop():
    assert pixels(256, 224) == 256
    assert [pixels(q, 28) for q in (224, 256, 384, 512)] == [28, 32, 48, 64]  # README's table
    assert pixels(256, 32) == 37  # 256 * 32 / 224 = 36.57
    assert pixels(100, 64) == 64  # never smaller than the crop


def test_an_epoch_copies_to_the_device_once_not_at_every_batch(monkeypatch):
    # On a GPU a copy from host memory synchronises the stream (vgg.device.to_device): a copy per
    # batch made the host wait for each step before queuing the next. "meta" stands in for the
    # GPU: every CPU -> device copy is counted, over an epoch of 2 and of 6 batches (after a first
    # epoch, which also copies the images, resize matrices and colour constants, once for all).
    copies = []
    plain_to = torch.Tensor.to

    def counting_to(tensor, *args, **kwargs):
        out = plain_to(tensor, *args, **kwargs)
        if tensor.device.type == "cpu" and out.device.type == "meta":
            copies.append(tuple(tensor.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    images = torch.stack([random_image(40, 56, seed=i) for i in range(12)])
    dataset = Transformed(ImageSet({"kind": "tensor", "images": images, "labels": torch.arange(12),
                                    "classes": list("abcdefghijkl")}), transform())
    counts = []
    for n_batches in (1, 2, 6):
        copies.clear()
        keys = [[(i, 100 * b + i) for i in range(b % 3, 12, 3)] for b in range(n_batches)]
        out = list(dataset.batches(keys, torch.device("meta")))
        assert [tuple(x.shape) for x, _ in out] == [(4, 3, CROP, CROP)] * n_batches
        assert all(y.device.type == "meta" for _, y in out)
        counts.append(len(copies))
    assert counts[1] == counts[2], f"copies grow with the batches: {counts}"
