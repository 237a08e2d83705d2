"""The nets of Table 1 (§2.2), their sizes (Table 2), dense evaluation (§3.2) and init (§3.1)."""
import pytest
import torch
import torchvision
from torch import nn

from vgg import models
from vgg.models import (CONFIGS, LocalResponseNorm, build_model, count_parameters, depth, init_from_net_a,
                        initialise)
from vgg.models import receptive_field
from vgg.tables import table1

# Table 2 (exact counts at 1000 classes, 224 crop, FC 4096).
TABLE_2 = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}
SMALL = {"width": 1 / 16, "fc_width": 32, "num_classes": 10}


def small(net, crop=28, **kwargs):
    return build_model(net, **{**SMALL, "crop": crop, **kwargs})


@pytest.mark.parametrize("net", sorted(TABLE_2))
def test_param_counts_match_table_2(net):
    # The meta device allocates nothing, so the full-scale nets cost no time to count.
    with torch.device("meta"):
        model = build_model(net)
    assert count_parameters(model) == TABLE_2[net]


def test_param_counts_match_the_paper_csv():
    from vgg.paper import paper_csv

    paper = paper_csv("table2_parameters.csv").set_index("net")
    for net, count in TABLE_2.items():
        assert int(paper.loc[net, "exact_params"]) == count


@pytest.mark.parametrize("net, tv_name", [("A", "vgg11"), ("B", "vgg13"), ("D", "vgg16"), ("E", "vgg19")])
def test_torchvision_weights_load_and_give_identical_logits(net, tv_name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, tv_name)(weights=None).eval()
    state = reference.state_dict()
    # Built on the meta device and given torchvision's tensors: the layout must match exactly.
    with torch.device("meta"):
        model = build_model(net)
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    assert not any(p.is_meta for p in model.parameters())

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        got = model(x)
    assert got.shape == (2, 1000)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("net", ["A", "A-LRN", "C", "E", "B-5x5"])
@pytest.mark.parametrize("crop", [28, 56])
def test_dense_equals_forward_at_crop_size(net, crop):
    torch.manual_seed(0)
    model = small(net, crop=crop).eval()
    x = torch.randn(3, 3, crop, crop)
    with torch.no_grad():
        dense = model.forward_dense(x)
        logits = model(x)
    assert dense.shape == (3, 10, 1, 1)
    assert logits.std() > 0
    torch.testing.assert_close(dense[:, :, 0, 0], logits)


@pytest.mark.parametrize("crop, size", [(56, 72), (28, 40), (56, 56 + 8 * 3), (28, 64)])
def test_dense_score_map_size_and_values_on_larger_images(crop, size):
    torch.manual_seed(0)
    model = small("A", crop=crop).eval()
    x = torch.randn(2, 3, size, size)
    k = 7
    side = size // model.stride - k + 1
    with torch.no_grad():
        dense = model.forward_dense(x)
        features = model.features(x)
    assert dense.shape == (2, 10, side, side)
    # Every cell of the score map is the FC classifier applied to one k x k window of
    # the last conv features, flattened in torch's (C, H, W) order.
    with torch.no_grad():
        for i in range(side):
            for j in range(side):
                window = features[:, :, i:i + k, j:j + k]
                torch.testing.assert_close(dense[:, :, i, j], model.classifier(torch.flatten(window, 1)))


@pytest.mark.parametrize("crop, stride", [(224, 32), (112, 16), (56, 8), (28, 4), (14, 2), (7, 1)])
def test_pools_follow_the_crop_so_the_last_conv_map_is_7x7(crop, stride):
    with torch.device("meta"):
        model = build_model("E", crop=crop, width=1 / 16, fc_width=32, num_classes=10)
    assert model.stride == stride
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == stride.bit_length() - 1
    # Every conv of Table 1 is kept, and fc6 is a 7 x 7 layer over the last map.
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == 16
    assert model.classifier[0].in_features == model.channels * 49


@pytest.mark.parametrize("q, cells", [(256, 2), (384, 6), (512, 10)])
def test_dense_score_map_has_the_papers_cell_counts_at_the_default_crop(q, cells):
    # §3.2: at Q = 256, 384, 512 the paper's map is Q / 32 - 6 cells per side; crop 28 keeps it.
    from vgg.transforms import pixels
    model = small("D", crop=28).eval()
    with torch.no_grad():
        dense = model.forward_dense(torch.zeros(1, 3, pixels(q, 28), pixels(q, 28)))
    assert dense.shape[-2:] == (cells, cells) == (q // 32 - 6, q // 32 - 6)


@pytest.mark.parametrize("crop", [32, 30, 448, 0])
def test_a_crop_that_cannot_give_a_7x7_map_is_refused(crop):
    with pytest.raises(ValueError, match=f"crop {crop} is not 7 x 2"):
        build_model("A", crop=crop)


def test_dense_shares_parameters_with_forward():
    torch.manual_seed(0)
    model = small("B", crop=56).eval()
    before = [(name, p.data_ptr()) for name, p in model.named_parameters()]
    x = torch.randn(2, 3, 72, 72)
    with torch.no_grad():
        first = model.forward_dense(x)
    after = [(name, p.data_ptr()) for name, p in model.named_parameters()]
    assert after == before  # no new (or replaced) parameters

    fc6, fc8 = model.classifier[0], model.classifier[6]
    with torch.no_grad():
        fc8.bias += 0.5
        shifted = model.forward_dense(x)
    torch.testing.assert_close(shifted, first + 0.5)

    with torch.no_grad():
        fc6.weight.mul_(-1.0)
        changed = model.forward_dense(x)
    assert not torch.allclose(changed, shifted)

    # Gradients of the dense net reach the FC weights (views, not copies).
    model.zero_grad()
    model.forward_dense(x).sum().backward()
    for layer in (model.classifier[0], model.classifier[3], model.classifier[6]):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def _seeded(net, seed):
    model = small(net)
    generator = torch.Generator().manual_seed(seed)
    initialise(model, generator=generator)
    with torch.no_grad():  # random biases too, so every tensor is distinguishable
        for _, layer in model.named_weight_layers():
            layer.bias.normal_(0.0, 1.0, generator=generator)
    return model


@pytest.mark.parametrize("net", ["B", "C", "D", "E"])
def test_init_from_net_a_copies_exactly_the_named_layers(net):
    net_a = _seeded("A", 1)
    target = _seeded(net, 2)
    before = {name: (layer.weight.clone(), layer.bias.clone()) for name, layer in target.named_weight_layers()}
    a_tensors = [t for _, layer in net_a.named_weight_layers() for t in (layer.weight, layer.bias)]
    a_before = {k: v.clone() for k, v in net_a.state_dict().items()}

    copied = init_from_net_a(target, net_a)

    expected = ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    assert copied == expected
    source = dict(net_a.named_weight_layers())
    layers = dict(target.named_weight_layers())
    assert set(expected) <= set(layers)
    for name, layer in layers.items():
        if name in expected:
            assert torch.equal(layer.weight, source[name].weight), name
            assert torch.equal(layer.bias, source[name].bias), name
            assert layer.weight.data_ptr() != source[name].weight.data_ptr()  # a copy, not shared
        else:
            weight, bias = before[name]
            assert torch.equal(layer.weight, weight), name
            assert torch.equal(layer.bias, bias), name
            for t in a_tensors:
                if t.shape == layer.weight.shape:
                    assert not torch.equal(t, layer.weight), name
                if t.shape == layer.bias.shape:
                    assert not torch.equal(t, layer.bias), name
    # Net A itself is untouched.
    for key, value in net_a.state_dict().items():
        assert torch.equal(value, a_before[key])
    # The copied layers were really overwritten (they differed before).
    assert not torch.equal(before["conv1_1"][0], layers["conv1_1"].weight)


def test_init_from_net_a_rejects_mismatched_shapes():
    net_a = small("A", width=1 / 8)
    with pytest.raises(ValueError, match="conv1_1"):
        init_from_net_a(small("D"), net_a)


def test_a_lrn_has_lrn_after_first_conv():
    features = small("A-LRN").features
    assert isinstance(features[0], nn.Conv2d)
    assert isinstance(features[1], nn.ReLU)
    lrn = features[2]
    assert isinstance(lrn, LocalResponseNorm)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert isinstance(features[3], nn.MaxPool2d)
    # Exactly one LRN layer in A-LRN, none in any other net.
    assert sum(isinstance(m, LocalResponseNorm) for m in features) == 1
    for net in ("A", "B", "C", "D", "E"):
        assert not any(isinstance(m, LocalResponseNorm) for m in small(net).features)


@pytest.mark.parametrize("channels, size", [(8, 5), (64, 5), (7, 4)])
def test_lrn_equals_torchs_local_response_norm(channels, size):
    x = (torch.randn(4, channels, 9, 9, generator=torch.Generator().manual_seed(0)) * 60).relu()
    ours = LocalResponseNorm(channels, size, alpha=1e-4, beta=0.75, k=2.0)
    torch.testing.assert_close(ours(x), nn.LocalResponseNorm(size, 1e-4, 0.75, 2.0)(x))
    torch.testing.assert_close(ours(x.contiguous(memory_format=torch.channels_last)),
                               nn.LocalResponseNorm(size, 1e-4, 0.75, 2.0)(x))
    assert ours.state_dict() == {}


def test_lrn_settings_are_passed_through():
    lrn = small("A-LRN", lrn={"size": 3, "alpha": 0.5}).features[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (3, 0.5, 0.75, 2.0)


@pytest.mark.parametrize("std", [0.01, 0.05])
def test_initialise_normal_std_and_zero_biases(std):
    model = build_model("A", width=0.25, fc_width=512, num_classes=10, crop=28)
    initialise(model, "normal", std=std, generator=torch.Generator().manual_seed(0))
    layers = dict(model.named_weight_layers())
    for name in ("fc6", "fc7", "conv4_1", "conv5_2"):  # >= 65k weights each
        weight = layers[name].weight
        assert weight.numel() >= 65_000
        assert abs(weight.std().item() - std) < 0.05 * std, name
        assert abs(weight.mean().item()) < 0.05 * std, name
    for name, layer in layers.items():
        assert torch.count_nonzero(layer.bias) == 0, name


def test_initialise_is_reproducible_from_its_generator():
    a = initialise(small("C"), generator=torch.Generator().manual_seed(3))
    b = initialise(small("C"), generator=torch.Generator().manual_seed(3))
    c = initialise(small("C"), generator=torch.Generator().manual_seed(4))
    for (name, x), (_, y), (_, z) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), name
        if name.endswith("weight"):
            assert not torch.equal(x, z), name


def test_initialise_glorot():
    model = build_model("A", width=0.25, fc_width=512, num_classes=10, crop=28)
    initialise(model, "glorot", generator=torch.Generator().manual_seed(0))
    for name, layer in model.named_weight_layers():
        weight = layer.weight
        receptive = weight[0, 0].numel() if weight.ndim == 4 else 1
        fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert weight.abs().max() <= bound + 1e-7, name
        if weight.numel() >= 65_000:  # U(-b, b) has std b / sqrt(3)
            assert abs(weight.std().item() - bound / 3 ** 0.5) < 0.05 * bound / 3 ** 0.5, name
        assert torch.count_nonzero(layer.bias) == 0, name


def test_initialise_unknown_scheme_raises():
    with pytest.raises(ValueError, match="unknown init scheme 'kaiming'"):
        initialise(small("A"), "kaiming")


def test_depth_matches_table_1():
    expected = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}
    for net, n in expected.items():
        assert depth(net) == n
        model = small(net)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.features)
        linears = sum(isinstance(m, nn.Linear) for m in model.classifier)
        assert convs + linears == n, net
        assert len(model.named_weight_layers()) == n


def test_conv_names_follow_the_paper():
    names = [name for name, _ in small("E").named_weight_layers()]
    assert names[:4] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    assert names[-6:] == ["conv5_2", "conv5_3", "conv5_4", "fc6", "fc7", "fc8"]
    assert [n for n, _ in small("A").named_weight_layers()] == [
        "conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1", "conv5_2",
        "fc6", "fc7", "fc8"]


def test_c_has_1x1_convs():
    model = small("C")
    kernels = [m.kernel_size for m in model.features if isinstance(m, nn.Conv2d)]
    assert kernels.count((1, 1)) == 3
    assert kernels.count((3, 3)) == len(kernels) - 3
    # The 1x1 convs are the last of blocks 3, 4 and 5.
    one_by_one = [name for name, m in model.named_weight_layers()
                  if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert one_by_one == ["conv3_3", "conv4_3", "conv5_3"]
    for net in ("A", "B", "D", "E"):
        assert all(m.kernel_size == (3, 3) for m in small(net).features if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("net", ["A", "C", "E", "B-5x5"])
def test_convs_keep_resolution_and_the_pools_halve_it_down_to_7(net):
    model = small(net, crop=56)
    x = torch.randn(1, 3, 56, 56)
    side = 56
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d):
            side //= 2
        assert x.shape[-1] == x.shape[-2] == side
    assert side == 7


def test_b_5x5_replaces_each_pair_of_b_by_one_5x5_conv():
    b_5 = [m for m in small("B-5x5").features if isinstance(m, nn.Conv2d)]
    b = [m for m in small("B").features if isinstance(m, nn.Conv2d)]
    assert len(b_5) * 2 == len(b)
    assert all(m.kernel_size == (5, 5) and m.padding == (2, 2) for m in b_5)
    assert [m.out_channels for m in b_5] == [m.out_channels for m in b[1::2]]


def test_unknown_net_and_bad_crop_raise():
    with pytest.raises(ValueError, match="unknown net 'F'"):
        build_model("F")
    with pytest.raises(ValueError, match="crop 100 is not 7 x 2"):
        build_model("A", crop=100)


def _cells(frame, net):
    column = next(c for c in frame.columns if c.startswith(f"{net} ("))
    return [layer for cell in frame[column] for layer in cell.split("<br>")]


def test_table1_generated_from_configs():
    frame = table1()
    assert list(frame.columns) == [f"{n} ({d} weight layers)" for n, d in
                                   [("A", 11), ("A-LRN", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19)]]
    assert len(frame) == 5 * 2 + 4
    for net in ("A", "A-LRN", "B", "C", "D", "E"):
        cells = _cells(frame, net)
        assert cells.count("conv3-512") == CONFIGS[net].count(512), net
        assert cells.count("conv3-64") == CONFIGS[net].count(64), net
        assert cells.count("maxpool") == 5
        assert cells[-4:] == ["FC-4096", "FC-4096", "FC-1000", "soft-max"]
    assert _cells(frame, "E").count("conv3-512") == 8
    assert _cells(frame, "C").count("conv1-512") == 2
    assert _cells(frame, "C").count("conv1-256") == 1
    assert _cells(frame, "A-LRN")[:2] == ["conv3-64", "LRN"]


def test_table1_width_multiplier_changes_channel_labels():
    frame = table1(width=0.25, fc_width=512, num_classes=10)
    e = _cells(frame, "E")
    assert "conv3-512" not in e
    assert e.count("conv3-128") == CONFIGS["E"].count(512)  # 512 x 0.25
    assert e.count("conv3-16") == CONFIGS["E"].count(64)
    assert e[-4:] == ["FC-512", "FC-512", "FC-10", "soft-max"]
    # The labels name the channels the built model really has.
    convs = [m for m in small("E", width=0.25).features if isinstance(m, nn.Conv2d)]
    assert [f"conv3-{m.out_channels}" for m in convs] == [c for c in e if c.startswith("conv")]


def test_flops_per_image_counts_conv_and_fc():
    # Counted by hand, conv by conv and FC by FC, at the crop: 2 x multiply-adds.
    for model in (small("A"), small("E", width=0.25), build_model("D")):
        total, side, channels = 0, model.crop, 3
        for layer in model.features:
            if isinstance(layer, nn.Conv2d):
                total += 2 * side * side * layer.out_channels * channels * 9
                channels = layer.out_channels
            elif isinstance(layer, nn.MaxPool2d):
                side //= 2
        total += sum(2 * l.in_features * l.out_features for l in model.classifier if isinstance(l, nn.Linear))
        assert models.flops_per_image(model) == total
    assert models.flops_per_image(build_model("D")) / 1e9 == pytest.approx(30.9, abs=0.1)  # README: D 30.9 GFLOP

@pytest.mark.parametrize("net, crop, conv_field, cell_field", [("D", 224, 212, 404), ("D", 28, 88, 112),
                                                               ("A", 28, 58, 82), ("E", 28, 112, 136)])
def test_receptive_field_is_the_input_a_unit_depends_on(net, crop, conv_field, cell_field):
    # The pixels whose gradient reaches the centre unit, with max-pools swapped for average pools
    # of the same geometry and positive weights and inputs, so no ReLU or max hides a path.
    model = build_model(net, width=1 / 16, fc_width=8, num_classes=3, crop=crop).double()
    assert receptive_field(model) == (conv_field, cell_field)
    for i, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            model.features[i] = nn.AvgPool2d(2, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    size = cell_field + 2 * model.stride + model.stride * 2  # room on both sides
    for fn, field in ((model.features, conv_field), (model.forward_dense, cell_field)):
        x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
        out = fn(x)
        out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
        rows = x.grad[0].abs().sum((0, 2)).nonzero()
        assert rows.max().item() - rows.min().item() + 1 == field


def _record_equal(a, b):
    return ({k: v for k, v in a.items() if k != "state_dict"} == {k: v for k, v in b.items() if k != "state_dict"}
            and a["state_dict"].keys() == b["state_dict"].keys()
            and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]))


def test_initialise_stage_gives_each_net_of_a_call_the_weights_of_a_call_of_its_own(tmp_path, capsys):
    # init_scratch@k and init_from_a@k initialise a seed's nets in one process: each net must get
    # what a call of its own gives (its own seed, nothing shared through the process's RNG).
    from stages import initialise
    from tests.conftest import tiny_params, write_params
    params = str(write_params(tmp_path / "params.yaml", tiny_params()))
    p = lambda name: str(tmp_path / name)
    initialise.main(["--params", params, "--seed", "1", "--net", "A", "A-LRN", "--out", p("A.pt"), p("A-LRN.pt")])
    initialise.main(["--params", params, "--seed", "1", "--net", "A-LRN", "--out", p("A-LRN_alone.pt")])
    assert _record_equal(torch.load(p("A-LRN.pt")), torch.load(p("A-LRN_alone.pt")))
    initialise.main(["--params", params, "--seed", "1", "--net-a", p("A.pt"), "--net", "B", "C", "D",
                     "--out", p("B.pt"), p("C.pt"), p("D.pt")])
    initialise.main(["--params", params, "--seed", "1", "--net-a", p("A.pt"), "--net", "D", "--out", p("D_alone.pt")])
    together, alone = torch.load(p("D.pt")), torch.load(p("D_alone.pt"))
    assert _record_equal(together, alone)
    # B and D copy A's first layers but draw their own random layers.
    b, d = torch.load(p("B.pt"))["state_dict"], together["state_dict"]
    assert any(k in d and b[k].shape == d[k].shape and not torch.equal(b[k], d[k]) for k in b)
    # A net that cannot take A's layers (B-5x5's 5x5 convs) stops the call before any file is written.
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        initialise.main(["--params", params, "--net-a", p("A.pt"), "--net", "C", "B-5x5", "--out", p("C2.pt"),
                         p("B-5x5.pt")])
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "C2.pt").exists() and not (tmp_path / "B-5x5.pt").exists()
    with pytest.raises(SystemExit):
        initialise.main(["--params", params, "--net", "A", "A-LRN", "--out", p("only_one.pt")])
    assert "--out: 1 files for 2 nets" in capsys.readouterr().err and not (tmp_path / "only_one.pt").exists()
