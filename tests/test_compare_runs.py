"""scripts/compare_runs.py: two runs' committed reports side by side, read from git revisions."""
import shutil
import subprocess

import pandas as pd
import pytest

import scripts.compare_runs as compare_runs
from conftest import ROOT

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**ENV, "PATH": "/usr/bin:/bin"})


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repo whose first commit holds this repo's reports and whose second changes one number
    and one verdict."""
    shutil.copytree(ROOT / "reports", tmp_path / "reports")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "one")
    table3 = pd.read_csv(tmp_path / "reports" / "table3.csv")
    table3.loc[0, "top-1 err (ours)"] = 99.5
    table3.to_csv(tmp_path / "reports" / "table3.csv", index=False)
    claims = pd.read_csv(tmp_path / "reports" / "claims.csv", index_col="key")
    claims.iloc[0, claims.columns.get_loc("verdict")] = "inconclusive" if claims.iloc[0]["verdict"] != "inconclusive" \
        else "reproduced"
    claims.to_csv(tmp_path / "reports" / "claims.csv")
    git(tmp_path, "commit", "-qam", "two")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_two_revisions_side_by_side(repo):
    page = compare_runs.compare({"before": "HEAD~1", "after": "HEAD"})
    before = pd.read_csv(ROOT / "reports" / "table3.csv")
    first = f"| {before.loc[0, 'ConvNet']} "
    row = next(line for line in page.splitlines() if line.startswith(first))
    assert f"{before.loc[0, 'top-1 err (ours)']:.2f}" in row and "99.50" in row
    claims = pd.read_csv(ROOT / "reports" / "claims.csv", index_col="key")
    row = next(line for line in page.splitlines() if line.startswith(f"| {claims.iloc[0]['claim']}"))
    assert row.count(claims.iloc[0]["verdict"]) == 1  # one run kept the verdict, the other changed it
    for table in ("Table 3", "Table 4", "Table 5", "Table 6", "Claims"):
        assert f"## {table}" in page


def test_an_unknown_revision_is_a_one_line_error(repo, capsys):
    with pytest.raises(SystemExit) as info:
        compare_runs.main(["x=no-such-experiment"])
    assert str(info.value) == "error: no-such-experiment: neither a git revision nor a DVC experiment"


def test_a_directory_of_csvs_is_a_run(repo):
    # As scripts/classification_claims.py writes them: the changed commit's CSVs in a plain directory.
    directory = repo / "runs" / "changed"
    directory.mkdir(parents=True)
    for name in ("table3", "table4", "table5", "table6", "claims", *compare_runs.APPENDIX_TABLES,
                 *compare_runs.APPENDIX_CLAIMS):
        shutil.copy(repo / "reports" / f"{name}.csv", directory)
    page = compare_runs.compare({"before": "HEAD~1", "after": compare_runs.resolve(str(directory))})
    assert "99.50" in page
    assert page == compare_runs.compare({"before": "HEAD~1", "after": "HEAD"})


def test_a_part_run_is_matched_by_row_and_claim_keys_and_verdict_changes_are_counted(repo):
    # A second seed set of the S=256 part (classification_claims --part s256): table 3's S=256 rows and
    # the claims on them only; the other tables are left out, rows and claims matched by key.
    directory = repo / "runs" / "part"
    directory.mkdir(parents=True)
    table3 = pd.read_csv(repo / "reports" / "table3.csv")
    table3[table3["train S"].astype(str) == "256"].iloc[::-1].to_csv(directory / "table3.csv", index=False)
    claims = pd.read_csv(repo / "reports" / "claims.csv", index_col="key")
    part = claims.iloc[[2, 1]].copy()
    flipped = {"reproduced": "contradicted", "contradicted": "reproduced", "inconclusive": "reproduced"}
    part.iloc[0, part.columns.get_loc("verdict")] = flipped[part.iloc[0]["verdict"]]
    part.to_csv(directory / "claims.csv")
    page = compare_runs.compare({"full": "HEAD", "part": compare_runs.resolve(str(directory))})
    assert "## Table 4" in page  # from the full run
    row = next(line for line in page.splitlines() if line.startswith(f"| {table3.loc[0, 'ConvNet']} "))
    assert row.count("99.50") == 2  # the same row of both runs, though the part lists its rows reversed
    flips = int(claims.iloc[2]["verdict"] != "inconclusive")
    assert f"- part against full: 1 of 2 verdicts differ, {flips} between reproduced and contradicted." in page


def test_the_appendices_side_by_side(repo):
    # Another run's appendix CSVs (an fp32 run, say): one Table 8 value and one localisation verdict
    # changed; Table 11's paper-only rows (no value of ours) are left out.
    directory = repo / "runs" / "other"
    directory.mkdir(parents=True)
    for name in (*compare_runs.APPENDIX_TABLES, "claims_transfer"):
        shutil.copy(repo / "reports" / f"{name}.csv", directory)
    table8 = pd.read_csv(repo / "reports" / "table8.csv")
    table8.loc[0, "ours: loc. error (%)"] = 77.125
    table8["± loc. error sd"], table8["n_seeds"] = 1.5, 3  # a run with several localisation seeds
    table8.to_csv(directory / "table8.csv", index=False)
    claims = pd.read_csv(repo / "reports" / "claims_localisation.csv", index_col="key")
    flipped = {"reproduced": "contradicted", "contradicted": "reproduced", "inconclusive": "reproduced"}
    was = claims.iloc[0]["verdict"]
    claims.iloc[0, claims.columns.get_loc("verdict")] = flipped[was]
    claims.to_csv(directory / "claims_localisation.csv")
    page = compare_runs.compare({"default": "HEAD", "other": compare_runs.resolve(str(directory))})
    row = next(line for line in page.splitlines() if line.startswith(f"| {table8.loc[0, 'setting']} "))
    assert "77.12" in row and f"{pd.read_csv(repo / 'reports' / 'table8.csv')['ours: loc. error (%)'].iloc[0]:.2f}" in row
    assert "other error sd" in page
    assert row.rstrip(" |").endswith("1.50")  # the sd, after the other run's error
    for title in ("Table 8", "Table 9", "Table 11", "Localisation claims", "Transfer claims"):
        assert f"## {title}" in page
    assert "| Zeiler & Fergus" not in page and "nan" not in page
    flips = int(was != "inconclusive")  # inconclusive -> reproduced is a difference, not a flip
    assert f"- other against default: 1 of {len(claims)} verdicts differ, {flips} between reproduced" in page
    transfer = len(pd.read_csv(repo / "reports" / "claims_transfer.csv"))
    assert f"- other against default: 0 of {transfer} verdicts differ" in page  # unchanged


def test_verdict_stability_counts_flips_that_pooling_the_seed_variance_removes(tmp_path, capsys):
    from scripts import verdict_stability
    # Two runs of "C beats B" and "D beats C" whose three seeds each agree closely, in opposite
    # directions for C beats B; D beats C has a large seed sd in both. The bootstrap intervals (as
    # committed) say reproduced in one run and contradicted in the other; pooled over both claims,
    # the seed sd is large and both runs read inconclusive.
    columns = "key,ours: err(Y) - err(X),CI low,CI high,n_seeds,seed sd of the difference\n"
    (tmp_path / "one.csv").write_text(columns + "C_beats_B,-1.0,-1.4,-0.6,3,0.3\nD_beats_C,0.5,-2.0,3.0,3,2.5\n")
    (tmp_path / "two.csv").write_text(columns + "C_beats_B,0.9,0.5,1.3,3,0.3\nD_beats_C,0.2,-2.0,2.5,3,2.5\n")
    verdict_stability.main([f"one={tmp_path / 'one.csv'}", f"two={tmp_path / 'two.csv'}"])
    out = capsys.readouterr().out
    assert "| bootstrap | 1 of 2 | 1 | 0/1/1 | 1/0/1 |" in out
    assert "| pooled t | 0 of 2 | 0 | 0/0/2 | 0/0/2 |" in out
    # Own sd 0.3 with 2 df: t(2) * 0.3 / sqrt(3) = 0.75, so one run still excludes 0 on its own.
    assert "| own t | 1 of 2 | 1 | 0/1/1 | 1/0/1 |" in out
