"""Read params.yaml and validate the sections a stage uses, before it writes anything.

Every error is one line naming the key, e.g. `model.crop: 100 is not 7 x 2^k ...`.
"""
import copy
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .io import StageError
from .configs import NETS, pools_for_crop

DATASETS = ("fashion_mnist", "imagefolder")
INIT_SCHEMES = ("normal", "glorot")


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _fraction(v):
    return 0 <= v < 1


def _seven_times_power_of_two(v):
    try:
        pools_for_crop(v)
    except ValueError:
        return False
    return True


def _object_scale(v):
    return (len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and 0 < v[0] <= v[1] <= 1)


def _learning_rate(v):
    # SGD on these nets diverges well below 1 (lr 0.02 already slowed A at the default, README probes);
    # a bound catches a typo such as 1e6 or 10 before hours of training end in a non-finite loss.
    return 0 < v <= 1


def _one_of(choices):
    def check(v):
        return v in choices
    check.choices = choices
    return check


NUMBER = (int, float)
# section -> key -> (allowed types, check or None, what the check means)
SCHEMA = {
    "data": {
        "dataset": (str, _one_of(DATASETS), f"must be one of {', '.join(DATASETS)}"),
        "root": (str, None, ""),
        "val_size": (int, _positive, "must be > 0"),
        "seed": (int, None, ""),
        "object_scale": (list, _object_scale, "must be [min, max] with 0 < min <= max <= 1"),
        "canvas": (int, _positive, "must be > 0 (pixels)"),
        "object_spread": (NUMBER, lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        "train_limit": (int, _non_negative, "must be >= 0 (0 = all)"),
        "test_limit": (int, _non_negative, "must be >= 0 (0 = all)"),
        "verify_images": (bool, None, ""),
        "box_dir": (str, None, ""),
    },
    "mean_rgb": {
        "max_images": (int, _non_negative, "must be >= 0 (0 = all)"),
    },
    "model": {
        "width": (NUMBER, _positive, "must be > 0"),
        "fc_width": (int, _positive, "must be > 0"),
        "crop": (int, _seven_times_power_of_two,
                 "is not 7 x 2^k, k = 0..5 (7, 14, 28, 56, 112, 224): the last conv map must be 7 x 7"),
        "num_classes": (int, _positive, "must be > 0"),
        "lrn_size": (int, _positive, "must be > 0"),
        "lrn_alpha": (NUMBER, _non_negative, "must be >= 0"),
        "lrn_beta": (NUMBER, _non_negative, "must be >= 0"),
        "lrn_k": (NUMBER, _non_negative, "must be >= 0"),
    },
    "init": {
        "scheme": (str, _one_of(INIT_SCHEMES), f"must be one of {', '.join(INIT_SCHEMES)}"),
        "std": (NUMBER, _positive, "must be > 0"),
        "seed": (int, None, ""),
    },
    "train": {
        "batch_size": (int, _positive, "must be > 0"),
        "lr": (NUMBER, _learning_rate, "must be in (0, 1]"),
        "momentum": (NUMBER, _fraction, "must be in [0, 1)"),
        "weight_decay": (NUMBER, _non_negative, "must be >= 0"),
        "dropout": (NUMBER, _fraction, "must be in [0, 1)"),
        "lr_factor": (NUMBER, lambda v: 0 < v < 1, "must be in (0, 1)"),
        "lr_patience": (int, _non_negative, "must be >= 0"),
        "lr_threshold": (NUMBER, _non_negative, "must be >= 0"),
        "max_lr_drops": (int, _non_negative, "must be >= 0"),
        "epochs": (int, _positive, "must be > 0"),
        "train_scale": (int, _positive, "must be > 0"),
        "colour_shift_std": (NUMBER, _non_negative, "must be >= 0"),
        "flip": (bool, None, ""),
        "seed": (int, None, ""),
        "num_workers": (int, _non_negative, "must be >= 0"),
        "bf16": (bool, None, ""),
        "channels_last": (bool, None, ""),
        "checkpoint_every": (int, _non_negative, "must be >= 0 (0 = at epoch ends only)"),
    },
    "finetune": {
        "lr": (NUMBER, _learning_rate, "must be in (0, 1]"),
        "epochs": (int, _positive, "must be > 0"),
        "lr_patience": (int, _non_negative, "must be >= 0"),
        "max_lr_drops": (int, _positive, "must be > 0 (a fine-tune ends on a plateau after its drops)"),
        "train_scale": (int, _positive, "must be > 0"),
    },
    "jitter": {
        "lr": (NUMBER, _learning_rate, "must be in (0, 1]"),
        "epochs": (int, _positive, "must be > 0"),
        "lr_patience": (int, _non_negative, "must be >= 0"),
        "max_lr_drops": (int, _positive, "must be > 0 (a fine-tune ends on a plateau after its drops)"),
        "train_scale_min": (int, _positive, "must be > 0"),
        "train_scale_max": (int, _positive, "must be > 0"),
    },
    "localisation": {
        "lr": (NUMBER, _learning_rate, "must be in (0, 1]"),
        "epochs": (int, _positive, "must be > 0"),
        "lr_patience": (int, _non_negative, "must be >= 0"),
        "max_lr_drops": (int, _positive, "must be > 0 (a localisation net ends on a plateau after its drops)"),
        "init_std": (NUMBER, _positive, "must be > 0"),
        "seed": (int, None, ""),
        "iou_threshold": (NUMBER, lambda v: 0 < v < 1, "must be in (0, 1)"),
        "merge_iou": (NUMBER, lambda v: 0 < v < 1, "must be in (0, 1)"),
        "top_k": (int, _positive, "must be > 0"),
        "batch_size": (int, _positive, "must be > 0"),
    },
    "evaluate": {
        "batch_size": (int, _positive, "must be > 0"),
        "scale_offset": (int, _non_negative, "must be >= 0"),
        "grid": (int, _positive, "must be > 0"),
        "num_workers": (int, _non_negative, "must be >= 0"),
        "bf16": (bool, None, ""),
    },
    "fuse": {
        "ensembles": (dict, None, ""),
    },
    "report": {
        "runs": (list, lambda v: len(v) > 0 and all(isinstance(r, str) for r in v), "must list run names"),
        "bootstrap_samples": (int, _positive, "must be > 0"),
        "bootstrap_seed": (int, None, ""),
        "confidence": (NUMBER, lambda v: 0 < v < 1, "must be in (0, 1)"),
        "equivalence_margin": (NUMBER, _non_negative, "must be >= 0"),
    },
}


def load_params(path="params.yaml"):
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise StageError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise StageError(f"{path}: expected a mapping of sections")
    return params


def section(params, name):
    """Validated copy of section `name`: every key known, present, typed and in range."""
    schema = SCHEMA[name]
    values = params.get(name)
    if not isinstance(values, dict):
        raise StageError(f"{name}: section missing from params.yaml")
    for key in values:
        if key not in schema:
            raise StageError(f"{name}.{key}: unknown key (known: {', '.join(schema)})")
    for key, (types, check, meaning) in schema.items():
        if key not in values:
            raise StageError(f"{name}.{key}: missing")
        value = values[key]
        # bool is an int in Python; a float key accepts ints, an int key never takes bools.
        if isinstance(value, bool) and types is not bool:
            raise StageError(f"{name}.{key}: expected {_type_name(types)}, got {value!r}")
        if not isinstance(value, types):
            raise StageError(f"{name}.{key}: expected {_type_name(types)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise StageError(f"{name}.{key}: {value!r} must be a finite number")
        if check is not None and not check(value):
            raise StageError(f"{name}.{key}: {value!r} {meaning}")
    return dict(values)


def _type_name(types):
    if types is NUMBER:
        return "a number"
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a mapping"}[types]


# Training replicates: every RNG seed of a replicate's init and training (weights, data order,
# augmentation draws, dropout masks) is its params seed + SEED_STRIDE x the replicate's seed, so
# replicate 0 is the params' own run and no two nets or replicates share a stream. The data split,
# the derived images and the test set do not depend on it (data.seed).
SEED_STRIDE = 1000


def seeds(params):
    """The validated top-level `seeds`: the training replicates every net of §3.1 is trained for."""
    value = params.get("seeds")
    if (not isinstance(value, list) or not value or not all(type(v) is int and 0 <= v < 1_000_000 for v in value)
            or len(set(value)) != len(value)):
        raise StageError(f"seeds: {value!r} must be a non-empty list of distinct integers >= 0")
    return list(value)


def replicate_seed(base, seed):
    """The RNG seed of replicate `seed` for a params seed `base` (SEED_STRIDE)."""
    return base + SEED_STRIDE * seed


def check_net(name):
    if name not in NETS:
        raise StageError(f"--net: unknown net {name!r} (choose from {', '.join(NETS)})")
    return name


@dataclass(frozen=True)
class Schedule:
    """One training schedule of §3.1, validated: `train`, or `finetune` / `jitter` over it.
    Scales in paper units; scale_min == scale_max for a fixed S."""
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    dropout: float
    lr_factor: float
    lr_patience: int
    lr_threshold: float
    max_lr_drops: int
    epochs: int
    scale_min: int
    scale_max: int
    colour_shift_std: float
    flip: bool
    seed: int
    num_workers: int
    bf16: bool
    channels_last: bool
    checkpoint_every: int


def schedule(params, name):
    """The Schedule `name`: the `train` section, with `finetune`, `jitter` or `localisation` overriding it."""
    merged = section(params, "train")
    if name == "localisation":  # App. A.1: train's recipe, its own lr and length; S from the init net
        merged.update({k: v for k, v in section(params, name).items()
                       if k in ("lr", "epochs", "lr_patience", "max_lr_drops")})
    elif name != "train":
        if name not in ("finetune", "jitter"):
            raise StageError(f"--schedule: unknown schedule {name!r} (choose train, finetune or jitter)")
        merged.update(section(params, name))
    if name == "jitter":
        lo, hi = merged.pop("train_scale_min"), merged.pop("train_scale_max")
        if lo > hi:
            raise StageError(f"jitter.train_scale_min: {lo} is larger than jitter.train_scale_max {hi}")
        merged.pop("train_scale")
    else:
        lo = hi = merged.pop("train_scale")
    merged["scale_min"], merged["scale_max"] = lo, hi
    return Schedule(**merged)


def model_kwargs(model_section):
    """Keyword arguments of vgg.models.build_model from the validated `model` section (the
    architecture; training adds its schedule's dropout, which has no weights)."""
    m = model_section
    return {
        "width": m["width"], "fc_width": m["fc_width"], "num_classes": m["num_classes"], "crop": m["crop"],
        "lrn": {"size": m["lrn_size"], "alpha": m["lrn_alpha"], "beta": m["lrn_beta"], "k": m["lrn_k"]},
    }


# ---------------------------------------------------------------- presets (README: full scale)

def preset_overrides(path, extra=()):
    """Dotted key -> value of a preset file (nested like params.yaml), then `extra` KEY=VALUE strings
    (values parsed as YAML: 0.01, true, [256, 512])."""
    preset = load_params(path)
    flat = {}
    for name, values in preset.items():  # sections, and top-level keys such as `seeds`
        flat.update({f"{name}.{key}": value for key, value in values.items()} if isinstance(values, dict)
                    else {name: values})
    for item in extra:
        key, sep, text = item.partition("=")
        if not sep:
            raise StageError(f"{item}: expected KEY=VALUE")
        flat[key] = yaml.safe_load(text)
    return flat


def apply_overrides(params, overrides, validate=False):
    """A copy of `params` with dotted-key overrides, each naming a key params.yaml has; `validate`
    checks every section the schema knows."""
    merged = copy.deepcopy(params)
    for dotted, value in overrides.items():
        name, dot, key = dotted.partition(".")
        if not dot and name in merged and not isinstance(merged[name], dict):  # a top-level key (`seeds`)
            merged[name] = value
            continue
        if name not in merged or not isinstance(merged[name], dict) or key not in merged[name]:
            raise StageError(f"{dotted}: unknown key")
        merged[name][key] = value
    if validate:
        for name in SCHEMA:
            if name in merged:
                section(merged, name)
        if "seeds" in merged:
            seeds(merged)
    return merged


def override_flag(key, value):
    """`-S key=value` in the Hydra syntax of `dvc exp run`."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list):
        text = "[" + ",".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    return f"-S {key}={text}"


# ---------------------------------------------------------------- App. B: very deep features

TRANSFER_SCENES = ("digits", "fashion_mnist", "voc2007")
TRANSFER_FEWSHOT = ("digits", "fashion_mnist", "caltech")


def _positive_ints(v):
    return len(v) > 0 and all(type(x) is int and x > 0 for x in v)


def _range_pair(v):
    return len(v) == 2 and all(type(x) is int for x in v) and 1 <= v[0] <= v[1]


def _positive_pair(v):
    return (len(v) == 2 and all(isinstance(x, NUMBER) and not isinstance(x, bool) for x in v)
            and 0 < v[0] <= v[1])


def _positive_numbers(v):
    return (len(v) > 0 and all(isinstance(x, NUMBER) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                               for x in v))


SCHEMA["transfer"] = {
    "nets": (dict, lambda v: 1 <= len(v) <= 2 and all(k in NETS and isinstance(r, str) for k, r in v.items()),
             "must map one or two nets (D, E) to trained runs, e.g. {D: D_256-512}"),
    "scales": (list, lambda v: _positive_ints(v) and v == sorted(set(v)), "must be ascending positive ints"),
    "single_scale": (int, _positive, "must be > 0"),
    "batch_size": (int, _positive, "must be > 0"),
    "bf16": (bool, None, ""),
    "seed": (int, None, ""),
    "scenes_dataset": (str, _one_of(TRANSFER_SCENES), f"must be one of {', '.join(TRANSFER_SCENES)}"),
    "scenes_root": (str, None, ""),
    "canvas": (int, _positive, "must be > 0"),
    "objects": (list, _range_pair, "must be [min, max] ints with 1 <= min <= max"),
    "object_scale": (list, _positive_pair, "must be [min, max] with 0 < min <= max"),
    "train": (int, _positive, "must be > 0"),
    "val": (int, _positive, "must be > 0"),
    "test": (int, _positive, "must be > 0"),
    "fewshot_dataset": (str, _one_of(TRANSFER_FEWSHOT), f"must be one of {', '.join(TRANSFER_FEWSHOT)}"),
    "fewshot_root": (str, None, ""),
    "fewshot_limit": (int, _non_negative, "must be >= 0 (0 = all)"),
    "fewshot_per_class": (int, _positive, "must be > 0"),
    "fewshot_splits": (int, _positive, "must be > 0"),
    "fewshot_cv_folds": (int, lambda v: v >= 2, "must be >= 2"),
    "exclude_classes": (list, lambda v: all(isinstance(x, str) for x in v), "must list class directory names"),
    "svm_C": (list, _positive_numbers, "must list positive numbers"),
    "fewshot_svm_C": (list, _positive_numbers, "must list positive numbers"),
}


def transfer_section(all_params):
    """The validated `transfer` section (App. B), with the checks that span keys."""
    t = section(all_params, "transfer")
    if t["single_scale"] not in t["scales"]:
        raise StageError(f"transfer.single_scale: {t['single_scale']} is not one of transfer.scales {t['scales']}")
    return t
