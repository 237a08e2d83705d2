"""The test-time protocols of §3.2 and §4.1-4.3, and the posterior file the `evaluate` stage writes."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

import stages.evaluate
from vgg import evaluate as E
from vgg import data, io, models
from vgg.data import ImageSet
from vgg.transforms import pixels, rescale

CROP = 28
MEAN = [120.0, 110.0, 100.0]
KWARGS = {"width": 1 / 16, "fc_width": 32, "num_classes": 10, "crop": CROP, "dropout": 0.5}


def tiny_model(net="D", seed=0):
    torch.manual_seed(seed)
    model = models.build_model(net, **KWARGS)
    # Glorot so the tiny net's scores are not all ~0 (posteriors would be uniform, hiding errors).
    return models.initialise(model, "glorot").eval()


def tensor_set(n, size=CROP, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageSet({"kind": "tensor", "images": images, "labels": torch.arange(n) % 10,
                     "classes": [str(c) for c in range(10)]})


def files_set(root, sizes, seed=0):
    """An ImageFolder-like split of PNGs of different sizes (H, W)."""
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
        paths.append(f"{i}.png")
    return ImageSet({"kind": "files", "root": str(root), "paths": paths,
                     "labels": torch.arange(len(sizes)) % 10, "classes": [str(c) for c in range(10)]})


def one_image(dataset, i):
    return ImageSet({"kind": "tensor", "images": dataset.image(i)[None], "labels": dataset.labels[i:i + 1],
                     "classes": dataset.classes})


def test_test_scales_follow_the_paper():
    # §4.1 and §4.2: Q = S and {S - 32, S, S + 32}; jittered: 0.5 (Smin + Smax) and {Smin, middle, Smax}.
    assert E.test_scales(256, 256, 32) == [224, 256, 288]
    assert E.test_scales(384, 384, 32) == [352, 384, 416]
    assert E.test_scales(256, 512, 32) == [256, 384, 512]
    assert E.test_scales(256, 256, offset=64) == [192, 256, 320]


def test_dense_at_crop_size_equals_forward():
    model, dataset = tiny_model(), tensor_set(6)
    got = E.dense_evaluate(model, dataset, CROP, MEAN, batch_size=8, device="cpu")
    x = dataset.split["images"].float() - torch.tensor(MEAN)[:, None, None]
    with torch.no_grad():
        expected = (F.softmax(model(x), 1) + F.softmax(model(x.flip(-1)), 1)) / 2
    assert got.dtype == torch.float32 and got.shape == (6, 10)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, torch.full_like(got, 0.1), atol=1e-3)


def test_score_map_grid_is_centred_on_the_image():
    # Full scale: a 384 x 500 ILSVRC image loses 500 mod 32 = 20 columns to the pooling grid,
    # 10 of them on the left (here) and 10 on the right (by floor-mode pooling).
    assert E.centre_on_pooling_grid(torch.zeros(1, 3, 384, 500), 32).shape[-2:] == (384, 500 - 10)
    assert E.centre_on_pooling_grid(torch.zeros(1, 3, 55, 73), 32).shape[-2:] == (55 - 11, 73 - 4)
    # The default (stride 4): every Q in pixels is a multiple of 4, nothing is dropped.
    assert E.centre_on_pooling_grid(torch.zeros(1, 3, 48, 64), 4).shape[-2:] == (48, 64)


def test_dense_averages_the_class_score_map_over_a_larger_image():
    model, dataset = tiny_model(), tensor_set(2, size=28)
    got = E.dense_evaluate(model, dataset, 34, MEAN, batch_size=4, device="cpu")
    x = torch.stack([rescale(dataset.image(i), 34) for i in range(2)]) - torch.tensor(MEAN)[:, None, None]
    x = x[..., 1:, 1:]  # 34 = 8 x 4 + 2: the pooling grid is centred, 1 row/column before it
    with torch.no_grad():
        score_map = model.forward_dense(x)
        flipped = model.forward_dense(x.flip(-1))
    assert score_map.shape[-2:] == (2, 2)  # a map, not one score: §3.2 averages it
    expected = (F.softmax(score_map.mean((2, 3)), 1) + F.softmax(flipped.mean((2, 3)), 1)) / 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_dense_handles_images_of_different_sizes(tmp_path):
    sizes = [(40, 56), (48, 32), (40, 56), (33, 47), (48, 32), (40, 56)]
    model, dataset = tiny_model(), files_set(tmp_path, sizes)
    batches = []
    dense = model.forward_dense
    model.forward_dense = lambda x: batches.append(tuple(x.shape)) or dense(x)
    got = E.dense_evaluate(model, dataset, 36, MEAN, batch_size=16, device="cpu")
    # Equal sizes share a forward pass (each image with its flip): 3 of one size, 2, 1.
    assert sorted(b[0] for b in batches) == [2, 4, 6]
    model.forward_dense = dense
    for i in range(len(sizes)):
        alone = E.dense_evaluate(model, one_image(dataset, i), 36, MEAN, batch_size=16, device="cpu")
        torch.testing.assert_close(got[i], alone[0], rtol=1e-5, atol=1e-6)


def test_dense_bounds_images_held_back_for_a_batch(tmp_path):
    sizes = [(40, 40 + 4 * i) for i in range(8)] + [(40, 40)] * 3  # many distinct shapes
    model, dataset = tiny_model(), files_set(tmp_path, sizes)
    got = E.dense_evaluate(model, dataset, 32, MEAN, batch_size=2, device="cpu")
    for i in (0, 7, 10):
        alone = E.dense_evaluate(model, one_image(dataset, i), 32, MEAN, batch_size=2, device="cpu")
        torch.testing.assert_close(got[i], alone[0], rtol=1e-5, atol=1e-6)


def test_crop_positions_cover_corners_and_centre():
    h, w = 57, 70
    positions = E.crop_positions(h, w, CROP, grid=5)
    assert len(positions) == 25 == len(set(positions))
    corners = {(0, 0), (0, w - CROP), (h - CROP, 0), (h - CROP, w - CROP)}
    assert corners <= set(positions)
    assert ((h - CROP) // 2, (w - CROP) // 2) in positions  # where vgg.transforms.centre_crop cuts
    assert all(0 <= t <= h - CROP and 0 <= left <= w - CROP for t, left in positions)
    steps = {b - a for a, b in zip(sorted({t for t, _ in positions}), sorted({t for t, _ in positions})[1:])}
    assert max(steps) - min(steps) <= 1  # a regular grid, up to rounding
    assert E.crop_positions(CROP, CROP, CROP, grid=3) == [(0, 0)] * 9


def test_multi_crop_at_crop_size_equals_forward():
    model, dataset = tiny_model(), tensor_set(3)
    got = E.multi_crop_evaluate(model, dataset, CROP, MEAN, CROP, batch_size=100, device="cpu", grid=2)
    x = dataset.split["images"].float() - torch.tensor(MEAN)[:, None, None]
    with torch.no_grad():
        expected = (F.softmax(model(x), 1) + F.softmax(model(x.flip(-1)), 1)) / 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_centre_protocol_is_one_centre_crop_without_flip():
    # §4.1 scores B-5x5 against B "on a center crop".
    model, dataset = tiny_model(), tensor_set(2, size=28)
    size = 40
    got = E.evaluate_model(model, dataset, [320], "centre", MEAN, CROP, batch_size=64, device="cpu", grid=5)
    assert pixels(320, CROP) == size
    top = left = (size - CROP) // 2
    for i in range(2):
        image = rescale(dataset.image(i), size) - torch.tensor(MEAN)[:, None, None]
        with torch.no_grad():
            expected = F.softmax(model(image[None, :, top:top + CROP, left:left + CROP]), 1)[0]
        torch.testing.assert_close(got[320][i], expected, rtol=1e-5, atol=1e-6)


def test_150_crops_per_image_over_3_scales():
    # §4.3: "50 crops per scale (5x5 regular grid with 2 flips), for a total of 150 crops over 3 scales".
    model, dataset = tiny_model(), tensor_set(5, size=28)
    rows = []
    model.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].shape[0]))
    scales = E.test_scales(256, 512, 32)
    got = E.evaluate_model(model, dataset, scales, "multi-crop", MEAN, CROP, batch_size=128, device="cpu", grid=5)
    assert sum(rows) == 150 * len(dataset)
    assert max(rows) == 100  # two images' crops per forward pass, not one pass per crop
    assert list(got) == scales and all(p.shape == (5, 10) for p in got.values())


def test_multi_crop_posterior_is_the_mean_over_its_crops():
    model, dataset = tiny_model(), tensor_set(1, size=28)
    size, grid = 40, 3
    got = E.multi_crop_evaluate(model, dataset, size, MEAN, CROP, batch_size=64, device="cpu", grid=grid)
    image = rescale(dataset.image(0), size) - torch.tensor(MEAN)[:, None, None]
    crops = torch.stack([image[:, t:t + CROP, left:left + CROP]
                         for t, left in E.crop_positions(size, size, CROP, grid)])
    with torch.no_grad():
        expected = torch.cat([F.softmax(model(crops), 1), F.softmax(model(crops.flip(-1)), 1)]).mean(0)
    torch.testing.assert_close(got[0], expected, rtol=1e-5, atol=1e-6)


class OneByOne(torch.utils.data.Dataset):
    """`base` seen only through __getitem__: the per-image path that files take."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


@pytest.mark.parametrize("protocol", ["dense", "multi-crop", "centre"])
def test_in_memory_batches_give_the_per_image_paths_posteriors_to_the_bit(tiny_data, protocol):
    # An in-memory split is rescaled a batch at a time; its posteriors must be those of the per-image
    # path on the same real test images, bit for bit: down- (antialiased) and upscaled, several batches
    # and a remainder (64 images: dense 25 + 25 + 14 images a pass, multi-crop 3 a pass).
    test_set = data.load_split(tiny_data / "prepared" / "test.pt")
    assert len(test_set) == 64 and test_set.image(0).shape[-1] == 56
    model = tiny_model("A")
    mean = io.read_json(tiny_data / "mean_rgb.json", "mean")["mean"]
    for q in (256, 384, 512):  # 32, 48, 64 px from the 56-px images
        batched = E.evaluate_model(model, test_set, [q], protocol, mean, CROP, 50 if protocol == "dense" else 150,
                                   "cpu", grid=5)[q]
        alone = E.evaluate_model(model, OneByOne(test_set), [q], protocol, mean, CROP,
                                 50 if protocol == "dense" else 150, "cpu", grid=5)[q]
        assert torch.equal(batched, alone), (protocol, q)
    assert not torch.equal(batched, E.evaluate_model(model, test_set, [384], protocol, mean, CROP, 150, "cpu",
                                                      grid=5)[384])


@pytest.mark.parametrize("protocol", ["dense", "multi-crop"])
def test_posteriors_are_rows_summing_to_one(protocol):
    model, dataset = tiny_model("A"), tensor_set(4, size=28)
    got = E.evaluate_model(model, dataset, [256, 384], protocol, MEAN, CROP, 64, "cpu", grid=3)
    for p in got.values():
        assert p.dtype == torch.float32 and (p >= 0).all()
        torch.testing.assert_close(p.sum(1), torch.ones(4))


def test_evaluate_model_converts_paper_scales_to_pixels():
    model, dataset = tiny_model(), tensor_set(2, size=28)
    got = E.evaluate_model(model, dataset, [256], "dense", MEAN, CROP, 8, "cpu", 5)
    # Q=256 at a 28 crop is round(256 * 28 / 224) = 32 pixels.
    torch.testing.assert_close(got[256], E.dense_evaluate(model, dataset, 32, MEAN, 8, "cpu"))
    with pytest.raises(ValueError, match="protocol"):
        E.evaluate_model(model, dataset, [256], "ten-crop", MEAN, CROP, 8, "cpu", 5)


def test_posterior_file_round_trip_and_errors(tmp_path):
    posteriors = {384: torch.full((3, 10), 0.1), 256: torch.full((3, 10), 0.1)}
    record = E.posterior_record("D_256-512", "D", (256, 512), "dense", posteriors, torch.tensor([1, 2, 3]))
    assert record["scales"] == [256, 384] and record["train_scale"] == "256-512"
    fixed = E.posterior_record("D_256", "D", (256, 256), "dense", posteriors, [1, 2, 3])
    assert fixed["train_scale"] == "256" and fixed["labels"].dtype == torch.int64
    io.atomic_save(record, tmp_path / "ok.pt")
    assert E.load_posteriors(tmp_path / "ok.pt")["labels"].dtype == torch.int64
    with pytest.raises(io.StageError, match="missing.pt: posterior file not found"):
        E.load_posteriors(tmp_path / "missing.pt")
    broken = {**record, "posteriors": {256: posteriors[256]}}
    io.atomic_save(broken, tmp_path / "broken.pt")
    with pytest.raises(io.StageError, match="broken.pt: invalid posterior file"):
        E.load_posteriors(tmp_path / "broken.pt")


def stage_inputs(root, train_scale=(256, 512), n=6):
    model = tiny_model()
    io.atomic_save(models.model_record(model, KWARGS, schedule="jitter", train_scale=train_scale),
                   root / "D_256-512.pt")
    images = torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8)
    io.atomic_save({"kind": "tensor", "images": images, "labels": torch.arange(n) % 10,
                    "classes": [str(c) for c in range(10)]}, root / "test.pt")
    (root / "mean_rgb.json").write_text(json.dumps({"mean": MEAN}))
    params = {"model": {"width": 0.0625, "fc_width": 32, "crop": CROP, "num_classes": 10, "lrn_size": 5,
                        "lrn_alpha": 0.0001, "lrn_beta": 0.75, "lrn_k": 2.0},
              "evaluate": {"batch_size": 64, "scale_offset": 32, "grid": 5,
                           "num_workers": 0, "bf16": False}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--params", str(root / "params.yaml"), "--model", str(root / "D_256-512.pt"),
            "--test", str(root / "test.pt"), "--mean-rgb", str(root / "mean_rgb.json")]


@pytest.mark.parametrize("protocol", ["dense", "multi-crop"])
def test_stage_writes_the_posterior_contract(tmp_path, capsys, protocol):
    args = stage_inputs(tmp_path)
    out = tmp_path / "preds" / "D_256-512" / f"{protocol}.pt"
    stages.evaluate.main(args + ["--protocol", protocol, "--out", str(out)])
    record = E.load_posteriors(out)
    assert list(record) == list(E.RECORD_KEYS)
    assert (record["run"], record["net"], record["train_scale"], record["protocol"]) == \
        ("D_256-512", "D", "256-512", protocol)
    assert record["scales"] == [256, 384, 512]
    assert torch.equal(record["labels"], torch.arange(6) % 10)
    assert all(p.shape == (6, 10) for p in record["posteriors"].values())
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "Q=384" in summary and "images/s" in summary


def test_stage_reports_bad_input_in_one_line(tmp_path, capsys):
    args = stage_inputs(tmp_path)
    out = tmp_path / "dense.pt"
    missing = ["--test", str(tmp_path / "x.pt")]
    with pytest.raises(SystemExit) as info:
        stages.evaluate.main([*args, *missing, "--protocol", "dense", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.pt: prepared split not found" in err
    assert not out.exists()
