"""Per-stage wall times of the last `dvc repro`, from the write times of each stage's outputs.

`dvc repro` runs stages one after another and prints no times; a stage's outputs are written at its
end, so the gap between one stage's newest output and the previous one's is that stage's time
(the first stage's is counted from `--start`, a Unix time, when given). Stages restored from the
cache or skipped keep old outputs: with `--start` they are left out. Take `--start` to the nanosecond:
whole seconds count files a `git clone` wrote in the same second as the start. Run this straight
after the timed run: a later `dvc exp run` (which applies its results to the workspace) or `dvc
checkout` rewrites the outputs and their times.

    python -m scripts.stage_times [--start $(date +%s.%N) taken before dvc repro]
"""
import argparse
import os
import re
from pathlib import Path

import yaml

# Report groups: stage-name prefix -> part of the pipeline.
PARTS = [
    (("manifest", "prepare", "mean_rgb", "init_scratch", "init_from_a"), "data + init"),
    (("train_scratch", "train_256", "finetune_384", "finetune_jitter"), "classification training"),
    (("evaluate_dense", "evaluate_multi_crop", "evaluate_centre", "fuse_"), "classification evaluation + fusion"),
    (("train_loc", "evaluate_loc", "localise_dense"), "localisation (App. A)"),
    (("features_", "transfer_"), "transfer (App. B)"),
    (("report",), "report"),
]


def newest_mtime(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_mtime
    times = [Path(root, f).stat().st_mtime for root, _, files in os.walk(path) for f in files]
    return max(times) if times else None


def defined_stages(root="."):
    """The stage names DVC expands dvc.yaml to, foreach and matrix keys resolved against params.yaml.
    A lock keeps the entry of a removed stage or foreach key (08b17af's `init_scratch@A-0`, replaced by
    `init_scratch@0`), and a current stage may write that entry's outputs: matching on the name before
    '@' would time both."""
    from dvc.repo import Repo

    with Repo(root) as repo:
        return {stage.addressing for stage in repo.index.stages}


def stage_finish_times(lock, defined=None, start=None):
    """(stage, time its newest output was written), oldest first; only stages `defined` (DVC's names,
    `defined_stages`) and written after `start`."""
    finished = {}
    for name, stage in lock["stages"].items():
        if defined is not None and name not in defined:
            continue
        times = [newest_mtime(out["path"]) for out in stage.get("outs", []) if Path(out["path"]).exists()]
        times = [t for t in times if t is not None]
        if times and (start is None or max(times) >= start):
            finished[name] = max(times)
    return sorted(finished.items(), key=lambda kv: kv[1])


def seed_of(name):
    """The seed of a per-seed stage ('train_256@D-1', 'fuse_DE_dense@1', 'train_loc@PCR-all-384-1'), else
    None (shared stages; transfer's `features_*@D` read the first seed's nets for every seed)."""
    match = re.search(r"@(?:.*-)?(\d+)$", name)
    return int(match.group(1)) if match and not name.startswith("features_") else None


def part_of(name):
    for prefixes, part in PARTS:
        if name.startswith(prefixes):
            return part
    return "other"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", default="dvc.lock")
    parser.add_argument("--start", type=float, help="Unix time the repro started (else the first stage is left out)")
    args = parser.parse_args(argv)
    defined = defined_stages(Path(args.lock).parent)
    order = stage_finish_times(yaml.safe_load(Path(args.lock).read_text()), defined, args.start)
    previous = args.start
    parts, seeds = {}, {}
    for name, finished in order:
        if previous is not None:
            seconds = finished - previous
            print(f"{name:40s} {seconds:8.1f} s")
            parts[part_of(name)] = parts.get(part_of(name), 0.0) + seconds
            seeds[seed_of(name)] = seeds.get(seed_of(name), 0.0) + seconds
        previous = finished
    print()
    for part, seconds in parts.items():
        print(f"{part:40s} {seconds:8.1f} s")
    print(f"{'total':40s} {sum(parts.values()):8.1f} s")
    # What one seed costs: the shared stages (data, appendices, report) and each seed's own stages.
    print()
    for seed, seconds in sorted(seeds.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
        print(f"{'shared stages' if seed is None else f'seed {seed}':40s} {seconds:8.1f} s")


if __name__ == "__main__":
    main()
