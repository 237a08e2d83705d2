"""Appendix A: boxes through the transforms, IoU, greedy merging, the SCR/PCR heads, dense localisation."""
import numpy as np
import pytest
from PIL import Image
import torch
from torchvision.ops import box_convert, box_iou

from vgg import localisation, models
from vgg.data import ImageSet
from vgg.device import bf16_native
from vgg.localisation import boxes_from_crop, boxes_to_crop, greedy_merge, paired_iou
from vgg.transforms import TestTransform as Rescaled, TrainTransform, rescaled_size

MEAN = [0.0, 0.0, 0.0]


def test_box_to_crop_and_back_round_trips_without_flip():
    boxes = torch.tensor([[6.0, 4.0, 20.0, 25.0], [10.0, 10.0, 14.0, 18.0]])
    sizes = torch.tensor([[48, 48], [48, 48]])
    top, left = torch.tensor([5, 9]), torch.tensor([7, 3])
    crop_boxes = boxes_to_crop(boxes, 28, 28, sizes, top, left, torch.tensor([False, False]), 28)
    # x scaled by 48/28, shifted by left; y by top.
    # The whole box, also past the crop's edge (y1 > 28): OverFeat-style regression (App. A).
    assert torch.allclose(crop_boxes[0], torch.tensor([6 * 48 / 28 - 7, 4 * 48 / 28 - 5, 20 * 48 / 28 - 7,
                                                       25 * 48 / 28 - 5], dtype=torch.float64))
    assert crop_boxes[0, 3] > 28
    back = boxes_from_crop(crop_boxes, 28, 28, (48, 48), top, left)
    assert torch.allclose(back, boxes.double())  # a box past the crop's edge round-trips



def test_flip_mirrors_the_box_inside_the_crop():
    box = torch.tensor([[2.0, 3.0, 10.0, 12.0]])
    one = torch.tensor([[28, 28]])
    plain = boxes_to_crop(box, 28, 28, one, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), 28)
    flipped = boxes_to_crop(box, 28, 28, one, torch.tensor([0]), torch.tensor([0]), torch.tensor([True]), 28)
    assert flipped.tolist() == [[28 - 10, 3, 28 - 2, 12]] and plain.tolist() == [[2, 3, 10, 12]]


def bright_rectangle_split(n=8, seed=0):
    """n 28 x 28 images, each black with one white rectangle: the rectangle is the object and its box."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, 28, 28, dtype=torch.uint8)
    boxes = []
    for i in range(n):
        x0, y0 = torch.randint(0, 14, (2,), generator=g).tolist()
        w, h = torch.randint(6, 14, (2,), generator=g).tolist()
        images[i, :, y0:y0 + h, x0:x0 + w] = 255
        boxes.append([x0, y0, x0 + w, y0 + h])
    split = {"kind": "tensor", "images": images, "labels": torch.arange(n) % 3, "boxes": torch.tensor(boxes),
             "classes": ["a", "b", "c"]}
    return split


def test_training_targets_follow_the_crop_flip_and_rescale_of_the_image():
    split = bright_rectangle_split()
    transform = TrainTransform(28, 32, 48, MEAN, [0.0, 0.0, 0.0], torch.eye(3).tolist(), 0.0, True)
    dataset = localisation.BoxTargets(ImageSet(split), transform)
    keys = [(i, 1000 + i) for i in range(len(split["labels"]))]
    images, targets = next(dataset.batches([keys], torch.device("cpu")))
    items = list(zip(images, targets))
    # The batched path gives each item what the per-image path gives it alone.
    for (image, target), key in zip(items[:4], keys):
        one_image, one_target = dataset[key]
        torch.testing.assert_close(image, one_image, atol=2e-3, rtol=0)
        assert torch.equal(target, one_target)
    past_edge = checked = 0
    for (image, target), label in zip(items, split["labels"]):
        assert int(target[0]) == int(label)
        box = localisation.box_convert(target[1:][None].double() * 28, "cxcywh", "xyxy")[0]
        visible = box.clamp(0, 28)
        # No zero-area target, and every crop holds at least a pixel of its object.
        assert target[3] > 0 and target[4] > 0 and (visible[2:] - visible[:2] >= 1 - 1e-9).all(), target
        past_edge += int(((box < -0.5) | (box > 28.5)).any())
        if (visible[2:] - visible[:2] < 2).any():  # a pixel-wide sliver: bilinear edges blur it
            continue
        checked += 1
        # The part of the true box inside the crop is where the bright pixels ended up (bilinear
        # edges: within 1 px); the target is the whole box, past the crop's edges where it extends.
        mask = image.mean(0) > 127.5
        ys, xs = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        seen = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float64)
        assert torch.allclose(visible, seen, atol=1.0), (target, seen)
    assert past_edge >= 1 and checked >= len(items) // 2  # S up to 48 px: some objects pass their crop's edge


def test_a_crop_that_misses_its_object_moves_onto_it_as_little_as_possible():
    sizes = torch.tensor([[48, 48]] * 4)
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0]] * 4)  # (3.4..10.3 px) after the rescale 28 -> 48
    top = torch.tensor([0, 20, 5, 20])
    left = torch.tensor([0, 20, 20, 3])
    new_top, new_left = localisation.crops_meeting_boxes(boxes, 28, 28, sizes, top, left, 28)
    assert new_top.tolist() == [0, 9, 5, 9] and new_left.tolist() == [0, 9, 9, 3]  # floor(10.29 - 1)
    far = torch.tensor([[20.0, 20.0, 26.0, 26.0]])  # 34.3..44.6 px: a crop at 0 ends before it
    assert localisation.crops_meeting_boxes(far, 28, 28, sizes[:1], torch.tensor([0]), torch.tensor([0]),
                                            28) == (torch.tensor([8]), torch.tensor([8]))  # ceil(35.3) - 28
    # Each moved crop now holds part of the box; an overlapping one did not move.
    crop_boxes = boxes_to_crop(boxes, 28, 28, sizes, new_top, new_left, torch.zeros(4, dtype=torch.bool), 28)
    assert ((crop_boxes[:, 2] >= 1) & (crop_boxes[:, 0] <= 27) & (crop_boxes[:, 3] >= 1) & (crop_boxes[:, 1] <= 27)).all()


def test_paired_iou_matches_torchvision_and_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert paired_iou(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    assert torch.allclose(paired_iou(a[:3], b[:3]), box_iou(a[:3], b[:3]).diagonal())


def test_greedy_merge_averages_close_boxes_and_keeps_far_ones_apart():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 50]]
    merged, scores = greedy_merge(boxes, [0.2, 0.3, 0.4], merge_iou=0.5)
    assert len(merged) == 2
    assert np.allclose(merged[0], [0.5, 0.5, 10.5, 10.5]) and scores[0] == pytest.approx(0.5)  # best first
    assert np.allclose(merged[1], [40, 40, 50, 50]) and scores[1] == pytest.approx(0.4)
    far, _ = greedy_merge([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1], merge_iou=0.5)
    assert len(far) == 2
    # A merged box counts its members: a third close box moves the mean by a third, not a half.
    three, s3 = greedy_merge([[0, 0, 10, 10], [0, 0, 10, 10], [3, 0, 13, 10]], [1, 1, 1], merge_iou=0.5)
    assert np.allclose(three[0], [1, 0, 11, 10]) and s3[0] == 3


@pytest.mark.parametrize("regression, outputs", [("SCR", 4), ("PCR", 40)])
def test_scr_and_pcr_heads(regression, outputs):
    net = models.build_model("A", width=0.0625, fc_width=32, num_classes=10, crop=28)
    loc = localisation.localisation_net(net, regression, 10, 0.01, torch.Generator().manual_seed(0))
    assert loc.classifier[6].out_features == outputs
    assert loc(torch.zeros(2, 3, 28, 28)).shape == (2, outputs)
    # Every layer but the last is the classification net's.
    assert torch.equal(loc.classifier[3].weight, net.classifier[3].weight)
    assert torch.equal(loc.features[0].weight, net.features[0].weight)
    localisation.freeze_for(loc, "fc")
    loss = localisation.box_loss(loc(torch.randn(2, 3, 28, 28)), torch.tensor([[3, .5, .5, .2, .2]] * 2), regression)
    loss.backward()
    assert loc.features[0].weight.grad is None and loc.classifier[0].weight.grad is not None


def test_pcr_selects_the_true_class_box():
    outputs = torch.arange(2 * 12, dtype=torch.float32).view(2, 12)  # 3 classes x 4
    boxes = localisation.class_boxes(outputs, torch.tensor([2, 0]), "PCR")
    assert boxes.tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]


def test_dense_localisation_equals_the_centre_crop_at_q_equal_crop():
    torch.manual_seed(0)
    net = models.build_model("A", width=0.0625, fc_width=32, num_classes=3, crop=28)
    loc = localisation.localisation_net(net, "PCR", 3, 0.1, torch.Generator().manual_seed(1)).eval()
    dataset = ImageSet(bright_rectangle_split(4))
    dense = localisation.dense_predictions(loc, net.eval(), dataset, 28, MEAN, "PCR", 2, "cpu")
    boxes, scores = torch.stack([b for b, _ in dense]), torch.stack([s for _, s in dense])
    assert boxes.shape == (4, 1, 3, 4) and scores.shape == (4, 1, 3)
    for c in range(3):
        crop = localisation.centre_crop_boxes(loc, dataset, torch.full((4,), c), 28, MEAN, "PCR", 2, "cpu")
        assert torch.allclose(boxes[:, 0, c], crop, atol=1e-4)
    assert torch.allclose(scores.sum(-1), torch.ones(4, 1))


def test_dense_boxes_sit_at_their_window_of_a_larger_image():
    # Q = 36 px, stride 4 (crop 28 keeps 2 pools): a 3 x 3 map of windows 4 px apart; a net whose
    # box output is constant (zero weights, bias = box) must give the same box shifted by each window.
    net = models.build_model("A", width=0.0625, fc_width=32, num_classes=3, crop=28)
    loc = localisation.localisation_net(net, "SCR", 3, 0.1, torch.Generator().manual_seed(1)).eval()
    with torch.no_grad():
        loc.classifier[6].weight.zero_()
        loc.classifier[6].bias.copy_(torch.tensor([0.5, 0.5, 0.25, 0.5]))  # centre of the window
    split = {"kind": "tensor", "images": torch.zeros(1, 3, 28, 28, dtype=torch.uint8), "labels": torch.zeros(1),
             "boxes": torch.zeros(1, 4), "classes": ["a"]}
    boxes = torch.stack([b for b, _ in localisation.dense_predictions(loc, net.eval(), ImageSet(split), 36, MEAN,
                                                                       "SCR", 1, "cpu")])
    assert boxes.shape == (1, 9, 3, 4)
    scale = 28 / 36  # back to the 28-px image
    for cell in range(9):
        i, j = divmod(cell, 3)
        x0, y0 = j * 4 + 14 - 3.5, i * 4 + 14 - 7
        expected = torch.tensor([x0, y0, x0 + 7, y0 + 14]) * scale
        assert torch.allclose(boxes[0, cell, 0], expected, atol=1e-4)


def pcr_net_and_random_images(n):
    """A small net A (3 classes, crop 28), its PCR localisation net and n random 36-px images."""
    torch.manual_seed(0)
    net = models.build_model("A", width=0.0625, fc_width=32, num_classes=3, crop=28)
    loc = localisation.localisation_net(net, "PCR", 3, 0.1, torch.Generator().manual_seed(1)).eval()
    images = torch.randint(0, 256, (n, 3, 36, 36), dtype=torch.uint8)
    split = {"kind": "tensor", "images": images, "labels": torch.zeros(n), "boxes": torch.zeros(n, 4),
             "classes": ["a", "b", "c"]}
    return net, loc, images, split


def test_dense_windows_are_the_crops_the_localisation_net_was_trained_on():
    # At crop 28 a conv unit of A sees more than the crop, so each of the 3 x 3 windows of a 36-px
    # image is cut out and regressed as a crop: its box is the crop's box moved to the window.
    net, loc, images, split = pcr_net_and_random_images(2)
    dense = localisation.dense_predictions(loc, net.eval(), ImageSet(split), 36, MEAN, "PCR", 5, "cpu")
    boxes = torch.stack([b for b, _ in dense])  # 2 x 9 x 3 x 4, image pixels (= input pixels here)
    x = Rescaled(36, MEAN)(images)  # TestTransform (aliased: pytest would collect a Test* class)
    with torch.no_grad():
        fcn = loc.forward_dense(x).view(2, 3, 4, 3, 3)  # the fully convolutional cells, for contrast
        for cell in range(9):
            i, j = divmod(cell, 3)
            out = loc(x[..., 4 * i:4 * i + 28, 4 * j:4 * j + 28]).view(2, 3, 4)
            expected = box_convert(out.double() * 28, "cxcywh", "xyxy") + torch.tensor([4 * j, 4 * i] * 2)
            assert torch.allclose(boxes[:, cell].double(), expected, atol=1e-3)
            if cell != 4:  # off-centre cells of the dense map see past their window's edges
                assert not torch.allclose(fcn[..., i, j], out, atol=1e-3)


@pytest.mark.skipif(not bf16_native("cpu"), reason="this CPU has no native bf16 (oneDNN would emulate it)")
def test_bf16_dense_localisation_keeps_the_fp32_boxes_and_scores_within_bf16_precision():
    # Tables 8-9 are tested under autocast (evaluate.bf16) as the nets were trained: boxes move by
    # bf16's rounding (8-bit mantissa, ~0.4% of a value), a small share of a 28-px crop, not more.
    net, loc, _, split = pcr_net_and_random_images(4)
    runs = [localisation.dense_predictions(loc, net.eval(), ImageSet(split), 36, MEAN, "PCR", 5, "cpu", bf16=b)
            for b in (False, True)]
    (b32, s32), (b16, s16) = ([torch.stack([x[k] for x in run]) for k in (0, 1)] for run in runs)
    assert not torch.equal(b32, b16)  # autocast did run in bf16
    assert (b32 - b16).abs().max() < 0.5 and (s32 - s16).abs().max() < 0.02  # px; posterior
    crops = [localisation.centre_crop_boxes(loc, ImageSet(split), torch.zeros(4, dtype=torch.long), 36, MEAN, "PCR",
                                            2, "cpu", bf16=b) for b in (False, True)]
    assert not torch.equal(*crops) and (crops[0] - crops[1]).abs().max() < 0.5


def test_windows_are_cut_out_only_where_a_conv_unit_sees_past_the_crop():
    # D's last conv unit: 88 px at crop 28 (2 pools kept), 212 px at crop 224 (all 5, §A.2's dense nets).
    small = models.build_model("D", width=1 / 64, fc_width=1, num_classes=1, crop=28)
    full = models.build_model("D", width=1 / 64, fc_width=1, num_classes=1, crop=224)
    assert models.receptive_field(small)[0] == 88 and localisation.window_crops(small)
    assert models.receptive_field(full)[0] == 212 and not localisation.window_crops(full)


def test_localisation_hits_need_the_right_class_and_overlap():
    true = torch.tensor([[0.0, 0, 10, 10]] * 3)
    labels = torch.tensor([1, 1, 1])
    classes = torch.tensor([[1, 0], [0, 1], [0, 2]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10]],
                          [[0.0, 0, 10, 10], [0, 0, 9, 9]],
                          [[0.0, 0, 10, 10], [0, 0, 10, 10]]])
    assert localisation.localisation_hits(classes, boxes, labels, true, 0.5, 1).tolist() == [1, 0, 0]
    assert localisation.localisation_hits(classes, boxes, labels, true, 0.5, 2).tolist() == [1, 1, 0]


def write_box_xml(path, objects):
    """An ILSVRC/VOC annotation: objects are (name, xmin, ymin, xmax, ymax), 1-based inclusive."""
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{path.stem}</filename>{body}</annotation>")


def test_imagefolder_boxes_from_ilsvrc_xml_feed_training_and_dense_localisation(tmp_path):
    from test_data import CLASSES, data_section, make_imagefolder
    from vgg import data
    root = make_imagefolder(tmp_path / "ilsvrc")
    box_dir = tmp_path / "bbox"
    # Images without a box, as most of ILSVRC's training images (names repeat across this tree's
    # splits, so neither may have an XML: a stem is looked up anywhere below box_dir).
    unboxed = {f"{split}/{CLASSES[0]}/{CLASSES[0]}_0.JPEG" for split in ("train", "val")}
    for path in sorted(root.rglob("*.JPEG")):
        if str(path.relative_to(root)) in unboxed:
            continue
        w, h = Image.open(path).size
        # Two objects: the larger one is kept.
        write_box_xml((box_dir / path.relative_to(root)).with_suffix(".xml"),
                      [(path.parent.name, 2, 3, w // 2, h // 2), (path.parent.name, 1, 1, w, h - 1)])
    store, meta = data.prepare(data_section(root, box_dir=str(box_dir), val_size=2))
    assert "boxes from" in meta["source"]
    for split in ("train", "val", "test"):
        for rel, box in zip(store[split]["paths"], store[split]["boxes"]):
            if rel in unboxed:
                assert torch.isnan(box).all()
                continue
            w, h = Image.open(root / rel).size
            assert box.tolist() == [0, 0, w, h - 1], rel  # 1-based inclusive -> 0-based, end exclusive
    train = data.ImageSet({**store["train"], "classes": list(CLASSES)})
    boxed = localisation.with_boxes(train)
    assert len(boxed) == len(train) - len(unboxed & set(store["train"]["paths"]))
    transform = TrainTransform(28, 32, 48, MEAN, [0.0, 0.0, 0.0], torch.eye(3).tolist(), 0.0, True)
    targets = localisation.BoxTargets(boxed, transform)
    image, target = targets[(0, 7)]
    # Unclipped: the whole box, which may be wider than the crop (w > 1 crop).
    assert image.shape == (3, 28, 28) and target.shape == (5,) and target[3] > 0 and target[4] > 0
    net = models.build_model("A", width=0.0625, fc_width=32, num_classes=3, crop=28)
    loc = localisation.localisation_net(net, "PCR", 3, 0.1, torch.Generator().manual_seed(1))
    dense = localisation.dense_predictions(loc, net.eval(), boxed, 36, MEAN, "PCR", 4, "cpu")
    assert len(dense) == len(boxed) and all(torch.isfinite(b).all() for b, _ in dense)
    crops = localisation.centre_crop_boxes(loc, boxed, boxed.labels, 32, MEAN, "PCR", 4, "cpu")
    assert crops.shape == (len(boxed), 4)


@pytest.mark.parametrize("sets, count, clusters, spread", [(64, 30, 3, 2), (24, 65, 2, 1), (24, 65, 5, 3)])
def test_batched_merging_equals_greedy_merge_on_the_same_candidates(sets, count, clusters, spread):
    # Clusters of jittered boxes with ties in scores and in IoU (integer coordinates; 65 candidates
    # as the fusion row's): the batched merge picks the same pair at every step, so its best box
    # equals greedy_merge's, bit for bit.
    g = torch.Generator().manual_seed(count + clusters)
    centres = torch.randint(0, 40, (sets, clusters, 2), generator=g).double()
    which = torch.randint(0, clusters, (sets, count), generator=g)
    centre = centres[torch.arange(sets)[:, None], which]
    size = torch.randint(6, 14, (sets, count, 1), generator=g).double()
    jitter = torch.randint(-spread, spread + 1, (sets, count, 2), generator=g).double()
    boxes = torch.cat([centre + jitter, centre + jitter + size], -1)
    scores = torch.randint(1, 5, (sets, count), generator=g).double() / 10
    boxes[0, 1] = boxes[0, 0]  # an exact duplicate
    got = localisation.best_merged_boxes(boxes, scores, 0.5)
    for k in range(sets):
        merged, _ = greedy_merge(boxes[k].numpy(), scores[k].numpy(), 0.5)
        assert torch.equal(got[k], torch.from_numpy(merged[0])), k


def test_batched_iou_is_the_numpy_iou_to_the_bit_on_real_valued_boxes():
    # The merges above are equal only if every IoU is: float boxes (not the integers above), some
    # inverted (a regressed box may be), some duplicated, against greedy_merge's _iou_matrix.
    g = torch.Generator().manual_seed(3)
    corner = torch.rand(6, 40, 2, generator=g, dtype=torch.float64) * 40
    boxes = torch.cat([corner, corner + torch.rand(6, 40, 2, generator=g, dtype=torch.float64) * 30 - 3], -1)
    boxes[:, 5] = boxes[:, 4]
    got = localisation._batch_iou(boxes, boxes)
    assert (got == 0).any() and (got == 1).any() and ((got > 0) & (got < 1)).any()
    for k in range(len(boxes)):
        assert torch.equal(got[k], torch.from_numpy(localisation._iou_matrix(boxes[k].numpy(), boxes[k].numpy())))


def test_table9_fusion_row_ranks_classes_by_each_classification_net_once():
    from stages.localise_dense import ROWS
    fusion = dict(ROWS)["fusion 256/256 + 384/352,384"]
    nets = [s for s, _ in fusion]
    assert sorted(nets) == ["256", "384"]  # each net once, D_384 with its two scales
    # Posteriors where D_256 ranks class 0 first and D_384 class 1 at both its scales.
    p256 = torch.tensor([[0.58, 0.42]])
    p384 = {352: torch.tensor([[0.45, 0.55]]), 384: torch.tensor([[0.45, 0.55]])}
    posteriors = {("256", 256): p256, ("384", 352): p384[352], ("384", 384): p384[384]}
    got = localisation.row_posteriors(posteriors, fusion)
    torch.testing.assert_close(got, torch.tensor([[0.515, 0.485]]))  # (0.58 + 0.45) / 2
    plain = torch.stack(list(posteriors.values())).mean(0)  # counting D_384 twice would flip the ranking
    assert plain.argmax(1).item() == 1 and got.argmax(1).item() == 0
    single = localisation.row_posteriors(posteriors, dict(ROWS)["384/352,384"])
    torch.testing.assert_close(single, p384[352])


def test_a_diverging_localisation_net_is_trained_again_at_a_tenth_of_the_lr():
    from stages import train_loc
    from vgg.io import StageError

    calls = []

    def diverges_until(lr_ok):
        def fit(lr, init):
            calls.append((lr, init))
            if lr > lr_ok:
                raise StageError(f"PCR-fc_384: non-finite loss at epoch 1, step 10 (lr {lr:g}); last good ...")
            return "trained"
        return fit

    reloads = iter(["reloaded 1", "reloaded 2"])
    assert train_loc.fit_until_finite(diverges_until(0.005), 0.03, "net", lambda: next(reloads), "D.pt") == "trained"
    assert [(round(lr, 6), init) for lr, init in calls] == [(0.03, "net"), (0.003, "reloaded 1")]

    calls.clear()  # diverging every time: the last divergence is raised after DIVERGENCE_RETRIES retries
    with pytest.raises(StageError, match="non-finite loss"):
        train_loc.fit_until_finite(diverges_until(0.0), 0.03, "net", lambda: "again", "D.pt")
    assert len(calls) == train_loc.DIVERGENCE_RETRIES + 1

    def other_error(lr, init):  # any other error stops at once
        calls.append(lr)
        raise StageError("data/prepared: no boxes")

    calls.clear()
    with pytest.raises(StageError, match="no boxes"):
        train_loc.fit_until_finite(other_error, 0.03, "net", lambda: "again", "D.pt")
    assert calls == [0.03]


def test_localise_dense_reads_the_dense_posteriors_and_names_a_file_that_lacks_a_scale(tmp_path):
    from stages.localise_dense import dense_posteriors
    from vgg import evaluate
    from vgg.io import StageError
    labels = torch.tensor([0, 2, 1])
    p = {q: torch.softmax(torch.randn(3, 3), 1) for q in (352, 384, 416)}
    path = tmp_path / "D_384_dense.pt"
    torch.save(evaluate.posterior_record("D_384", "D", (384, 384), "dense", p, labels), path)
    got = dense_posteriors(path, labels, [352, 384])
    assert sorted(got) == [352, 384] and torch.equal(got[352], p[352])
    with pytest.raises(StageError, match=r"D_384_dense.pt: no posteriors at Q=256"):
        dense_posteriors(path, labels, [256])
    with pytest.raises(StageError, match="other test images"):
        dense_posteriors(path, torch.tensor([0, 1, 1]), [384])
    torch.save(evaluate.posterior_record("D_384", "D", (384, 384), "multi-crop", p, labels), path)
    with pytest.raises(StageError, match="multi-crop posteriors, not dense"):
        dense_posteriors(path, labels, [384])


class _ImageFiles:
    """An image-file split's interface as far as the box targets use it: images of their own sizes."""

    def __init__(self, sizes, boxes, labels):
        self.split = {"kind": "files", "boxes": boxes}
        self.labels = labels
        self._sizes = sizes

    def image(self, i):
        return torch.zeros(3, *self._sizes[i])


@pytest.mark.parametrize("scale", [28, 41, 64])
def test_validation_targets_of_all_items_at_once_are_each_items_own_and_map_back_to_its_box(scale):
    sizes = [(56, 56), (40, 73), (91, 30), (28, 28), (57, 64)]
    g = torch.Generator().manual_seed(3)
    corners = torch.rand(len(sizes), 2, generator=g) * 0.5
    extents = 0.2 + torch.rand(len(sizes), 2, generator=g) * 0.5
    hw = torch.tensor(sizes, dtype=torch.float32).flip(1)  # (W, H) per image
    boxes = torch.cat([corners * hw, (corners + extents) * hw], 1)
    labels = torch.tensor([3, 1, 4, 1, 5])
    files = _ImageFiles(sizes, boxes, labels)
    in_memory = ImageSet(bright_rectangle_split(n=6))
    for dataset, n in ((files, len(sizes)), (in_memory, 6)):
        targets = localisation.centre_crop_targets(dataset, range(n), scale, 28)
        for i in range(n):  # what a call per item gives (the per-item path this replaced), bit for bit
            height, width = localisation.image_size(dataset, i)
            (h, w), top, left = localisation.centre_crop_offsets(height, width, scale, 28)
            own = boxes_to_crop(dataset.split["boxes"][[i]], height, width, torch.tensor([[h, w]]), top, left,
                                torch.zeros(1, dtype=torch.bool), 28)
            assert torch.equal(targets[i], localisation.targets_of(dataset.labels[[i]], own, 28)[0])
            # Mapped back through the crop and the rescale, the target is the image's own box (unclipped).
            crop_box = box_convert(targets[i, 1:][None].double() * 28, "cxcywh", "xyxy")
            back = boxes_from_crop(crop_box, height, width, (h, w), top, left)
            torch.testing.assert_close(back[0], dataset.split["boxes"][i].double(), atol=1e-4, rtol=0)
        assert targets[:, 0].tolist() == dataset.labels[:n].tolist()
    assert localisation.centre_crop_targets(files, [], scale, 28).shape == (0, 5)
