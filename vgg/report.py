"""Render the paper's tables from the code and the saved results, beside the paper's numbers."""
from pathlib import Path

import pandas as pd

from .models import FULL_POOLS, build_model, count_parameters, depth, describe_layers, pools_for_crop

TABLE1_NETS = ("A", "A-LRN", "B", "C", "D", "E")
PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"


def paper_csv(name):
    return pd.read_csv(PAPER_DIR / name)


def table1(width=1.0, fc_width=4096, num_classes=1000, nets=TABLE1_NETS, pools=FULL_POOLS):
    """Table 1 generated from CONFIGS: one row per conv block, then the FC layers."""
    columns = {}
    for net in nets:
        blocks, current = [], []
        for layer in describe_layers(net, width, pools):
            if layer.endswith("maxpool"):
                blocks.append((current, layer))
                current = []
            else:
                current.append(layer)
        cells = []
        for layers, pool in blocks:
            cells += ["<br>".join(layers), pool]
        cells += [f"FC-{fc_width}", f"FC-{fc_width}", f"FC-{num_classes}", "soft-max"]
        columns[f"{net} ({depth(net)} weight layers)"] = cells
    rows = [name for b in range(1, len(blocks) + 1) for name in (f"conv block {b}", f"pool {b}")]
    rows += ["fc6", "fc7", "fc8", "output"]
    frame = pd.DataFrame(columns, index=rows)
    frame.index.name = "layer"
    return frame


def table2(scaled_kwargs, nets=TABLE1_NETS):
    """Table 2: exact full-scale parameter counts beside the paper's and the default model's."""
    paper = paper_csv("table2_parameters.csv").set_index("net")
    rows = []
    for net in nets:
        full = count_parameters(build_model(net))
        scaled = count_parameters(build_model(net, **scaled_kwargs))
        rows.append({"net": net, "paper (M)": int(paper.loc[net, "params_millions"]),
                     "ours, full scale": f"{full:,}", "ours, full scale (M)": round(full / 1e6),
                     "matches paper": "yes" if full == int(paper.loc[net, "exact_params"]) else "NO",
                     "ours, default scale": f"{scaled:,}"})
    return pd.DataFrame(rows)


def table1_page(model):
    """reports/table1.md: Table 1 at full scale and at the configured scale."""
    pools = pools_for_crop(model["crop"])
    scaled = table1(width=model["width"], fc_width=model["fc_width"], num_classes=model["num_classes"],
                    pools=pools)
    return ("# Table 1: ConvNet configurations\n\nGenerated from `vgg.models.CONFIGS`, the table that "
            "builds the nets. `convK-C`: K x K conv with C channels.\n\n## Full scale (the paper)\n\n"
            + markdown(table1(), index=True)
            + f"\n## Default scale (width x{model['width']}, FC {model['fc_width']}, "
            f"{model['num_classes']} classes, crop {model['crop']})\n\n"
            f"The crop keeps {pools} of the 5 max-pools, so the last conv map is 7 x 7 as at 224 and fc6 is "
            f"a 7 x 7 layer; '(no maxpool)' marks the ones it drops: the later blocks keep every conv and "
            f"channel count at 7 x 7. A dense class-score map at Q pixels has Q / {2 ** pools} - 6 cells "
            f"per side, as the paper's has Q / 32 - 6 (§3.2).\n\n" + markdown(scaled, index=True))


def table2_page(frame):
    return ("# Table 2: number of parameters\n\nCounted from the built models; full scale = crop 224, "
            "width 1, FC 4096, 1000 classes.\n\n" + markdown(frame))


def claims_page(claims, confidence, samples):
    return results_page(
        "The paper's claims, tested", f"X beats Y: the difference is err(Y) - err(X) in top-1 error points "
        f"(positive = X better), with its {confidence:.0%} percentile interval from {samples:,} paired "
        "bootstrap resamples of the test images. Verdict: reproduced if the interval lies above 0, "
        "contradicted if below, else inconclusive; for a 'does not help' claim, contradicted only if X "
        "is significantly better.", claims)


def markdown(frame, index=False, **tabulate_options):
    return frame.to_markdown(index=index, **tabulate_options) + "\n"


TABLE_TITLES = {
    "table3": "Table 3: ConvNet performance at a single test scale",
    "table4": "Table 4: ConvNet performance at multiple test scales",
    "table5": "Table 5: ConvNet evaluation techniques comparison",
    "table6": "Table 6: Multiple ConvNet fusion results",
    "table7": "Table 7: Comparison with the state of the art in ILSVRC classification",
}
# Every scale the paper's Tables 3-6 name, for the README's paper-unit -> pixel table.
PAPER_SCALES = (224, 256, 288, 352, 384, 416, 512)


def results_page(title, intro, frame, sections=None):
    """A Markdown page: title, what the numbers are, and the table (errors in %, 2 decimals,
    empty cells blank); `sections` (heading -> row mask) splits it into sub-tables."""
    page = f"# {title}\n\n{intro}\n"
    for heading, rows in (sections or {None: slice(None)}).items():
        part = frame[rows].dropna(axis=1, how="all")
        page += f"\n## {heading}\n" if heading else ""
        page += "\n" + markdown(part.astype(object).where(part.notna(), None), floatfmt=".2f", missingval="")
    return page


def pixel_table(crop):
    """Paper scale (for a 224 crop) -> pixels at this crop (`vgg.transforms.pixels`)."""
    from .transforms import pixels
    frame = pd.DataFrame({"paper S or Q": ["pixels"]})
    for q in PAPER_SCALES:
        frame[str(q)] = [pixels(q, crop)]
    return frame


def readme(data, model, schedules, compute, n_images, claims, training, confidence, metrics_path, samples=False):
    """reports/README.md: the setting (dataset, scale, compute) and links to every table and figure."""
    counts = claims["verdict"].value_counts()
    lines = [
        "# VGG (Simonyan & Zisserman 2014) reproduction: report", "",
        "Generated by `python -m stages.report` from the configuration table, the saved posteriors "
        "and the training logs; the paper's numbers are joined in from `paper/`.", "",
        "## Setting", "",
        f"- **Dataset**: `{data['dataset']}` (`{data['root']}`); our errors are on the {n_images:,} images "
        f"of the evaluate stage's predictions, {model['num_classes']} classes. The paper's are on "
        "ILSVRC-2012 (1000 classes), validation unless marked test.",
    ]
    if data["dataset"] == "fashion_mnist":
        lo, hi = data["object_scale"]
        lines.append(
            "- **Objects at many scales**: " + (
                "plain Fashion-MNIST (object_scale [1, 1]): every garment fills its 28-px frame, at one scale."
                if (lo, hi) == (1, 1) else
                f"every train, validation and test garment is shrunk by a factor drawn log-uniformly from "
                f"[{lo}, {hi}] and placed at a random position of its 28-px canvas (`data.object_scale`, "
                f"seed `data.seed`), so objects vary in scale as ILSVRC's do; each image keeps its "
                f"object's tight box." + (" Samples, boxes in orange:" if samples else "")))
        if samples:
            lines += ["", "  ![test images with their object boxes](samples.png)", ""]
    lines += [
        f"- **Scale**: conv widths x{model['width']} of Table 1, FC layers {model['fc_width']} wide "
        f"(4096 in the paper), crop {model['crop']} px (224 in the paper). Tables keep the paper's "
        f"labels for training scale S and test scale Q; in pixels, a scale is round(Q x {model['crop']} / 224). "
        f"The crop keeps {pools_for_crop(model['crop'])} of the 5 max-pools, so the last conv map is 7 x 7 "
        f"as at 224 ([Table 1](table1.md)):",
        "", markdown(pixel_table(model["crop"])).rstrip(), "",
        "- **Compute**: " + "; ".join(
            f"{name}: {hp['epochs']} epochs, lr {hp['lr']}, S={hp['scale_min']}"
            + (f"-{hp['scale_max']}" if hp["scale_max"] != hp["scale_min"] else "")
            for name, hp in schedules.items())
        + f" (the paper: 74 epochs); batch {schedules['train']['batch_size']}, "
        f"bf16 {'on' if schedules['train']['bf16'] else 'off'}.",
    ]
    lines += [f"  - {key}: {value}" for key, value in (compute or {}).items()]
    lines += [
        "", "## Tables", "",
        "- [Table 1](table1.md): ConvNet configurations",
        "- [Table 2](table2.md) ([csv](table2.csv)): number of parameters",
    ]
    lines += [f"- [{title.split(':')[0]}]({name}.md) ([csv]({name}.csv)):{title.split(':', 1)[1]}"
              for name, title in TABLE_TITLES.items()]
    lines += [
        f"- [Claims](claims.md) ([csv](claims.csv)): each conclusion of the paper with our difference and "
        f"its {confidence:.0%} paired-bootstrap interval: "
        + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("reproduced", "contradicted", "inconclusive")) + ".",
        f"- Flat metrics: `{metrics_path}`", "",
        markdown(claims[["claim", "ours: err(Y) - err(X)", "CI low", "CI high", "verdict"]], floatfmt=".2f"),
        "## Figures", "",
        "![validation top-1 error against epoch](training_curves.png)", "",
        "![top-1 error against depth](error_vs_depth.png)", "",
        "![top-1 error against test scale Q](error_vs_test_scale.png)", "",
        "## Training", "",
        markdown(training, floatfmt=".2f"),
    ]
    return "\n".join(lines)
