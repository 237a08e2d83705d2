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


def parameter_counts():
    """Table 2: millions as printed, and the exact counts of the released models, per net."""
    return paper_csv("table2_parameters.csv").set_index("net")
