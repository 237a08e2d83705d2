"""Stages `init_scratch` and `init_from_a`: nets' initial weights (§3.1), one stage per seed.

A and A-LRN start from random weights (params `init`). A deeper net (B-E), given `--net-a`, takes
its first four conv layers and three FC layers from the trained net A; the rest is random.

Several nets per call (`--net B C D E --out <one file each>`): the nets of a stage read the same
files and params, so no change can touch one of them without the others, and one process instead
of one per net saves DVC's and torch's start-up (about 4 s a net, docs/results.md). Each net's
weights are the same as from a call of its own.
"""
import argparse

import torch

from vgg import io, models, params


def initial_weights(net, kwargs, init_params, net_a=None, net_a_path=None):
    """(model record, what the stage prints) of `net`'s initial weights."""
    model = models.build_model(net, **kwargs)
    if net_a is None:
        models.initialise(model, init_params["scheme"], init_params["std"],
                          torch.Generator().manual_seed(init_params["seed"]))
        return (models.model_record(model, kwargs, init=init_params["scheme"]),
                f"init_scratch: {net}: random ({init_params['scheme']})")
    # A different seed per net, so B-E do not share their random layers.
    seed = init_params["seed"] + models.NETS.index(net) + 1
    models.initialise(model, init_params["scheme"], init_params["std"], torch.Generator().manual_seed(seed))
    try:
        copied = models.init_from_net_a(model, net_a)
    except ValueError as exc:
        raise io.StageError(f"{net_a_path}: cannot initialise {net} from it ({exc})") from None
    return (models.model_record(model, kwargs, init_from=net_a_path, copied_from_a=copied),
            f"init_from_a: {net}: {', '.join(copied)} from {net_a_path}; other layers random")


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--net", required=True, nargs="+")
    parser.add_argument("--net-a", help="trained net A to copy from; omitted = all layers random")
    parser.add_argument("--seed", type=int, default=0, help="training replicate (params `seeds`): offsets "
                        "init.seed by vgg.params.SEED_STRIDE x seed")
    parser.add_argument("--out", required=True, nargs="+", help="one file per --net, in their order")
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    if len(args.out) != len(args.net):
        raise io.StageError(f"--out: {len(args.out)} files for {len(args.net)} nets (one per --net)")
    nets = [params.check_net(net) for net in args.net]
    model_params = params.section(all_params, "model")
    init_params = params.section(all_params, "init")
    if args.seed < 0:
        raise io.StageError(f"--seed: {args.seed} must be >= 0")
    init_params["seed"] = params.replicate_seed(init_params["seed"], args.seed)
    kwargs = params.model_kwargs(model_params)
    net_a = None if args.net_a is None else models.load_model(args.net_a, "A")[0]
    # Every net built before any file is written: a net that cannot be initialised leaves no output.
    built = [initial_weights(net, kwargs, init_params, net_a, args.net_a) for net in nets]
    for (record, said), out in zip(built, args.out):
        io.atomic_save(record, out)
        print(f"{said} -> {out}")


if __name__ == "__main__":
    main()
