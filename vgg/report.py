"""Render the paper's tables from the code and the saved results, beside the paper's numbers."""
from pathlib import Path

import pandas as pd

from . import figures, io, paper, params, stats, tables, transfer
from .models import build_model, pools_for_crop, receptive_field
from .tables import table1



def table1_page(model):
    """reports/table1.md: Table 1 at full scale and at the configured scale."""
    pools = pools_for_crop(model["crop"])
    scaled = table1(width=model["width"], fc_width=model["fc_width"], num_classes=model["num_classes"],
                    pools=pools)
    return ("# Table 1: ConvNet configurations\n\nGenerated from `vgg.configs.CONFIGS`, the table that "
            "builds the nets. `convK-C`: K x K conv with C channels.\n\n## Full scale (the paper)\n\n"
            + markdown(table1(), index=True)
            + f"\n## Default scale (width x{model['width']}, FC {model['fc_width']}, "
            f"{model['num_classes']} classes, crop {model['crop']})\n\n"
            f"The crop keeps {pools} of the 5 max-pools, so the last conv map is 7 x 7 as at 224 and fc6 is "
            f"a 7 x 7 layer; '(no maxpool)' marks the ones it drops: the later blocks keep every conv and "
            f"channel count at 7 x 7. A dense class-score map at Q pixels has Q / {2 ** pools} - 6 cells "
            f"per side, as the paper's has Q / 32 - 6 (§3.2).\n\n" + markdown(scaled, index=True)
            + receptive_field_section(model))


def receptive_field_section(model):
    """What dropping pools does not keep: the receptive field relative to the crop (vgg.models.receptive_field)."""
    crop, records = model["crop"], []
    for net in ("A", "B", "C", "D", "E"):
        record = {"ConvNet": net}
        for size in (224, crop):
            conv, cell = receptive_field(build_model(net, width=1 / 64, fc_width=1, num_classes=1, crop=size))
            record[f"last conv unit, crop {size}"] = f"{conv} px ({conv / size:.1f} crops)"
            record[f"score-map cell, crop {size}"] = f"{cell} px ({cell / size:.1f} crops)"
        records.append(record)
    return ("\n## Receptive fields\n\nPixels of the input that one unit depends on. Dropping pools keeps the "
            "7 x 7 map but not these fields relative to the crop. Where a unit sees more than the crop, a cell of a "
            "dense score map at Q > crop uses image content beyond its window that no zero-padded training crop "
            "showed (docs/scaled_default.md, dense evaluation and context).\n\n"
            + markdown(pd.DataFrame(records)) + "\n")


def table2_page(frame):
    return ("# Table 2: number of parameters\n\nCounted from the built models; full scale = crop 224, "
            "width 1, FC 4096, 1000 classes.\n\n" + markdown(frame))


def claims_page(claims, confidence, samples, margin, n_seeds):
    return results_page(
        "The paper's claims, tested",
        stats.VERDICT_RULES.format(n_seeds=n_seeds, confidence=confidence, samples=samples, margin=margin)
        + "\n\nX beats Y: the difference is err(Y) - err(X) in top-1 error points (positive = X better). "
        "[The claims at a glance](claims_forest.png), beside the paper's differences.",
        claims.drop(columns=[tables.POOL, tables.POOLED_DF, tables.BOOT_LOW, tables.BOOT_HIGH], errors="ignore"))


def markdown(frame, index=False, **tabulate_options):
    return frame.to_markdown(index=index, **tabulate_options) + "\n"


def training_markdown(training, columns=None):
    """A training_summary as markdown: errors to 2 decimals, the learning rate as written (0.001,
    not the 0.00 a fixed 2 decimals would print)."""
    formats = ["g" if column == "initial lr" else ".2f" for column in training.columns]
    return markdown(training.rename(columns=columns or {}), floatfmt=formats)


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
    empty cells blank; each seed's own value only in the CSV); `sections` (heading -> row mask)
    splits it into sub-tables."""
    frame = one_seed_without_sd(frame.drop(columns=tables.per_seed_columns(frame)))
    page = f"# {title}\n\n{intro}\n"
    for heading, rows in (sections or {None: slice(None)}).items():
        part = frame[rows].dropna(axis=1, how="all")
        page += f"\n## {heading}\n" if heading else ""
        page += "\n" + markdown(part.astype(object).where(part.notna(), None), floatfmt=".2f", missingval="")
    return page


def one_seed_without_sd(frame):
    """The seed-to-seed sd columns ("± ...") dropped where every row has one seed: there is no sd to
    show (the CSVs keep the column, 0)."""
    if tables.N_SEEDS in frame.columns and (frame[tables.N_SEEDS].dropna() <= 1).all():
        return frame.drop(columns=[c for c in frame.columns if str(c).startswith("± ")])
    return frame


def pixel_table(crop):
    """Paper scale (for a 224 crop) -> pixels at this crop (`vgg.transforms.pixels`)."""
    from .transforms import pixels
    frame = pd.DataFrame({"paper S or Q": ["pixels"]})
    for q in PAPER_SCALES:
        frame[str(q)] = [pixels(q, crop)]
    return frame


def readme(data, model, schedules, compute, n_images, claims, training, confidence, metrics_path, samples=False,
           appendices=(), seeds=(0,)):
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
        canvas, spread = data["canvas"], data["object_spread"]
        where = ("at a random position" if spread == 1 else
                 f"at a random position within the middle {spread:g} of its free space")
        lines.append(
            "- **Objects at many scales**: " + (
                f"plain Fashion-MNIST (object_scale [1, 1]): every garment fills its {canvas}-px frame, at one scale."
                if (lo, hi) == (1, 1) else
                f"every train, validation and test garment is resized to a side of {lo}-{hi} of a "
                f"{canvas}-px canvas (log-uniform, `data.object_scale`, `data.canvas`) and placed {where} "
                f"(`data.object_spread`, seed `data.seed`), so objects vary in scale as ILSVRC's do; each "
                f"image keeps its object's tight box." + (" Samples, boxes in orange:" if samples else "")))
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
            f"{name}: {hp.epochs} epochs, lr {hp.lr}, S={hp.scale_min}"
            + (f"-{hp.scale_max}" if hp.scale_max != hp.scale_min else "")
            for name, hp in schedules.items())
        + f" (the paper: 74 epochs); epochs are a bound: each run stops on the plateau rule after "
        f"{schedules['train'].max_lr_drops} lr drops (fine-tunes: "
        f"{schedules['finetune'].max_lr_drops}), see Training below; batch {schedules['train'].batch_size}, "
        f"bf16 {'on' if schedules['train'].bf16 else 'off'}.",
        f"- **Trainings**: every net of Tables 3-7 is trained once per seed, {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}; `seeds`), B-E of a seed from A of the same seed; tables give the "
        "mean and the seed-to-seed sd, the claims an interval from the seed variance pooled over claims of a "
        "kind and the test images' variance ([how](claims.md)). "
        "Localisation (App. A) trains a net per seed of `localisation_seeds`, from D of that seed; transfer "
        "(App. B) describes its target sets with the nets of each seed.",
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
        f"- [Claims](claims.md) ([csv](claims.csv), [figure](claims_forest.png)): each conclusion of the paper "
        f"with our difference and its {confidence:.0%} interval (seed variance pooled over the claims of a kind, "
        f"plus the test images'): "
        + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("reproduced", "contradicted", "inconclusive")) + ".",
        *appendices,
        f"- Flat metrics: `{metrics_path}`", "",
        markdown(claims[["claim", "paper: err(Y) - err(X)", "ours: err(Y) - err(X)", "CI low", "CI high",
                         tables.SEEDS_AGREE, "verdict"]], floatfmt=".2f"),
        "![the claims: our differences with their intervals beside the paper's](claims_forest.png)", "",
        "## Figures", "",
        "![validation top-1 error against epoch](training_curves.png)", "",
        "![top-1 error against depth](error_vs_depth.png)", "",
        "![top-1 error against test scale Q](error_vs_test_scale.png)", "",
        "## Training", "",
        training_markdown(training),
    ]
    return "\n".join(lines)


def table11_page(frame, claims, confidence, samples, sources, seeds=(0,)):
    """reports/table11.md: Table 11 (App. B), our rows beside the paper's, then the transfer claims.
    `sources`: {'scenes': ..., 'fewshot': ...}, the target sets as the transfer stages describe them;
    `seeds`: those whose nets described the target sets (the garment rows: the first's)."""
    seeds = list(seeds)
    trainings = (
        f"**{len(seeds)} trainings per net** (seeds {', '.join(map(str, seeds))}): the target "
        "sets are described by the nets D and E of each seed, and our numbers are means over the seeds (± the "
        "seed-to-seed sd; each seed's value in the CSV). The claims' intervals cover training-to-training "
        "variance as well as the test items', as the classification claims do ([claims](claims.md)). The "
        f"garment rows use seed {seeds[0]}'s nets only."
        if len(seeds) > 1 else
        f"**One training per net**: the descriptors come from the nets D and E of seed {seeds[0]} "
        "(`seeds`); the intervals cover the test items only, not training-to-training variance.")
    intro = (
        "Very deep features (App. B): the frozen nets' fc7 descriptors (dense, global-average-pooled, "
        "flip-averaged, L2-normalised), over test scales Q averaged or stacked, with linear SVMs. Ours: "
        f"scene mAP on {sources['scenes']} (the VOC-2007 protocol: one-vs-rest SVMs, C chosen on "
        "validation scenes; non-interpolated AP, where VOC-2007 and the paper used 11-point AP), and "
        f"few-shot mean class recall, mean ± std over random splits, on {sources['fewshot']} (the Caltech "
        "protocol). The paper's VOC numbers sit on our averaged rows and its Caltech numbers on our "
        "stacked rows, the aggregation it used for each (its VOC descriptors averaged Q = 256-768).\n\n"
        + trainings)
    ours, same = frame["source"] == "ours", frame["source"] == "ours, same classes"
    sections = {"Ours beside the paper's nets (classes the nets never saw)": ours}
    if same.any():
        sections["The same tasks on the nets' own classes (Fashion-MNIST test garments, a new layout): how "
                 f"much of the score above is transfer ({sources.get('garment_scenes')}; "
                 f"{sources.get('garment_fewshot')})"] = same
    sections["The paper's comparison"] = ~(ours | same)
    per_seed = [c for c in frame.columns if c.startswith(("scene mAP seed ", "few-shot recall seed "))]
    page = results_page("Table 11: very deep features on other datasets", intro,
                        frame.drop(columns=["source", *per_seed]), sections)
    interval = (
        f"its {confidence:.0%} interval a Student-t interval from the seed-to-seed variance of the difference, "
        "pooled over the transfer claims of its kind (the same net aggregated two ways, or different nets) and "
        "task (`pooled with`, `pooled seed sd`, `pooled df` in the CSV), plus the variance of resampling the "
        f"test items ({samples:,} bootstrap resamples); the two-level bootstrap (seeds, then items) stays in "
        "the CSV beside it"
        if len(seeds) > 1 else
        f"its {confidence:.0%} percentile interval from {samples:,} paired bootstrap resamples of the test items")
    columns = [c for c in ("claim", "X", "Y", "paper: X - Y", "ours: X - Y", "CI low", "CI high",
                           tables.SEEDS_AGREE, tables.SEED_SD, "verdict") if c in claims.columns]
    shown = claims[columns]
    return page + (
        f"\n## Claims\n\nX beats Y: the difference is metric(X) - metric(Y) in points, the mean over the seeds, "
        f"{interval} (few-shot items: images, each scored in the splits where it is a test image). Verdict: "
        "reproduced if the interval lies above 0, contradicted if below, else inconclusive; for 'does not beat', "
        "an equivalence test with the margin of `report.equivalence_margin` (reproduced if the whole interval "
        "lies below it, contradicted if above it), as on [the claims page](claims.md).\n\n"
        + markdown(shown.astype(object).where(shown.notna(), None), index=True, floatfmt=".2f", missingval=""))


# A localisation run's "top-1" is its share of boxes with IoU > 0.5 (vgg.localisation's Task).
LOC_TRAINING_COLUMNS = {"final train top-1 err": "final train loc. error (%)",
                        "final val top-1 err": "final val loc. error (%)", "best val top-1 err": "best val loc. error (%)"}


def localisation_page(table8, table9, claims, confidence, samples, n_images, figure, seeds=(0,), training=None):
    """reports/localisation.md: Tables 8 and 9 (App. A) beside the paper's, the claims, the sample figure."""
    seeds = list(seeds)
    n = len(seeds)
    trainings = (f"**{n} trainings per net** (seeds {', '.join(map(str, seeds))}): every localisation net is "
                 "trained once per seed, from the classification net D of that seed, and our numbers are means "
                 "over the seeds (± the seed-to-seed sd; each seed's value in the CSVs). The claims' intervals "
                 "cover training-to-training variance as well as the test set's, as the classification claims "
                 "do ([claims](claims.md))." if n > 1 else
                 f"**One training per net**: the localisation nets start from the classification nets D of seed "
                 f"{seeds[0]}, and the intervals below cover test images only, not training-to-training variance.")
    lines = [
        "# Localisation (Appendix A): Tables 8 and 9", "", trainings, "",
        f"Errors in % on {n_images:,} test images; a box is right when its IoU with the true box is above 0.5. "
        "The paper's numbers are ILSVRC-2012 validation; its Table 8 rows are at S=384 (it reports S=256 "
        "behaves the same): ours at S=384, on which the claims are tested, and at S=256 beside them. Training "
        "targets are the whole object's box in the crop's coordinates, also past the crop's edge (OverFeat's "
        "regression, which App. A follows), and each net trains to its validation plateau.", "",
        "## Table 8: localisation nets, centre crop, true class's box", "",
        markdown(one_seed_without_sd(table8.drop(columns=tables.loc_per_seed_columns(table8))), floatfmt=".2f"), "",
        "## Table 9: dense localisation with greedy merging", "",
        "The PCR nets (all layers) and the classification nets D of the same S (and seed) applied densely at "
        "each Q, one box and one class score per crop-sized window, the windows 32 paper px apart (the output "
        "stride). Where a conv unit sees past the crop (the default's 28-px crop, Table 1's receptive fields; "
        "not at 224), the "
        "localisation net sees each window cut out as the crop it was trained on; the classification net "
        "stays fully convolutional (Table 3's dense evaluation). Boxes pooled over the row's scales (and both nets for the fusion), merged greedily, ranked "
        "by the classification nets' posteriors, each net counted once (a net's posteriors averaged over its "
        "scales, then the nets averaged; the paper ranks by its best classification system's top-5). "
        "With 10 classes the true class is nearly always among the top 5, so top-5 localisation error is "
        "almost only the box.", "",
        markdown(one_seed_without_sd(table9.drop(columns=tables.loc_per_seed_columns(table9))), floatfmt=".2f"), "",
        "## Claims", "",
        f"err(X) - err(Y) in points (positive: Y better), the mean over seeds; {confidence:.0%} "
        + ("Student-t interval from the seed-to-seed variance pooled over the claims of a kind and a measure "
           "(Table 8's centre-crop error, Table 9's dense top-5 error: their seed variances differ about "
           "tenfold) and the test images' variance, as the classification claims ([rules](claims.md)); the "
           "two-level bootstrap stays in the CSV" if n > 1 else
           f"percentile interval from {samples:,} paired bootstrap resamples of the test images")
        + "; reproduced if it lies above 0, contradicted if below, else inconclusive.", "",
        markdown(claims.drop(columns=[tables.POOL, tables.POOLED_DF, tables.BOOT_LOW, tables.BOOT_HIGH]
                             + ([tables.POOLED_SD, tables.SEED_SD] if n == 1 else []), errors="ignore"),
                 index=True, floatfmt=".2f"),
    ]
    if training is not None and len(training):
        lr = ", ".join(f"{v:g}" for v in training["initial lr"].unique())
        lines += ["", "## Training", "", "Each localisation net trains to its validation plateau (App. A.1, as §3.1): "
                  f"initial lr {lr} (`localisation.lr`, chosen on validation; the paper's 10^-3 learnt far more "
                  "slowly with our loss, docs/appendices.md; a net whose loss turns non-finite is trained again "
                  "at a tenth of it), divided by 10 when the validation localisation error stops "
                  "improving, stopped at the next plateau; the epoch count is a bound (`localisation.epochs`). "
                  "Validation is scored as Table 8: "
                  "the centre crop's true-class box against the image's box; the training error is that of the "
                  "augmented training crops (random position, flip, colour shift), where objects are often "
                  "cut by the crop's edge.", "",
                  training_markdown(training, LOC_TRAINING_COLUMNS)]
    if figure:
        lines += ["", "## Samples", "", f"Seed {seeds[0]}'s nets: true boxes in orange, the fusion row's top-1 box "
                  "in cyan (class guessed above each image):", "", "![localisation samples](localisation_samples.png)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the report, part by part

def _verdict_counts(claims):
    counts = claims["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in ("reproduced", "contradicted", "inconclusive"))


def localisation_part(loc_preds, dense, test_split, settings, training=None):
    """App. A: ({file name: text, or a function drawing to a path}, flat metrics, README line, claims)
    from the localisation records of every seed (`loc_preds`: {seed: {run: evaluate_loc's record}},
    `dense`: {seed: localise_dense's record}); `training`: the localisation runs' training_summary."""
    rows = paper.localisation_rows()
    seeds = list(dense)
    table8, table9 = tables.table8(loc_preds, rows), tables.table9(dense, rows)
    claims = tables.localisation_claims(loc_preds, dense, settings["bootstrap_samples"], settings["bootstrap_seed"],
                                        settings["confidence"], rows)
    fused = dense[seeds[0]]["rows"]["fusion 256/256 + 384/352,384"]
    has_figure = test_split["kind"] == "tensor"

    def draw(path):
        figures.localisation_samples(test_split, fused["classes"][:, 0], fused["boxes"][:, 0], path)

    files = {"table8.csv": tables.to_csv(table8), "table9.csv": tables.to_csv(table9),
             "claims_localisation.csv": tables.to_csv(claims),
             "localisation.md": localisation_page(table8, table9, claims, settings["confidence"],
                                                  settings["bootstrap_samples"], len(dense[seeds[0]]["labels"]),
                                                  has_figure, seeds, training)}
    if has_figure:
        files["localisation_samples.png"] = draw
    trainings = f"{len(seeds)} trainings per net" if len(seeds) > 1 else f"seed-{seeds[0]} nets"
    line = (f"- [Tables 8-9](localisation.md) ([csv](table8.csv), [csv](table9.csv), "
            "[claims csv](claims_localisation.csv)" + (", [samples](localisation_samples.png)" if has_figure else "")
            + f"): localisation (App. A, {trainings}), {len(claims)} claims: {_verdict_counts(claims)}")
    return files, tables.localisation_metrics(table8, table9, claims), line, claims


def load_transfer(preds_dir, metrics_dir, seeds, garments_required=True):
    """The transfer stages' outputs as `transfer_part` takes them: ({task: {seed: predictions record}},
    {seed: flat metrics}) from preds_dir/seed<k>/transfer/<task>.pt and metrics_dir/seed<k>/<task>.json.
    The digit tasks of every seed; the garment tasks (the nets' own classes, an extra row) of the first
    seed only, as dvc.yaml runs them; `garments_required=False` takes them only where they exist."""
    seeds = list(seeds)
    tasks = {task: seeds if task in ("scenes", "fewshot") else seeds[:1] for task in transfer.TASKS}
    if not garments_required:
        tasks = {task: [k for k in task_seeds if task in ("scenes", "fewshot")
                        or ((Path(metrics_dir) / f"seed{k}" / f"{task}.json").is_file()
                            and (tables.seed_dir(preds_dir, k) / "transfer" / f"{task}.pt").is_file())]
                 for task, task_seeds in tasks.items()}
    preds = {task: {seed: transfer.load_predictions(tables.seed_dir(preds_dir, seed) / "transfer" / f"{task}.pt", task)
                    for seed in task_seeds} for task, task_seeds in tasks.items() if task_seeds}
    flat = {seed: {} for seed in seeds}
    for task, task_seeds in tasks.items():
        for seed in task_seeds:
            flat[seed].update(io.read_json(Path(metrics_dir) / f"seed{seed}" / f"{task}.json", "transfer metrics"))
    return preds, flat


def transfer_part(preds, flat_metrics, settings):
    """App. B: ({file name: text}, flat metrics, README line, claims) from the transfer stages' outputs.
    `preds`: {task: {seed: predictions record}}, `flat_metrics`: {seed: flat metrics}, from the nets of each
    seed (the garment tasks: the first seed's only)."""
    rows = paper.transfer_rows()
    seeds = list(preds["scenes"])
    scenes = preds["scenes"][seeds[0]]
    t11 = tables.table11(flat_metrics, rows, scenes["scales"], scenes["single_scale"])
    claims = tables.transfer_claims(preds["scenes"], preds["fewshot"], rows, settings["bootstrap_samples"],
                                    settings["bootstrap_seed"], settings["confidence"], settings["equivalence_margin"])
    sources = {task: next(iter(by_seed.values()))["source"] for task, by_seed in preds.items()}
    files = {"table11.csv": tables.to_csv(t11), "claims_transfer.csv": tables.to_csv(claims),
             "table11.md": table11_page(t11, claims, settings["confidence"], settings["bootstrap_samples"],
                                        sources, seeds)}
    trainings = f"{len(seeds)} trainings per net" if len(seeds) > 1 else f"seed-{seeds[0]} nets"
    line = (f"- [Table 11](table11.md) ([csv](table11.csv), [claims csv](claims_transfer.csv)): very deep "
            f"features (App. B, {trainings}), {len(claims)} claims: {_verdict_counts(claims)}")
    return files, tables.transfer_metrics(claims), line, claims


def write_files(files, directory):
    """Each entry's text to directory/name, or its drawing function called with that path."""
    for name, content in files.items():
        if callable(content):
            content(directory / name)
        else:
            (directory / name).write_text(content)


def classification_part(model, data, rows, reads, frames, claims, curves, test_split, settings, n_images,
                        all_claims=None):
    """Tables 1-7, the claims and the figures: {file name: text, or a function drawing to a path}.
    `reads`: {seed: preds reader}; `all_claims`: {part: claims frame} for the forest plot (default: these)."""
    t2 = tables.table2(params.model_kwargs(model))
    files = {"table1.md": table1_page(model), "table2.csv": tables.to_csv(t2, index=False), "table2.md": table2_page(t2)}
    intro = (f"Errors in %. S and Q are in the paper's units (a 224 crop); here a scale is "
             f"round(Q x {model['crop']} / 224) px (see README). The paper's errors are on ILSVRC-2012; "
             f"ours on the {n_images:,} images of `{data['dataset']}` in the evaluate stage's predictions, "
             f"the mean over {len(reads)} training(s) (seeds {', '.join(map(str, reads))}) with the "
             "seed-to-seed sd beside it; the CSV holds each seed's value.")
    literature = frames["table7"]["source"].str.startswith("paper")
    sections = {"table7": {"The paper's comparison (ILSVRC-2012)": literature,
                           f"Ours ({data['dataset']}) beside published results on it": ~literature}}
    for name, frame in frames.items():
        files[f"{name}.csv"] = tables.to_csv(frame)
        files[f"{name}.md"] = results_page(TABLE_TITLES[name], intro, frame, sections.get(name))
    files["claims.csv"] = tables.to_csv(claims)
    files["claims.md"] = claims_page(claims, settings["confidence"], settings["bootstrap_samples"],
                                     settings["equivalence_margin"], len(reads))
    forest = all_claims or {"classification": claims}
    files["claims_forest.png"] = lambda path: figures.claims_forest(forest, path)
    if test_split["kind"] == "tensor":  # the derived Fashion-MNIST images and their boxes
        files["samples.png"] = lambda path: figures.sample_images(test_split, path)
    files["training_curves.png"] = lambda path: figures.training_curves(curves, path)
    files["error_vs_depth.png"] = lambda path: figures.error_vs_depth(tables.depth_errors(frames["table3"]), path)
    files["error_vs_test_scale.png"] = lambda path: figures.error_vs_test_scale(tables.scale_errors(rows, reads), path)
    return files
