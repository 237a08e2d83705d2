"""Stage `manifest`: a list of the dataset's files (path, size, mtime) that `prepare` depends on.

DVC cannot track a dataset that lives outside the repository without copying it; this stage runs
on every `dvc repro` (always_changed), costs a directory walk, and `prepare` re-runs only when the
list changes: a file added, removed or replaced.
"""
import argparse
from collections import Counter
from pathlib import Path

from vgg import data, io, params


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/manifest.tsv", type=Path)
    args = parser.parse_args(argv)

    settings = params.section(params.load_params(args.params), "data")
    rows = data.manifest(settings)
    lines = ["path\tbytes\tmtime_ns\tuse"] + ["\t".join(map(str, row)) for row in rows]
    io.atomic_write_text("\n".join(lines) + "\n", args.out)
    skipped = Counter(Path(row[0]).suffix.lower() or "(none)" for row in rows if row[3] == "skipped")
    note = f"; skipped (not images): {', '.join(f'{n} {ext}' for ext, n in sorted(skipped.items()))}" if skipped else ""
    print(f"manifest: {settings['root']}: {sum(row[3] == 'read' for row in rows)} files read{note} -> {args.out}")


if __name__ == "__main__":
    main()
