"""Stages `init_scratch` and `init_from_a`: a net's initial weights (§3.1).

A and A-LRN start from random weights (params `init`). A deeper net (B-E), given `--net-a`, takes
its first four conv layers and three FC layers from the trained net A; the rest is random.
"""
import argparse

import torch

from vgg import io, models, params


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--net", required=True)
    parser.add_argument("--net-a", help="trained net A to copy from; omitted = all layers random")
    parser.add_argument("--seed", type=int, default=0, help="training replicate (params `seeds`): offsets "
                        "init.seed by vgg.params.SEED_STRIDE x seed")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    net = params.check_net(args.net)
    model_params = params.section(all_params, "model")
    init_params = params.section(all_params, "init")
    if args.seed < 0:
        raise io.StageError(f"--seed: {args.seed} must be >= 0")
    init_params["seed"] = params.replicate_seed(init_params["seed"], args.seed)
    kwargs = params.model_kwargs(model_params)
    model = models.build_model(net, **kwargs)
    if args.net_a is None:
        models.initialise(model, init_params["scheme"], init_params["std"],
                          torch.Generator().manual_seed(init_params["seed"]))
        io.atomic_save(models.model_record(model, kwargs, init=init_params["scheme"]), args.out)
        print(f"init_scratch: {net}: random ({init_params['scheme']}) -> {args.out}")
        return
    net_a, _ = models.load_model(args.net_a, "A")
    # A different seed per net, so B-E do not share their random layers.
    seed = init_params["seed"] + models.NETS.index(net) + 1
    models.initialise(model, init_params["scheme"], init_params["std"], torch.Generator().manual_seed(seed))
    try:
        copied = models.init_from_net_a(model, net_a)
    except ValueError as exc:
        raise io.StageError(f"{args.net_a}: cannot initialise {net} from it ({exc})") from None
    io.atomic_save(models.model_record(model, kwargs, init_from=args.net_a, copied_from_a=copied), args.out)
    print(f"init_from_a: {net}: {', '.join(copied)} from {args.net_a}; other layers random -> {args.out}")

if __name__ == "__main__":
    main()
