"""Stage `prepare`: the dataset as three stored splits (train, val held out of train, test)."""
import argparse
from pathlib import Path

from vgg import data, io, params


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/prepared", type=Path)
    args = parser.parse_args(argv)

    settings = params.section(params.load_params(args.params), "data")
    store, meta = data.prepare(settings)
    tmp = io.temp_dir_beside(args.out)
    for split in data.SPLITS:
        io.atomic_save(store[split], tmp / f"{split}.pt")
    io.atomic_write_json(meta, tmp / "meta.json")
    io.replace_dir(tmp, args.out)
    print(f"prepare: {meta['source']}: " + ", ".join(f"{k} {v}" for k, v in meta["sizes"].items()))


if __name__ == "__main__":
    main()
