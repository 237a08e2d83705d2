"""Stage `mean_rgb`: mean RGB of the training set (§2.1) and its RGB covariance eigen-decomposition."""
import argparse

from vgg import data, io, params


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", default="data/prepared/train.pt")
    parser.add_argument("--out", default="data/mean_rgb.json")
    args = parser.parse_args(argv)

    settings = params.section(params.load_params(args.params), "mean_rgb")
    stats = data.rgb_statistics(data.load_split(args.train), settings["max_images"])
    io.atomic_write_json(stats, args.out)
    print(f"mean_rgb: mean {[round(v, 2) for v in stats['mean']]} over {stats['images']} images")


if __name__ == "__main__":
    main()
