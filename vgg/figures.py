"""The report's figures (PNG): training curves, error against depth, error against test scale Q."""
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .tables import OURS_TOP1, OURS_TOP1_SD, PAPER_TOP1, split_run

SCHEDULES = {"256": "S=256", "384": "S=384 (fine-tuned from S=256)",
             "256-512": "S=256-512 (fine-tuned from S=384)"}
NET_COLOURS = {"A": "tab:gray", "A-LRN": "tab:brown", "B": "tab:purple", "B-5x5": "tab:pink", "C": "tab:blue",
               "D": "tab:green", "E": "tab:red"}
SCALE_STYLES = {"256": ":", "384": "--", "256-512": "-"}


def _figure(width, height):
    # A bare Figure, not pyplot: no global state or display; PNGs are drawn by the Agg canvas.
    return Figure(figsize=(width, height), layout="tight")


def _save(fig, path):
    fig.savefig(path, dpi=120, format="png")


def training_curves(curves, path, name="val_top1_err"):
    """Validation top-1 error against epoch, one panel per training scale S (§3.1's schedules); every
    seed's curve of a net in the net's colour (keys 'seed<k>/<net>_<S>' or '<net>_<S>')."""
    groups = [s for s in SCHEDULES if any(split_run(key)[0].split("_", 1)[1] == s for key in curves)]
    fig = _figure(5 * len(groups), 4)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    for ax, s in zip(axes[0], groups):
        labelled = set()
        for key, curve in curves.items():
            net, scale = split_run(key)[0].split("_", 1)
            if scale == s:
                ax.plot(curve["epoch"], curve[name], marker="o", ms=2, lw=1, alpha=0.8,
                        label=None if net in labelled else net, color=NET_COLOURS.get(net))
                labelled.add(net)
        ax.set(title=SCHEDULES[s], xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation top-1 error (%)")
    _save(fig, path)


def error_vs_depth(rows, path):
    """Top-1 error of A, B, C, D, E (S=256, single scale Q=256) against weight layers: paper and ours
    (mean over seeds, error bars one seed-to-seed sd)."""
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    for ax, column, title in ((axes[0], PAPER_TOP1, "paper (ILSVRC-2012 val)"),
                              (axes[1], OURS_TOP1, "ours (mean ± sd over seeds)")):
        sd = rows[OURS_TOP1_SD] if column == OURS_TOP1 and OURS_TOP1_SD in rows else None
        ax.errorbar(rows["weight layers"], rows[column], yerr=sd, fmt="o-", color="tab:blue", capsize=3)
        for _, row in rows.iterrows():
            ax.annotate(row["ConvNet"], (row["weight layers"], row[column]), textcoords="offset points",
                        xytext=(5, 5))
        ax.set(title=title, xlabel="weight layers", ylabel="top-1 error (%)")
        ax.set_xticks(sorted(set(rows["weight layers"])))
        ax.grid(alpha=0.3)
    _save(fig, path)


def error_vs_test_scale(rows, path):
    """Single-scale dense top-1 error against test scale Q (paper units), one line per model: the mean
    over seeds, each seed's value as a point."""
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    for run, group in rows.groupby("run", sort=False):
        net, s = group["ConvNet"].iloc[0], group["train S"].iloc[0]
        mean = group.groupby("Q", sort=True)[OURS_TOP1].mean()
        ax.plot(mean.index, mean.values, marker="o", ls=SCALE_STYLES.get(s, "-"),
                color=NET_COLOURS.get(net), label=f"{net}, S={s}")
        ax.scatter(group["Q"], group[OURS_TOP1], s=8, alpha=0.5, color=NET_COLOURS.get(net))
    ax.set(xlabel="test scale Q (paper units)", ylabel="top-1 error (%), ours", title="error against test scale")
    ax.set_xticks(sorted(set(rows["Q"])))
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, path)


def sample_images(split, path, count=40, columns=10):
    """The first `count` test images with their class and, where the split has them, their object boxes
    (the scale-varied Fashion-MNIST of `prepare`). Returns False, drawing nothing, for a file-list split."""
    from matplotlib.patches import Rectangle
    if split["kind"] != "tensor":
        return False
    count = min(count, len(split["labels"]))
    rows = -(-count // columns)
    fig = _figure(1.3 * columns, 1.45 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= count:
            continue
        ax.imshow(split["images"][i].permute(1, 2, 0).numpy(), interpolation="nearest")
        if "boxes" in split:
            x0, y0, x1, y1 = split["boxes"][i].tolist()
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="tab:orange", lw=1))
        ax.set_title(split["classes"][int(split["labels"][i])], fontsize=7)
    _save(fig, path)
    return True


def localisation_samples(split, classes, boxes, path, count=30, columns=10):
    """Test images with their true box (orange) and the predicted top-1 box (cyan) and class."""
    from matplotlib.patches import Rectangle
    if split["kind"] != "tensor":
        return False
    count = min(count, len(split["labels"]))
    rows = -(-count // columns)
    fig = _figure(1.3 * columns, 1.45 * rows)
    for i, ax in enumerate(fig.subplots(rows, columns, squeeze=False).flat):
        ax.set_axis_off()
        if i >= count:
            continue
        ax.imshow(split["images"][i].permute(1, 2, 0).numpy(), interpolation="nearest")
        for box, colour in ((split["boxes"][i], "tab:orange"), (boxes[i], "tab:cyan")):
            x0, y0, x1, y1 = [float(v) for v in box]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1))
        ax.set_title(split["classes"][int(classes[i])], fontsize=7)
    _save(fig, path)
    return True


VERDICT_COLOURS = {"reproduced": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}


def claims_forest(parts, path):
    """Every claim's difference (positive: the paper's winner better) with its interval, coloured by
    verdict, and the paper's difference beside it (a forest plot). `parts`: {title: claims frame}; each
    frame has the columns of vgg.tables' claims (the difference is the first column starting 'ours:', the
    paper's the first starting 'paper:'; those of the 'does not help' claim count the candidate's gain)."""
    rows = []
    for title, frame in parts.items():
        ours = next(c for c in frame.columns if c.startswith("ours:"))
        paper = next((c for c in frame.columns if c.startswith("paper:")), None)
        for key, row in frame.iterrows():
            rows.append((f"{title}: {key}", row[ours], row["CI low"], row["CI high"],
                         row[paper] if paper is not None else None, row["verdict"], row.get("seeds agreeing in sign")))
    fig = _figure(9, 0.32 * len(rows) + 1.2)
    ax = fig.subplots()
    for i, (label, diff, low, high, paper_diff, verdict, agree) in enumerate(rows):
        y = len(rows) - 1 - i
        colour = VERDICT_COLOURS.get(verdict, "black")
        ax.errorbar([diff], [y], xerr=[[diff - low], [high - diff]], fmt="o", color=colour, capsize=3, ms=4)
        if paper_diff is not None and paper_diff == paper_diff:  # not NaN
            ax.plot([paper_diff], [y], marker="x", color="black", ms=6)
        if isinstance(agree, str):
            ax.annotate(agree, (high, y), textcoords="offset points", xytext=(4, -3), fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=7)
    ax.set_xlabel("difference in points (positive: the paper's winner better); x = the paper's value")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
