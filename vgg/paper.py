"""The paper's numbers (paper/*.csv, copied from its Tables 2-7): the one place they are read."""
from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"


def paper_csv(name):
    return pd.read_csv(PAPER_DIR / name)


def classification_rows():
    """paper/classification_tables.csv with S and Q kept as the paper writes them (strings)."""
    frame = pd.read_csv(PAPER_DIR / "classification_tables.csv", dtype=str, keep_default_na=False)
    for column in ("row", "top1_val_err", "top5_val_err", "top5_test_err"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def text_differences():
    """{claim key: difference in points} for claims the paper states only in its text (§4.1's B-5x5)."""
    frame = paper_csv("text_claims.csv")
    return dict(zip(frame["claim"], frame["paper_diff"].astype(float)))


def parameter_counts():
    """Table 2: millions as printed, and the exact counts of the released models, per net."""
    return paper_csv("table2_parameters.csv").set_index("net")


def transfer_rows():
    """Table 11 (App. B): VOC mAP and Caltech mean class recall (± std) per method; `net` is D, E or DE
    for the paper's own rows, empty for the methods it compares with."""
    return pd.read_csv(PAPER_DIR / "table11_transfer.csv", dtype={"net": str}, keep_default_na=False,
                       na_values={c: [""] for c in ("voc07_map", "voc12_map", "cal101_recall", "cal101_std",
                                                    "cal256_recall", "cal256_std")})


def localisation_rows():
    """Tables 8 and 9 (App. A) as printed: table (T8/T9), row, setting, metric, value."""
    return pd.read_csv(PAPER_DIR / "localisation_tables.csv", dtype=str, keep_default_na=False)
