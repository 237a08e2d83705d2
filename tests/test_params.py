"""params.yaml is validated before a stage writes anything; every error is one line naming the key."""
import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

import stages.prepare
import stages.report
from vgg import params as P
from vgg.io import StageError

REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


@pytest.fixture(scope="module")
def repo_params():
    return P.load_params(REPO_PARAMS)


@pytest.fixture
def params(repo_params):
    return copy.deepcopy(repo_params)


def error_of(fn, *args):
    with pytest.raises(StageError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_repo_params_validate(repo_params):
    present = [name for name in P.SCHEMA if name in repo_params]
    # The stages of dvc.yaml read at least these.
    assert {"data", "mean_rgb", "model", "init", "train", "finetune", "jitter"} <= set(present)
    for name in present:
        assert P.section(repo_params, name) == repo_params[name]


def test_section_returns_a_copy(params):
    model = P.section(params, "model")
    model["crop"] = 1
    assert params["model"]["crop"] != 1


@pytest.mark.parametrize("net", ["A", "A-LRN", "B", "C", "D", "E"])
def test_check_net_accepts_table_1_nets(net):
    assert P.check_net(net) == net


def test_unknown_net_names_the_option():
    message = error_of(P.check_net, "F")
    assert message.startswith("--net: ")
    assert "unknown net 'F'" in message


@pytest.mark.parametrize("section, key, value, start", [
    ("model", "crop", 100, "model.crop: 100"),
    ("model", "crop", 0, "model.crop: 0"),
    ("model", "crop", -32, "model.crop: -32"),
    ("train", "lr", -0.1, "train.lr: -0.1"),
    ("train", "lr", 0, "train.lr: 0"),
    ("train", "momentum", 1.0, "train.momentum: 1.0"),
    ("train", "lr_factor", 1, "train.lr_factor: 1"),
    ("data", "dataset", "imagenet", "data.dataset: 'imagenet'"),
    ("data", "val_size", 0, "data.val_size: 0"),
    ("data", "train_limit", -1, "data.train_limit: -1"),
    ("init", "scheme", "kaiming", "init.scheme: 'kaiming'"),
    ("jitter", "train_scale_min", 0, "jitter.train_scale_min: 0"),
    ("mean_rgb", "max_images", -5, "mean_rgb.max_images: -5"),
])
def test_out_of_range_value_is_an_error_naming_the_key(params, section, key, value, start):
    params[section][key] = value
    assert error_of(P.section, params, section).startswith(start)


@pytest.mark.parametrize("section, key, text", [
    ("train", "lr", ".inf"), ("train", "lr", "1000000.0"), ("finetune", "lr", "2.0"), ("jitter", "lr", ".nan"),
    ("train", "weight_decay", ".inf"), ("model", "width", ".inf"), ("report", "confidence", ".nan"),
    ("train", "lr_threshold", ".inf"),
])
def test_a_non_finite_or_absurd_float_written_in_yaml_is_an_error_naming_the_key(tmp_path, params, section, key, text):
    # Written as YAML text, as a user would: `.inf` and `.nan` are YAML floats that pass `> 0` checks.
    params[section][key] = "PLACEHOLDER"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params).replace("PLACEHOLDER", text))
    message = error_of(P.section, P.load_params(path), section)
    assert message.startswith(f"{section}.{key}: ")


def test_dataset_error_lists_the_choices(params):
    params["data"]["dataset"] = "imagenet"
    message = error_of(P.section, params, "data")
    assert "fashion_mnist" in message and "imagefolder" in message


@pytest.mark.parametrize("section, key", [("train", "learning_rate"), ("model", "widht"), ("data", "seeds")])
def test_misspelt_key_is_an_unknown_key(params, section, key):
    params[section][key] = 1
    assert error_of(P.section, params, section).startswith(f"{section}.{key}: unknown key")


@pytest.mark.parametrize("section, key", [("model", "width"), ("train", "flip"), ("jitter", "train_scale_max")])
def test_missing_key_is_an_error_naming_it(params, section, key):
    del params[section][key]
    assert error_of(P.section, params, section) == f"{section}.{key}: missing"


def test_missing_section_is_an_error_naming_it(params):
    del params["jitter"]
    assert error_of(P.section, params, "jitter").startswith("jitter: section missing")
    params["finetune"] = None  # `finetune:` with nothing under it
    assert error_of(P.section, params, "finetune").startswith("finetune: ")


@pytest.mark.parametrize("section, key", [("train", "batch_size"), ("train", "epochs"), ("model", "crop"),
                                          ("data", "seed"), ("train", "lr")])
def test_bool_is_not_a_number(params, section, key):
    params[section][key] = True
    message = error_of(P.section, params, section)
    assert message.startswith(f"{section}.{key}: expected")
    assert "True" in message


def test_bool_given_for_a_string_key_says_a_string_is_expected(params):
    params["data"]["dataset"] = True  # YAML `dataset: yes`
    assert error_of(P.section, params, "data") == "data.dataset: expected a string, got True"


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "epochs", 2.5, "train.epochs: expected an integer, got 2.5"),
    ("train", "flip", "yes please", "train.flip: expected true or false, got 'yes please'"),
    ("data", "root", 3, "data.root: expected a string, got 3"),
    ("model", "width", "wide", "model.width: expected a number, got 'wide'"),
    ("model", "fc_width", None, "model.fc_width: expected an integer, got None"),
])
def test_wrong_type_is_an_error_naming_the_key(params, section, key, value, expected):
    params[section][key] = value
    assert error_of(P.section, params, section) == expected


def test_an_int_is_accepted_where_a_number_is_expected(params):
    params["train"]["lr"] = 1
    params["model"]["width"] = 2
    assert P.section(params, "train")["lr"] == 1
    assert P.section(params, "model")["width"] == 2


def test_load_params_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert error_of(P.load_params, missing).startswith(f"{missing}: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert error_of(P.load_params, bad).startswith(f"{bad}: invalid YAML")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    assert error_of(P.load_params, scalar).startswith(f"{scalar}: ")


def write(path, params):
    path.write_text(yaml.safe_dump(params))
    return str(path)


def run_failing_stage(module, argv, capsys):
    with pytest.raises(SystemExit) as info:
        module.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("stage, section, key, value, out", [
    ("prepare", "data", "dataset", "imagenet", "prepared"),
    ("report", "model", "crop", 100, "reports"),
])
def test_stage_rejects_a_bad_param_before_writing(tmp_path, params, capsys, stage, section, key, value, out):
    params[section][key] = value
    path = write(tmp_path / "params.yaml", params)
    out = tmp_path / out
    line = run_failing_stage(getattr(stages, stage), ["--params", path, "--out", str(out)], capsys)
    assert line.startswith(f"error: {section}.{key}")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_with_a_missing_params_file_names_it(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    line = run_failing_stage(stages.prepare, ["--params", str(missing), "--out", str(tmp_path / "out")], capsys)
    assert line.startswith(f"error: {missing}")
    assert not (tmp_path / "out").exists()


def test_schedules_follow_section_3_1(repo_params):
    train = P.schedule(repo_params, "train")
    assert (train.scale_min, train.scale_max) == (256, 256)
    assert train.lr == repo_params["train"]["lr"]

    finetune = P.schedule(repo_params, "finetune")
    assert (finetune.scale_min, finetune.scale_max) == (384, 384)
    assert finetune.lr == repo_params["finetune"]["lr"]
    assert finetune.lr < train.lr  # fine-tuning with a smaller learning rate
    assert finetune.epochs == repo_params["finetune"]["epochs"]
    assert finetune.momentum == repo_params["train"]["momentum"]  # not overridden: from train

    jitter = P.schedule(repo_params, "jitter")
    assert (jitter.scale_min, jitter.scale_max) == (256, 512)
    assert jitter.lr == repo_params["jitter"]["lr"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.lr = 1.0  # a schedule is read, never changed, below the stage that built it
    # Every key of the train section but train_scale, which became scale_min / scale_max.
    fields = {f.name for f in dataclasses.fields(P.Schedule)}
    assert fields == set(repo_params["train"]) - {"train_scale"} | {"scale_min", "scale_max"}


def test_seeds_are_a_non_empty_list_of_distinct_replicates(params):
    assert P.seeds({"seeds": [0, 1, 2]}) == [0, 1, 2]
    for bad in ([], [0, 0], [-1], [0.5], "0", None, [True]):
        with pytest.raises(StageError, match=r"^seeds: "):
            P.seeds({"seeds": bad})
    assert P.replicate_seed(0, 0) == 0 and P.replicate_seed(7, 2) == 7 + 2 * P.SEED_STRIDE


def test_fine_tunes_end_on_their_plateau(repo_params):
    for name in ("finetune", "jitter"):
        hp = P.schedule(repo_params, name)
        assert hp.max_lr_drops >= 1  # at least one drop before the plateau that ends the run


def test_schedule_errors(params):
    message = error_of(P.schedule, params, "warmup")
    assert message.startswith("--schedule: ")
    assert "'warmup'" in message
    params["jitter"]["train_scale_min"] = 600
    assert error_of(P.schedule, params, "jitter").startswith("jitter.train_scale_min: 600")
    params["finetune"]["lr"] = -1
    assert error_of(P.schedule, params, "finetune").startswith("finetune.lr: -1")


def test_model_kwargs_build_the_configured_model(repo_params):
    from vgg.models import build_model

    kwargs = P.model_kwargs(P.section(repo_params, "model"))
    assert "dropout" not in kwargs  # the training schedule's
    model = build_model("A-LRN", **kwargs, dropout=0.3)
    m = repo_params["model"]
    assert model.crop == m["crop"]
    assert model.classifier[6].out_features == m["num_classes"]
    assert model.classifier[0].out_features == m["fc_width"]
    assert model.classifier[2].p == 0.3
    lrn = model.features[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (m["lrn_size"], m["lrn_alpha"], m["lrn_beta"], m["lrn_k"])
