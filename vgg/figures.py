"""The report's figures (PNG): training curves, error against depth, error against test scale Q."""
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .tables import OURS_TOP1, PAPER_TOP1

SCHEDULES = {"256": "S=256", "384": "S=384 (fine-tuned from S=256)",
             "256-512": "S=256-512 (fine-tuned from S=384)"}
NET_COLOURS = {"A": "tab:gray", "A-LRN": "tab:brown", "B": "tab:purple", "C": "tab:blue", "D": "tab:green",
               "E": "tab:red"}
SCALE_STYLES = {"256": ":", "384": "--", "256-512": "-"}


def _figure(width, height):
    # A bare Figure, not pyplot: no global state or display; PNGs are drawn by the Agg canvas.
    return Figure(figsize=(width, height), layout="tight")


def _save(fig, path):
    fig.savefig(path, dpi=120, format="png")


def training_curves(curves, path, name="val_top1_err"):
    """Validation top-1 error against epoch, one panel per training scale S (§3.1's schedules)."""
    groups = [s for s in SCHEDULES if any(run.split("_", 1)[1] == s for run in curves)]
    fig = _figure(5 * len(groups), 4)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    for ax, s in zip(axes[0], groups):
        for run, curve in curves.items():
            net, scale = run.split("_", 1)
            if scale == s:
                ax.plot(curve["epoch"], curve[name], marker="o", ms=3, label=net, color=NET_COLOURS.get(net))
        ax.set(title=SCHEDULES[s], xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation top-1 error (%)")
    _save(fig, path)


def error_vs_depth(rows, path):
    """Top-1 error of A, B, C, D, E (S=256, single scale Q=256) against weight layers: paper and ours."""
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    for ax, column, title in ((axes[0], PAPER_TOP1, "paper (ILSVRC-2012 val)"), (axes[1], OURS_TOP1, "ours")):
        ax.plot(rows["weight layers"], rows[column], "o-", color="tab:blue")
        for _, row in rows.iterrows():
            ax.annotate(row["ConvNet"], (row["weight layers"], row[column]), textcoords="offset points",
                        xytext=(5, 5))
        ax.set(title=title, xlabel="weight layers", ylabel="top-1 error (%)")
        ax.set_xticks(sorted(set(rows["weight layers"])))
        ax.grid(alpha=0.3)
    _save(fig, path)


def error_vs_test_scale(rows, path):
    """Single-scale dense top-1 error against test scale Q (paper units), one line per model."""
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    for run, group in rows.groupby("run", sort=False):
        net, s = group["ConvNet"].iloc[0], group["train S"].iloc[0]
        ax.plot(group["Q"], group[OURS_TOP1], marker="o", ls=SCALE_STYLES.get(s, "-"),
                color=NET_COLOURS.get(net), label=f"{net}, S={s}")
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
