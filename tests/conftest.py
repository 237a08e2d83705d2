from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def tiny_params(**overrides):
    """The repo's params.yaml shrunk to a few hundred real images and narrow nets."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seeds"] = [0, 1]  # two trainings of every net: the seed dimension end to end, at two thirds the cost
    params["localisation_seeds"] = [0, 1]  # App. A per seed too (the default trains the first seed's only)
    params["data"].update(train_limit=320, test_limit=64, val_size=64)
    params["model"].update(width=0.0625, fc_width=32)
    params["train"].update(epochs=1, batch_size=64)
    params["finetune"].update(epochs=1)
    params["jitter"].update(epochs=1)
    params["localisation"].update(epochs=1)
    params["transfer"].update(train=40, val=20, test=40, fewshot_limit=200, fewshot_per_class=5, fewshot_cv_folds=2)
    for key, value in overrides.items():
        section, name = key.split(".")
        params[section][name] = value
    return params


def write_params(path, params):
    Path(path).write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Prepared plain Fashion-MNIST splits (256 train, 64 val, 64 test) and their mean RGB."""
    from stages import mean_rgb, prepare
    root = tmp_path_factory.mktemp("tiny_data")
    # Plain Fashion-MNIST: on the scale-varied set's black canvas, max-pool windows of equal values
    # route the gradient by a tie-break that depends on the batch shape, so one process and two
    # differ by ~1e-3 after 10 steps (test_two_processes_match_one needs exact ties).
    params = write_params(root / "params.yaml", tiny_params(**{"data.object_scale": [1.0, 1.0]}))
    prepare.main(["--params", str(params), "--out", str(root / "prepared")])
    mean_rgb.main(["--params", str(params), "--train", str(root / "prepared" / "train.pt"),
                   "--out", str(root / "mean_rgb.json")])
    return root
