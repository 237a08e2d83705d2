"""Stage `report`: render the paper's tables into reports/, our numbers beside the paper's."""
import argparse
from pathlib import Path

from vgg import io, params, report


@io.stage_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="reports", type=Path)
    args = parser.parse_args(argv)

    all_params = params.load_params(args.params)
    model = params.section(all_params, "model")
    scaled = params.model_kwargs(model)
    tmp = io.temp_dir_beside(args.out)
    t1_full = report.table1()
    t1_scaled = report.table1(width=model["width"], fc_width=model["fc_width"], num_classes=model["num_classes"])
    (tmp / "table1.md").write_text(
        "# Table 1: ConvNet configurations\n\nGenerated from `vgg.models.CONFIGS`, the table that "
        "builds the nets. `convK-C`: K x K conv with C channels.\n\n## Full scale (the paper)\n\n"
        + report.markdown(t1_full, index=True)
        + f"\n## Default scale (width x{model['width']}, FC {model['fc_width']}, "
        f"{model['num_classes']} classes, crop {model['crop']})\n\n" + report.markdown(t1_scaled, index=True))
    t2 = report.table2(scaled)
    t2.to_csv(tmp / "table2.csv", index=False)
    (tmp / "table2.md").write_text(
        "# Table 2: number of parameters\n\nCounted from the built models; full scale = crop 224, "
        "width 1, FC 4096, 1000 classes.\n\n" + report.markdown(t2))
    io.replace_dir(tmp, args.out)
    print(f"report: wrote {', '.join(sorted(p.name for p in args.out.iterdir()))}")


if __name__ == "__main__":
    main()
