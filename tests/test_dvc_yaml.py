"""dvc.yaml against the code: each stage lists exactly the project modules its command imports,
so DVC re-runs a stage when, and only when, code it runs has changed."""
import ast
import re
from pathlib import Path

import yaml

from conftest import ROOT

PACKAGES = ("vgg", "stages")


def module_file(name):
    """'vgg.data' -> 'vgg/data.py' (None for a package's __init__, which holds only a docstring)."""
    path = name.replace(".", "/") + ".py"
    return path if (ROOT / path).is_file() else None


def imported_modules(path):
    """Project modules a file imports anywhere in it (top level or inside functions)."""
    package = path.rsplit("/", 1)[0].replace("/", ".")
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else ""
            base = ".".join(filter(None, [base, node.module or ""])) if node.level else node.module
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES and module_file(name)}


def closure(path):
    """`path` and every project module it imports, directly or through another module."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [module_file(name) for name in imported_modules(current)]
    return seen


def expanded_stages():
    """name -> {cmd, deps, outs} of every stage, foreach and matrix groups expanded by DVC itself
    (`train_256@B-0`, `fuse_ilsvrc7@0`; params.yaml's `seeds` and other values interpolated); deps
    without the params dependencies, outs with metrics and plots."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    stages = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            stages[stage.addressing] = {
                "cmd": stage.cmd,
                "deps": [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                "outs": [o.def_path for o in stage.outs]}
    return stages


def test_every_stage_lists_exactly_the_modules_its_command_imports():
    problems = []
    for name, stage in expanded_stages().items():
        module = re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1)
        needed = closure(module_file(module))
        listed = {d for d in stage["deps"] if isinstance(d, str) and d.endswith(".py")}
        if needed - listed:
            problems.append(f"{name}: missing {sorted(needed - listed)}")
        if listed - needed:
            problems.append(f"{name}: lists unused {sorted(listed - needed)}")
    assert not problems, "\n".join(problems)


def test_the_import_scan_sees_lazy_and_relative_imports():
    # vgg/models.py imports vgg/io.py only inside load_model; the closure must still hold it.
    assert "vgg/io.py" in closure("vgg/models.py")
    assert {"stages/train.py", "vgg/train.py", "vgg/device.py", "vgg/transforms.py"} <= closure("stages/train.py")


def test_each_fusion_stage_depends_only_on_its_members_predictions_of_its_seed():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = expanded_stages()
    for name, ensemble in params["fuse"]["ensembles"].items():
        protocols = ensemble["protocol"].split("+")
        for seed in params["seeds"]:
            expected = {f"preds/seed{seed}/{net}_{scale}/{protocol}.pt" for net, scale, _ in
                        (m.split("/") for m in ensemble["members"]) for protocol in protocols}
            listed = {d for d in stages[f"fuse_{name}@{seed}"]["deps"] if d.startswith("preds/")}
            assert listed == expected, (name, seed)


def test_every_net_is_trained_and_evaluated_once_per_seed_from_its_own_seed():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = expanded_stages()
    trained = {o for s in stages.values() for o in s["outs"] if re.fullmatch(r"models/seed\d+/[^/]+\.pt", o)}
    runs = params["report"]["runs"]
    assert trained == {f"models/seed{k}/{run}.pt" for k in params["seeds"] for run in runs}
    for name, stage in stages.items():
        seeds = set(re.findall(r"seed(\d+)/", " ".join(stage["deps"] + stage["outs"])))
        # A replicate never reads another seed's files; transfer's garment rows read the first seed's nets only.
        assert len(seeds) <= 1, name
        if name.startswith(("features_garment", "transfer_garment")):
            assert seeds == {str(params["seeds"][0])}, name
    # App. A: every localisation setting at both S once per seed, from D of that seed at the same S.
    loc = {o for s in stages.values() for o in s["outs"] if o.startswith("models/") and "/loc/" in o}
    settings = [f"{r}-{layers}_{s}" for r, layers in (("SCR", "fc"), ("PCR", "fc"), ("PCR", "all")) for s in (256, 384)]
    assert set(params["localisation_seeds"]) <= set(params["seeds"])
    assert loc == {f"models/seed{k}/loc/{setting}.pt" for k in params["localisation_seeds"] for setting in settings}
    for seed in params["localisation_seeds"]:
        for s in (256, 384):
            assert f"models/seed{seed}/D_{s}.pt" in stages[f"train_loc@PCR-all-{s}-{seed}"]["deps"]
        assert {f"models/seed{seed}/D_256.pt", f"models/seed{seed}/D_384.pt", f"models/seed{seed}/loc/PCR-all_256.pt",
                f"models/seed{seed}/loc/PCR-all_384.pt"} <= set(stages[f"localise_dense@{seed}"]["deps"])
    # App. B: the target sets described by D and E of every seed, the SVMs on that seed's descriptors.
    nets = params["transfer"]["nets"]
    for seed in params["seeds"]:
        for task in ("scenes", "fewshot"):
            assert {f"models/seed{seed}/{nets['D']}.pt", f"models/seed{seed}/{nets['E']}.pt"} <= set(
                stages[f"features_{task}@{seed}"]["deps"])
            assert set(stages[f"features_{task}@{seed}"]["outs"]) <= set(stages[f"transfer_{task}@{seed}"]["deps"])
    for seed in params["seeds"]:
        assert f"models/seed{seed}/A_256.pt" in stages[f"init_from_a@{seed}"]["deps"]
        assert f"models/seed{seed}/D_256.pt" in stages[f"finetune_384@D-{seed}"]["deps"]


def test_every_data_path_a_stage_reads_or_writes_is_on_its_command_line():
    # Code (.py) and the paper's numbers (paper/, read through vgg.paper) are the only implicit inputs;
    # the manifest only triggers `prepare`, which reads the dataset named in params itself.
    implicit = {"paper", "data/manifest.tsv"}
    problems = []
    for name, stage in expanded_stages().items():
        tokens = stage["cmd"].split()
        outs = stage["outs"]
        for path in [d for d in stage["deps"] if not d.endswith(".py") and d not in implicit] + outs:
            parents = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
            if not any(p in tokens for p in parents):
                problems.append(f"{name}: {path}")
    assert not problems, "\n".join(problems)
