"""Datasets (§3.1's held-out validation, ILSVRC-style trees, Fashion-MNIST) and §2.1's RGB statistics."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import stages.prepare
from vgg import data, io
from vgg.io import StageError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (make setup installs dataset-fashion-mnist)")

# Deliberately not in sorted order: labels must follow the sorted class names.
CLASSES = ("cat", "ant", "bee")
SIZES = [(40, 30), (24, 50), (33, 33), (64, 20)]  # (width, height): landscape, portrait, square


def write_image(path, size, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    w, h = size
    array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_imagefolder(root, classes=CLASSES, n_train=4, n_val=2):
    """root/{train,val}/<class>/*.JPEG, sizes cycling through SIZES; one greyscale JPEG per class."""
    seed = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for name in classes:
            for i in range(n):
                mode = "L" if i == 1 else "RGB"
                write_image(root / split / name / f"{name}_{i}.JPEG", SIZES[(i + seed) % len(SIZES)], seed, mode)
                seed += 1
    return root


def data_section(root, **overrides):
    return {"dataset": "imagefolder", "root": str(root), "val_size": 3, "seed": 0,
            "object_scale": [1.0, 1.0], "object_spread": 1.0, "canvas": 28, "train_limit": 0, "test_limit": 0,
            "verify_images": True, "box_dir": "", **overrides}


def write_params(path, data_params):
    path.write_text(yaml.safe_dump({"data": data_params}))
    return str(path)


def test_prepare_imagefolder_splits(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    store, meta = data.prepare(data_section(root))

    assert meta["classes"] == ["ant", "bee", "cat"]
    assert meta["sizes"] == {"train": 9, "val": 3, "test": 6}
    for split in data.SPLITS:
        assert store[split]["kind"] == "files"
        assert store[split]["classes"] == ["ant", "bee", "cat"]
        assert len(store[split]["paths"]) == len(store[split]["labels"]) == meta["sizes"][split]
        # Labels by sorted class name: the class directory of each path is classes[label].
        for path, label in zip(store[split]["paths"], store[split]["labels"].tolist()):
            assert Path(path).parts[1] == meta["classes"][label]

    # val is held out of train/, test is the val/ tree.
    train, val, test = (set(store[s]["paths"]) for s in data.SPLITS)
    all_train = {str(p.relative_to(root)) for p in (root / "train").rglob("*.JPEG")}
    assert train | val == all_train
    assert not train & val
    assert test == {str(p.relative_to(root)) for p in (root / "val").rglob("*.JPEG")}
    assert store["test"]["labels"].tolist() == [0, 0, 1, 1, 2, 2]


def test_prepare_imagefolder_val_size_and_seed(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    store, meta = data.prepare(data_section(root, val_size=5))
    assert meta["sizes"] == {"train": 7, "val": 5, "test": 6}
    again, _ = data.prepare(data_section(root, val_size=5))
    assert again["val"]["paths"] == store["val"]["paths"]
    other = [data.prepare(data_section(root, val_size=5, seed=s))[0]["val"]["paths"] for s in range(1, 4)]
    assert any(paths != store["val"]["paths"] for paths in other)
    with pytest.raises(StageError, match="data.val_size"):
        data.prepare(data_section(root, val_size=12))


def test_prepare_imagefolder_limits(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    store, meta = data.prepare(data_section(root, train_limit=8, test_limit=4, val_size=2))
    assert meta["sizes"] == {"train": 6, "val": 2, "test": 4}
    # The tree lists class by class; the subset still holds every class.
    assert sorted(set(store["train"]["labels"].tolist() + store["val"]["labels"].tolist())) == [0, 1, 2]
    assert sorted(set(store["test"]["labels"].tolist())) == [0, 1, 2]


def test_imageset_image_is_uint8_rgb_of_the_file_size(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    store, _ = data.prepare(data_section(root))
    for split in data.SPLITS:
        images = data.ImageSet(store[split])
        assert len(images) == len(store[split]["labels"])
        for i in range(len(images)):
            image, label = images[i]
            with Image.open(root / store[split]["paths"][i]) as im:
                width, height = im.size
                expected = np.asarray(im.convert("RGB"))
            assert image.dtype == torch.uint8
            assert image.shape == (3, height, width)
            assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
            assert label == int(store[split]["labels"][i])


def test_greyscale_jpeg_becomes_three_equal_channels(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    store, _ = data.prepare(data_section(root))
    images = data.ImageSet(store["test"])
    grey = [i for i, p in enumerate(store["test"]["paths"]) if p.endswith("_1.JPEG")]
    assert grey
    for i in grey:
        image = images.image(i)
        assert image.shape[0] == 3
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_stored_splits_round_trip_through_the_prepare_stage(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "ilsvrc")
    params = write_params(tmp_path / "params.yaml", data_section(root))
    out = tmp_path / "prepared"
    stages.prepare.main(["--params", params, "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.pt", "train.pt", "val.pt"]
    assert io.read_json(out / "meta.json")["sizes"] == {"train": 9, "val": 3, "test": 6}
    train = data.load_split(out / "train.pt")
    assert len(train) == 9 and train.image(0).dtype == torch.uint8
    # A second run replaces the output and leaves no temp files beside it.
    stages.prepare.main(["--params", params, "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ilsvrc", "params.yaml", "prepared"]
    assert "train 9, val 3, test 6" in capsys.readouterr().out


def _corrupt(path, how):
    if how == "garbage":
        path.write_bytes(b"this is not a JPEG at all \x00\x01\x02" * 10)
    else:  # a real JPEG cut in half
        write_image(path, (64, 64), 99)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_image_is_an_error_naming_the_file(tmp_path, how):
    root = make_imagefolder(tmp_path / "ilsvrc")
    bad = root / "train" / "bee" / "broken.JPEG"
    _corrupt(bad, how)
    with pytest.raises(StageError) as info:
        data.prepare(data_section(root))
    assert str(bad) in str(info.value)
    assert "corrupt" in str(info.value)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_image_stops_the_prepare_stage_without_partial_outputs(tmp_path, capsys, how):
    root = make_imagefolder(tmp_path / "ilsvrc")
    bad = root / "val" / "cat" / "broken.JPEG"
    _corrupt(bad, how)
    params = write_params(tmp_path / "params.yaml", data_section(root))
    out = tmp_path / "prepared"
    with pytest.raises(SystemExit) as info:
        stages.prepare.main(["--params", params, "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert str(bad) in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ilsvrc", "params.yaml"]  # no .prepared.* temp dir


def test_corrupt_image_unverified_fails_when_read(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    bad = root / "train" / "ant" / "broken.JPEG"
    _corrupt(bad, "garbage")
    store, meta = data.prepare(data_section(root, verify_images=False, val_size=1))
    split = "train" if "train/ant/broken.JPEG" in store["train"]["paths"] else "val"
    images = data.ImageSet(store[split])
    with pytest.raises(StageError, match="broken.JPEG"):
        for i in range(len(images)):
            images.image(i)


def test_missing_root_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(StageError) as info:
        data.prepare(data_section(missing))
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split_directory_is_an_error_naming_it(tmp_path, split):
    root = make_imagefolder(tmp_path / "ilsvrc")
    for path in sorted((root / split).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / split).rmdir()
    with pytest.raises(StageError) as info:
        data.prepare(data_section(root))
    assert str(info.value).startswith(f"{root / split}:")


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_class_directory_is_an_error_naming_it(tmp_path, split):
    root = make_imagefolder(tmp_path / "ilsvrc")
    for path in (root / split / "bee").iterdir():
        path.unlink()
    (root / split / "bee" / "notes.txt").write_text("not an image")
    with pytest.raises(StageError) as info:
        data.prepare(data_section(root))
    assert str(info.value).startswith(f"{root / split / 'bee'}:")
    assert "empty class" in str(info.value)


def test_val_classes_must_match_train(tmp_path):
    root = make_imagefolder(tmp_path / "ilsvrc")
    write_image(root / "val" / "dog" / "dog_0.JPEG", (20, 20), 5)
    with pytest.raises(StageError) as info:
        data.prepare(data_section(root))
    assert str(root / "val") in str(info.value) and "dog" in str(info.value)


def test_train_without_class_directories_is_an_error(tmp_path):
    (tmp_path / "ilsvrc" / "train").mkdir(parents=True)
    (tmp_path / "ilsvrc" / "val").mkdir()
    with pytest.raises(StageError, match="no class directories"):
        data.prepare(data_section(tmp_path / "ilsvrc"))


# Fashion-MNIST ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_mnist():
    return data.load_fashion_mnist(FASHION_MNIST)


def fashion_section(**overrides):
    return {"dataset": "fashion_mnist", "root": str(FASHION_MNIST), "val_size": 50, "seed": 0,
            "object_scale": [0.5, 1.0], "object_spread": 1.0, "canvas": 28, "train_limit": 300, "test_limit": 100, "verify_images": True, **overrides}


@needs_fashion_mnist
def test_load_fashion_mnist(fashion_mnist):
    assert set(fashion_mnist) == {"train", "test"}
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = fashion_mnist[split]
        assert images.shape == (n, 3, 28, 28)
        assert images.dtype == torch.uint8
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
        assert labels.shape == (n,)
        assert labels.unique().tolist() == list(range(10))
        assert labels.bincount().tolist() == [n // 10] * 10  # balanced classes
        assert images.float().std() > 10


@needs_fashion_mnist
def test_prepare_fashion_mnist_splits(fashion_mnist):
    store, meta = data.prepare(fashion_section(object_scale=[1.0, 1.0]))
    assert meta["sizes"] == {"train": 250, "val": 50, "test": 100}
    assert meta["classes"] == list(data.FASHION_MNIST_CLASSES)
    assert meta["source"] == "Fashion-MNIST"

    # train + val are the stratified 300 of the 60k, test the stratified 100 of the 10k, unchanged.
    raw_images, raw_labels = fashion_mnist["train"]
    chosen = data.limit(raw_labels, 300, 0)
    assert raw_labels[chosen].bincount().tolist() == [30] * 10
    index = {raw_images[i].numpy().tobytes(): int(i) for i in chosen}
    train_idx = [index[im.numpy().tobytes()] for im in store["train"]["images"]]
    val_idx = [index[im.numpy().tobytes()] for im in store["val"]["images"]]
    assert not set(train_idx) & set(val_idx)
    assert sorted(train_idx + val_idx) == chosen.tolist()
    assert store["train"]["labels"].tolist() == raw_labels[train_idx].tolist()
    assert store["val"]["labels"].tolist() == raw_labels[val_idx].tolist()

    test_images, test_labels = fashion_mnist["test"]
    test_idx = data.limit(test_labels, 100, 1)
    assert torch.equal(store["test"]["images"], test_images[test_idx])
    assert torch.equal(store["test"]["labels"], test_labels[test_idx])
    assert torch.equal(store["test"]["boxes"], data.tight_boxes(test_images[test_idx]))
    image, label = data.ImageSet(store["val"])[0]
    assert image.shape == (3, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10


@needs_fashion_mnist
def test_scale_varied_fashion_mnist_shrinks_and_moves_each_garment_inside_its_box(fashion_mnist):
    images = fashion_mnist["test"][0][:2000]
    out, boxes = data.scale_objects(images, [0.5, 1.0], seed=3)
    assert out.shape == images.shape and out.dtype == torch.uint8
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 28).all() and (y1 <= 28).all()
    # Every lit pixel lies inside its image's box, and the box is tight: each side touches one.
    mask = out.amax(1) > 0
    cols, rows = torch.arange(28)[None, None, :], torch.arange(28)[None, :, None]
    inside = ((cols >= x0[:, None, None]) & (cols < x1[:, None, None])
              & (rows >= y0[:, None, None]) & (rows < y1[:, None, None]))
    assert not (mask & ~inside).any()
    assert mask[torch.arange(len(out)), y0].any() and mask[torch.arange(len(out)), y1 - 1].any()
    assert (mask.any(1)[torch.arange(len(out)), x0]).all() and (mask.any(1)[torch.arange(len(out)), x1 - 1]).all()
    # Box sides shrink by factors in [0.5, 1], spread over the whole range (log-uniform: median ~0.71).
    ratio = (x1 - x0).double() / (data.tight_boxes(images)[:, 2] - data.tight_boxes(images)[:, 0])
    assert ratio.min() > 0.4 and ratio.max() < 1.2  # antialiasing may light a pixel beyond the shrunk box
    assert 0.62 < ratio.median() < 0.8
    # Objects at many places: the box centres spread over the canvas.
    assert ((x0 + x1) / 2).double().std() > 2
    again, boxes_again = data.scale_objects(images, [0.5, 1.0], seed=3)
    assert torch.equal(again, out) and torch.equal(boxes_again, boxes)
    assert not torch.equal(data.scale_objects(images, [0.5, 1.0], seed=4)[0], out)


@needs_fashion_mnist
def test_object_scale_1_is_plain_fashion_mnist(fashion_mnist):
    images = fashion_mnist["train"][0][:500]
    out, boxes = data.scale_objects(images, [1.0, 1.0], seed=0)
    assert torch.equal(out, images)
    assert torch.equal(boxes, data.tight_boxes(images))


@needs_fashion_mnist
def test_larger_canvas_keeps_garments_at_native_size_near_the_centre(fashion_mnist):
    images = fashion_mnist["test"][0][:2000]
    native = data.tight_boxes(images)
    out, boxes = data.scale_objects(images, [0.35, 0.7], seed=5, canvas=56, spread=0.5)
    assert out.shape == (2000, 3, 56, 56)
    assert torch.equal(boxes, data.tight_boxes(out))
    # Side = factor x 56 px, factor in [0.35, 0.7]: 20-39 px frames, so a garment's box is
    # 0.7-1.4 of its 28-px original's (interpolation may light one more pixel on a narrow one).
    ratio = (boxes[:, 2] - boxes[:, 0]).double() / (native[:, 2] - native[:, 0])
    assert ratio.min() > 0.6 and ratio.max() < 1.7 and 0.9 < ratio.median() < 1.1
    assert (ratio > 1.45).float().mean() < 0.05
    # spread 0.5: each frame's top-left corner in the middle half of its free space, so every
    # box centre is within a quarter of the canvas of the middle, and they do vary.
    centre = (boxes[:, :2] + boxes[:, 2:]).double() / 2
    assert ((centre - 28).abs() <= 14 + 1).all()
    assert centre.std(0).min() > 2
    anywhere = data.tight_boxes(data.scale_objects(images, [0.35, 0.7], seed=5, canvas=56, spread=1.0)[0])
    assert ((anywhere[:, :2] + anywhere[:, 2:]).double() / 2 - 28).abs().max() > 16
    # Factor 1 on a 56-px canvas: the garment upsampled 2x, filling it as plain Fashion-MNIST does.
    whole, whole_boxes = data.scale_objects(images[:50], [1.0, 1.0], seed=0, canvas=56)
    assert torch.equal(whole_boxes, native[:50] * 2) or (whole_boxes - native[:50] * 2).abs().max() <= 1


def test_limit_takes_a_seeded_class_stratified_subset():
    # Sorted by class, as an ImageFolder list is: the first 10 would all be class 0.
    labels = torch.arange(5).repeat_interleave(20)
    chosen = data.limit(labels, 10, seed=0)
    assert labels[chosen].bincount().tolist() == [2] * 5
    assert chosen.tolist() == sorted(chosen.tolist())
    assert not torch.equal(chosen, data.limit(labels, 10, seed=1))
    assert torch.equal(chosen, data.limit(labels, 10, seed=0))
    assert len(data.limit(labels, 7, seed=0).unique()) == 7
    assert torch.equal(data.limit(labels, 0, seed=0), torch.arange(100))


@needs_fashion_mnist
def test_fashion_mnist_validation_split_is_set_by_the_seed():
    first, _ = data.prepare(fashion_section())
    again, _ = data.prepare(fashion_section())
    other, _ = data.prepare(fashion_section(seed=1))
    assert torch.equal(first["val"]["images"], again["val"]["images"])
    assert torch.equal(first["train"]["images"], again["train"]["images"])
    assert not torch.equal(first["val"]["images"], other["val"]["images"])
    # The seed also draws each garment's scale and place, so the derived test set changes with it.
    assert torch.equal(first["test"]["labels"].bincount(), other["test"]["labels"].bincount())


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = data.read_idx(write_idx(tmp_path / name, array))
    assert out.dtype == torch.uint8
    assert np.array_equal(out.numpy(), array)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_truncated_file_is_an_error_naming_it(tmp_path, name):
    path = write_idx(tmp_path / name, np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(StageError) as info:
        data.read_idx(path)
    assert str(info.value).startswith(f"{path}:")


@pytest.mark.parametrize("payload", [b"\x00", b"\x00\x00\x0d\x03" + b"\x00" * 12, b"\x12\x34\x08\x01\x00\x00\x00\x00"])
def test_read_idx_bad_header_is_an_error_naming_the_file(tmp_path, payload):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(StageError, match="labels-idx1-ubyte"):
        data.read_idx(path)


@needs_fashion_mnist
def test_read_idx_truncated_real_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()[:1000])
    with pytest.raises(StageError, match=str(path)):
        data.read_idx(path)


def test_missing_fashion_mnist_file_is_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((2,), np.uint8))
    with pytest.raises(StageError, match="t10k-images-idx3-ubyte: Fashion-MNIST file missing"):
        data.load_fashion_mnist(tmp_path)


# §2.1: mean RGB and the PCA of RGB pixel values ------------------------------------------------


def tensor_split(images):
    return {"kind": "tensor", "images": images, "labels": torch.zeros(len(images), dtype=torch.long),
            "classes": ["x"]}


def test_rgb_statistics_of_constant_channels():
    images = torch.empty(4, 3, 5, 6, dtype=torch.uint8)
    images[:, 0], images[:, 1], images[:, 2] = 10, 100, 200
    stats = data.rgb_statistics(data.ImageSet(tensor_split(images)))
    assert stats["mean"] == pytest.approx([10, 100, 200])
    assert stats["eigval"] == pytest.approx([0, 0, 0], abs=1e-6)
    assert stats["images"] == 4 and stats["pixels"] == 4 * 5 * 6


def test_rgb_statistics_match_numpy():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 1, 8, 9))
    noise = rng.normal(size=(30, 3, 8, 9))
    # Correlated channels with different spreads and means.
    pixels = np.concatenate([100 + 40 * base + 5 * noise[:, :1],
                             60 + 20 * base + 15 * noise[:, 1:2],
                             180 - 10 * base + 30 * noise[:, 2:]], axis=1)
    images = torch.from_numpy(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    stats = data.rgb_statistics(data.ImageSet(tensor_split(images)))

    flat = images.numpy().transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    mean = flat.mean(1)
    cov = np.cov(flat, bias=True)
    eigval, eigvec = np.array(stats["eigval"]), np.array(stats["eigvec"])
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-10)
    np.testing.assert_allclose(eigvec @ np.diag(eigval) @ eigvec.T, cov, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-10)  # orthonormal columns
    assert list(eigval) == sorted(eigval, reverse=True)
    np.testing.assert_allclose(eigval, np.linalg.eigvalsh(cov)[::-1], rtol=1e-8)
    # Columns are eigenvectors: cov @ p_i = lambda_i p_i.
    for i in range(3):
        np.testing.assert_allclose(cov @ eigvec[:, i], eigval[i] * eigvec[:, i], atol=1e-8)


def test_rgb_statistics_max_images_takes_evenly_spaced_images():
    images = torch.stack([torch.full((3, 2, 2), 10 * i, dtype=torch.uint8) for i in range(5)])
    stats = data.rgb_statistics(data.ImageSet(tensor_split(images)), max_images=2)
    assert stats["images"] == 2 and stats["pixels"] == 2 * 4
    assert stats["mean"] == pytest.approx([20, 20, 20])  # images 0 and 4
    stats = data.rgb_statistics(data.ImageSet(tensor_split(images)), max_images=3)
    assert stats["mean"] == pytest.approx([20, 20, 20])  # images 0, 2 and 4
    assert data.rgb_statistics(data.ImageSet(tensor_split(images)), max_images=0)["images"] == 5


def test_rgb_statistics_of_image_files_match_the_decoded_pixels(tmp_path):
    root = tmp_path / "pngs"
    make_imagefolder(root, n_train=3, n_val=1)
    # Lossless PNGs with known content replace the JPEGs of class ant.
    for path in (root / "train" / "ant").iterdir():
        path.unlink()
    write_image(root / "train" / "ant" / "a.png", (7, 5), 1)
    store, _ = data.prepare(data_section(root, val_size=1))
    images = data.ImageSet(store["train"])
    stats = data.rgb_statistics(images)
    pixels = np.concatenate([images.image(i).reshape(3, -1).numpy() for i in range(len(images))], axis=1)
    np.testing.assert_allclose(stats["mean"], pixels.astype(np.float64).mean(1), rtol=1e-10)
    assert stats["pixels"] == pixels.shape[1]


def test_rgb_statistics_of_an_empty_split_is_an_error():
    empty = tensor_split(torch.zeros(0, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(StageError, match="empty"):
        data.rgb_statistics(data.ImageSet(empty))


def test_full_scale_preset_prepares_a_generated_imagefolder_tree(tmp_path, capsys):
    """`make full-scale ROOT=...`: the preset's flags, applied to params.yaml, validate and `prepare`
    reads the tree with them (val_size shrunk to fit 12 training images)."""
    import scripts.preset
    from vgg import params as P
    root = make_imagefolder(tmp_path / "ilsvrc")
    repo = Path(__file__).resolve().parent.parent
    scripts.preset.main([str(repo / "presets" / "ilsvrc2012.yaml"), f"data.root={root}", "data.val_size=3",
                         "--params", str(repo / "params.yaml")])
    flags = capsys.readouterr().out.split()
    assert flags[::2] == ["-S"] * (len(flags) // 2)
    overrides = dict(f.split("=", 1) for f in flags[1::2])
    assert overrides["data.dataset"] == "imagefolder" and overrides["model.crop"] == "224"
    assert overrides["data.root"] == str(root) and overrides["train.epochs"] == "74"
    assert overrides["seeds"] == "[0]"  # a top-level key: one training per net at full scale
    settings = P.apply_overrides(P.load_params(repo / "params.yaml"),
                                 {k: yaml.safe_load(v) for k, v in overrides.items()}, validate=True)
    assert P.section(settings, "model")["num_classes"] == 1000
    store, meta = data.prepare(P.section(settings, "data"))
    assert meta["sizes"] == {"train": 9, "val": 3, "test": 6}
    assert store["train"]["kind"] == "files"


def test_a_preset_override_of_an_unknown_or_bad_key_is_one_line(capsys):
    import scripts.preset
    repo = Path(__file__).resolve().parent.parent
    preset = str(repo / "presets" / "ilsvrc2012.yaml")
    for extra, start in (("train.lrr=0.1", "error: train.lrr: unknown key"),
                         ("train.lr=.inf", "error: train.lr: inf must be a finite number"),
                         ("seeds=[0,0]", "error: seeds: [0, 0] must be a non-empty list"),
                         ("seedz=[0]", "error: seedz: unknown key")):
        with pytest.raises(SystemExit) as info:
            scripts.preset.main([preset, extra, "--params", str(repo / "params.yaml")])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err


def test_manifest_changes_when_an_image_is_added_or_replaced_and_lists_skipped_files(tmp_path, capsys):
    import stages.manifest
    root = make_imagefolder(tmp_path / "ilsvrc")
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image")
    (root / "val" / CLASSES[0] / "anim.gif").write_bytes(b"GIF89a")
    params = write_params(tmp_path / "params.yaml", data_section(root))
    out = tmp_path / "manifest.tsv"

    def listing():
        stages.manifest.main(["--params", params, "--out", str(out)])
        return out.read_text()

    first = listing()
    assert "skipped (not images): 1 .gif, 1 .txt" in capsys.readouterr().out
    assert f"train/{CLASSES[0]}/notes.txt\t12\t" in first and first.count("\tread\n") == len(CLASSES) * (4 + 2)
    assert listing() == first  # nothing changed: same bytes, so DVC re-runs nothing downstream
    write_image(root / "train" / CLASSES[1] / "new.png", (40, 30), seed=99)
    added = listing()
    assert f"train/{CLASSES[1]}/new.png" in added and added != first
    target = root / "val" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
    write_image(target, (50, 50), seed=123)  # replaced: a new size (and mtime)
    assert listing() != added
