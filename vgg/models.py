"""The VGG configurations of Table 1, built from one configuration table.

Layer tokens: an int C is a 3x3 conv with C output channels, "1x1-C" a 1x1 conv,
"5x5-C" a 5x5 conv, "M" a 2x2 max-pool, "LRN" local response normalisation.
The module layout (`features.N`, `classifier.N`) equals torchvision's `vgg11/13/16/19`,
so their state dicts load unchanged into A, B, D and E.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from .configs import (
    CONFIGS, FULL_POOLS, LAST_MAP, LRN_DEFAULTS, NETS, PAPER_FC_LAYERS, conv_names, parse_token, pools_for_crop)


class LocalResponseNorm(nn.Module):
    """Krizhevsky et al.'s LRN across channels, as nn.LocalResponseNorm computes it.

    The sum of squares over the channel window is a 1x1 convolution with a fixed band matrix,
    which runs about 4x faster on CPU than torch's pooling-based version (channels_last).
    """

    def __init__(self, channels, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        c = torch.arange(channels)
        offset = c[None, :] - c[:, None]  # input channel - output channel
        band = ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).float() / size
        # Not persistent: the state dict holds only learnt weights, like torchvision's.
        self.register_buffer("band", band[:, :, None, None], persistent=False)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return x / F.conv2d(x * x, self.band).mul(self.alpha).add(self.k).pow(self.beta)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def scaled_channels(channels, width):
    return max(1, int(round(channels * width)))


def make_layers(net, width=1.0, lrn=None, pools=FULL_POOLS):
    """The conv part of `net` as an nn.Sequential, channels scaled by `width`.

    Only the first `pools` max-pools are kept: a scaled-down crop drops the last ones, so the
    later blocks keep every conv and channel count but run at 7 x 7, as at 224 they do after pool 5.
    """
    lrn = {**LRN_DEFAULTS, **(lrn or {})}
    layers, in_channels, pooled = [], 3, 0
    for token in CONFIGS[net]:
        kind, *spec = parse_token(token)
        if kind == "pool":
            pooled += 1
            if pooled <= pools:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif kind == "lrn":
            layers.append(LocalResponseNorm(in_channels, lrn["size"], alpha=lrn["alpha"], beta=lrn["beta"],
                                            k=lrn["k"]))
        else:
            kernel, channels = spec
            out_channels = scaled_channels(channels, width)
            # §2.1: padding keeps the spatial resolution after every conv.
            layers.append(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2))
            layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """One net of Table 1. `forward` takes crop-sized inputs; `forward_dense` any size (§3.2)."""

    def __init__(self, net="D", width=1.0, fc_width=4096, num_classes=1000, crop=224,
                 dropout=0.5, lrn=None):
        super().__init__()
        if net not in CONFIGS:
            raise ValueError(f"unknown net {net!r} (choose from {', '.join(NETS)})")
        self.net, self.crop = net, crop
        self.pools = pools_for_crop(crop)
        self.features = make_layers(net, width, lrn, self.pools)
        # Output stride of the conv part: one class-score cell per `stride` pixels (§3.2).
        self.stride = 2 ** self.pools
        self.kernel = LAST_MAP
        self.channels = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.classifier = nn.Sequential(
            nn.Linear(self.channels * self.kernel ** 2, fc_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_width, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))

    def forward_dense(self, x):
        """Class score map of the fully convolutional net (§3.2), same weights as `forward`.

        The first FC layer is applied as a 7 x 7 conv, the other two as 1x1 convs; the weights are
        reshaped views, never copies. At Q pixels the map has Q / stride - 6 cells per side, as in
        the paper (2, 6, 10 at Q = 256, 384, 512).
        """
        fc8 = self.classifier[6]
        return F.conv2d(self.forward_fc7_dense(x), fc8.weight[:, :, None, None], fc8.bias)

    def forward_fc7_dense(self, x):
        """The fc7 map (after its ReLU) of the fully convolutional net: `forward_dense` without fc8,
        the very deep features of App. B. Dropout is not applied (it is off in eval mode anyway)."""
        fc6, fc7 = self.classifier[0], self.classifier[3]
        x = self.features(x)
        x = F.relu(F.conv2d(x, fc6.weight.view(fc6.out_features, self.channels, self.kernel, self.kernel),
                            fc6.bias))
        return F.relu(F.conv2d(x, fc7.weight[:, :, None, None], fc7.bias))

    def named_weight_layers(self):
        """(paper name, module) for every conv and FC layer: conv1_1 ... fc6, fc7, fc8."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        names = conv_names(self.net) + ["fc6", "fc7", "fc8"]
        return list(zip(names, convs + [self.classifier[0], self.classifier[3], self.classifier[6]]))


def receptive_field(model):
    """(last conv map unit, class-score cell) receptive fields of a built net, in input pixels.

    At crop 224 a unit of D's last conv map sees 212 px, inside the crop it was trained on; a
    score cell (fc6 as a 7 x 7 conv) sees 404 px. Keeping the 7 x 7 map at crop 28 by dropping
    pools keeps every conv but not this ratio: D's last conv unit sees 88 px (3.1 crops), its score
    cell 112 px (4 crops). So a cell of a dense score map at Q > crop sees image content that no
    zero-padded training crop showed it (docs/scaled_default.md: dense evaluation and context).
    """
    field, jump = 1, 1
    for layer in model.features:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            kernel = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            stride = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            field += (kernel - 1) * jump
            jump *= stride
    return field, field + (model.kernel - 1) * jump


def build_model(net, width=1.0, fc_width=4096, num_classes=1000, crop=224, dropout=0.5, lrn=None):
    return VGG(net, width=width, fc_width=fc_width, num_classes=num_classes, crop=crop, dropout=dropout, lrn=lrn)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def depth(net):
    """Weight layers as the paper counts them (Table 1 header: 11, 11, 13, 16, 16, 19)."""
    return len(conv_names(net)) + PAPER_FC_LAYERS


def initialise(model, scheme="normal", std=0.01, generator=None):
    """Random init (§3.1): weights N(0, std) or Glorot (the paper's footnote), biases zero."""
    for _, layer in model.named_weight_layers():
        if scheme == "normal":
            nn.init.normal_(layer.weight, 0.0, std, generator=generator)
        elif scheme == "glorot":
            nn.init.xavier_uniform_(layer.weight, generator=generator)
        else:
            raise ValueError(f"unknown init scheme {scheme!r} (choose normal or glorot)")
        nn.init.zeros_(layer.bias)
    return model


# §3.1: "we initialised the first four convolutional layers and the last three
# fully-connected layers with the layers of net A"; A's convs keep their paper names.
NET_A_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


@torch.no_grad()
def init_from_net_a(model, net_a):
    """Copy NET_A_LAYERS from `net_a` into `model` (B-E); return the names copied."""
    source = dict(net_a.named_weight_layers())
    target = dict(model.named_weight_layers())
    for name in NET_A_LAYERS:
        src, dst = source[name], target[name]
        if src.weight.shape != dst.weight.shape:
            raise ValueError(f"{name}: net A has shape {tuple(src.weight.shape)}, "
                             f"net {model.net} has {tuple(dst.weight.shape)}")
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    return list(NET_A_LAYERS)


def describe_layers(net, width=1.0, pools=FULL_POOLS):
    """Table 1 column for `net`: one string per layer ('conv3-64', 'maxpool', 'LRN'); a pool that
    a scaled-down crop drops reads '(no maxpool)'."""
    rows, pooled = [], 0
    for token in CONFIGS[net]:
        kind, *spec = parse_token(token)
        if kind == "pool":
            pooled += 1
            rows.append("maxpool" if pooled <= pools else "(no maxpool)")
        elif kind == "lrn":
            rows.append("LRN")
        else:
            kernel, channels = spec
            rows.append(f"conv{kernel}-{scaled_channels(channels, width)}")
    return rows


def flops_per_image(model):
    """FLOPs (2 x multiply-adds) of one forward pass at the model's crop, counted by torch's
    FlopCounterMode on a weightless copy (meta tensors: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, 3, model.crop, model.crop, device="meta"))
    return counter.get_total_flops()


def model_record(model, kwargs, **meta):
    """What a model file holds: weights, how to build the net, and provenance."""
    return {"net": model.net, "kwargs": kwargs, "state_dict": model.state_dict(), **meta}


def load_model(path, net=None):
    """(model, record) from a model file; `net`, when given, must match the file's."""
    from .io import StageError, load
    record = load(path, "model file")
    if net is not None and record.get("net") != net:
        raise StageError(f"{path}: holds net {record.get('net')!r}, expected {net!r}")
    model = build_model(record["net"], **record["kwargs"])
    model.load_state_dict(record["state_dict"])
    return model, record
