"""Render the paper's tables from the code and the saved results, beside the paper's numbers."""
from pathlib import Path

import pandas as pd

from .models import CONFIGS, build_model, count_parameters, depth, describe_layers

TABLE1_NETS = ("A", "A-LRN", "B", "C", "D", "E")
PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"


def paper_csv(name):
    return pd.read_csv(PAPER_DIR / name)


def table1(width=1.0, fc_width=4096, num_classes=1000, nets=TABLE1_NETS):
    """Table 1 generated from CONFIGS: one row per conv block, then the FC layers."""
    columns = {}
    for net in nets:
        blocks, current = [], []
        for layer in describe_layers(net, width):
            if layer == "maxpool":
                blocks.append(current)
                current = []
            else:
                current.append(layer)
        cells = []
        for layers in blocks:
            cells += ["<br>".join(layers), "maxpool"]
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


def markdown(frame, index=False):
    return frame.to_markdown(index=index) + "\n"
