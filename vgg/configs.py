"""The VGG configurations of Table 1 as data: one configuration table and the rule that fits the
number of max-pools to the crop.

Kept apart from `vgg.models` (which builds the nets from it) so that the stages that only validate
params against it (`vgg.params`: net names, crop sizes) do not depend on the model-building code,
and DVC does not re-run them when that changes.

Layer tokens: an int C is a 3x3 conv with C output channels, "1x1-C" a 1x1 conv,
"5x5-C" a 5x5 conv, "M" a 2x2 max-pool, "LRN" local response normalisation.
"""
import math

CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, "1x1-256", "M",
          512, 512, "1x1-512", "M", 512, 512, "1x1-512", "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
          512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    # §4.1: B with each pair of 3x3 convs replaced by a single 5x5 conv.
    "B-5x5": ["5x5-64", "M", "5x5-128", "M", "5x5-256", "M", "5x5-512", "M", "5x5-512", "M"],
}
NETS = tuple(CONFIGS)
# ConvNet depth as the paper counts it: weight layers (convs + 3 FC).
PAPER_FC_LAYERS = 3
# §2.1: LRN as in Krizhevsky et al. (2012).
LRN_DEFAULTS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


def parse_token(token):
    """Return ("conv", kernel, channels), ("pool",) or ("lrn",) for one configuration token."""
    if token == "M":
        return ("pool",)
    if token == "LRN":
        return ("lrn",)
    if isinstance(token, int):
        return ("conv", 3, token)
    kernel, channels = token.split("-")
    return ("conv", int(kernel.split("x")[0]), int(channels))


def conv_names(net):
    """Paper-style names of the conv layers of `net` in order: conv1_1, conv1_2, conv2_1, ..."""
    names, block, index = [], 1, 0
    for token in CONFIGS[net]:
        kind = parse_token(token)[0]
        if kind == "conv":
            index += 1
            names.append(f"conv{block}_{index}")
        elif kind == "pool":
            block, index = block + 1, 0
    return names


# The last conv map is 7 x 7 at the crop (§2.1: 224 / 2^5); fc6 sees all of it.
LAST_MAP = 7
FULL_POOLS = 5


def pools_for_crop(crop):
    """How many 2x2 max-pools keep the last conv map 7 x 7 at `crop` (224: Table 1's five; 28: two)."""
    pools = int(round(math.log2(crop / LAST_MAP))) if crop >= LAST_MAP else -1
    if not 0 <= pools <= FULL_POOLS or LAST_MAP * 2 ** pools != crop:
        raise ValueError(f"crop {crop} is not 7 x 2^k (k = 0..5: 7, 14, 28, 56, 112, 224)")
    return pools
