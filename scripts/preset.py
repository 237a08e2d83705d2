"""Print a preset (presets/<name>.yaml) plus KEY=VALUE overrides as `-S` flags for `dvc exp run`.

    dvc exp run -n ilsvrc2012 $(python -m scripts.preset presets/ilsvrc2012.yaml data.root=/data/ILSVRC2012)

The merged params are validated first (every section of vgg.params.SCHEMA), so a bad preset or
override is a one-line error here, not a failed stage later.
"""
import argparse

from vgg import io, params


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    overrides = params.preset_overrides(args.preset, args.overrides)
    params.apply_overrides(params.load_params(args.params), overrides, validate=True)
    print(" ".join(params.override_flag(key, value) for key, value in overrides.items()))


if __name__ == "__main__":
    main()
