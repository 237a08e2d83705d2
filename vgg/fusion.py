"""Multi-scale, multi-crop and multi-model fusion of soft-max posteriors (§3.2, §4.3, §4.4).

A prediction file `preds/<run>/<protocol>.pt` (stage `evaluate`) holds
{"run", "net", "train_scale", "protocol", "scales", "posteriors": {Q: N x C}, "labels": N}.
Members of an ensemble use the paper's notation `net/train_S/Q;Q;Q`, e.g. `D/256-512/256;384;512`.
"""
import functools
import re
from pathlib import Path

import torch

from . import evaluate, io
from .evaluate import load_posteriors

# The evaluate stage's two protocols, and their average (§4.3, Table 5's "multi-crop & dense").
PROTOCOLS = evaluate.PROTOCOLS + ("multi-crop+dense",)


def average_posteriors(posteriors):
    """Mean of N x C soft-max posteriors (§4.4); the same averaging fuses scales, crops and nets."""
    posteriors = list(posteriors)
    if not posteriors:
        raise ValueError("nothing to average")
    shape = posteriors[0].shape
    for p in posteriors:
        if p.shape != shape:
            raise ValueError(f"posteriors of shapes {tuple(shape)} and {tuple(p.shape)} cannot be averaged")
    # float64 sums make the mean of k copies of p exactly p.
    return torch.stack([p.double() for p in posteriors]).mean(0).to(posteriors[0].dtype)


def parse_member(text):
    """'D/256-512/256;384;512' -> ('D_256-512', [256, 384, 512]): the run and its test scales Q."""
    parts = str(text).split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{text!r} is not net/train_S/Q;Q;Q")
    net, train_scale, scales = parts
    if not re.fullmatch(r"\d+(-\d+)?", train_scale):
        raise ValueError(f"{text!r}: train_S {train_scale!r} is neither S nor Smin-Smax")
    try:
        qs = [int(q) for q in scales.split(";")]
    except ValueError:
        raise ValueError(f"{text!r}: test scales {scales!r} are not integers separated by ';'") from None
    return f"{net}_{train_scale}", qs


def parse_ensemble(text):
    """The paper's 'ENSEMBLE2:D/256-512/256;384;512+E/256-512/256;384;512' -> its member strings."""
    head, _, body = str(text).partition(":")
    members = body.split("+") if body else []
    if not head.startswith("ENSEMBLE") or head[8:] != str(len(members)):
        raise ValueError(f"{text!r} is not ENSEMBLE<n>:<n members joined by +>")
    for member in members:
        parse_member(member)
    return members


def protocol_parts(protocol):
    """The evaluation files a protocol averages: multi-crop+dense is both (§4.3)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    return protocol.split("+")


def check_ensembles(ensembles):
    """Validate `fuse.ensembles` (name -> {members, protocol}); one-line errors naming the key."""
    for name, spec in ensembles.items():
        key = f"fuse.ensembles.{name}"
        if not isinstance(spec, dict) or set(spec) != {"members", "protocol"}:
            raise io.StageError(f"{key}: expected a mapping with keys members and protocol")
        if spec["protocol"] not in PROTOCOLS:
            raise io.StageError(f"{key}.protocol: {spec['protocol']!r} must be one of {', '.join(PROTOCOLS)}")
        members = spec["members"]
        if not isinstance(members, list) or not members:
            raise io.StageError(f"{key}.members: expected a non-empty list of net/train_S/Q;Q;Q")
        for member in members:
            try:
                parse_member(member)
            except ValueError as exc:
                raise io.StageError(f"{key}.members: {exc}") from None
    return ensembles


def preds_reader(root):
    """A cached reader of `root/<run>/<protocol>.pt` that checks the file against its name."""
    root = Path(root)

    @functools.cache
    def read(run, protocol):
        path = root / run / f"{protocol}.pt"
        record = load_posteriors(path)
        if (record["run"], record["protocol"]) != (run, protocol):
            raise io.StageError(f"{path}: holds run {record['run']!r}, protocol {record['protocol']!r}, "
                                f"not {run!r}, {protocol!r}")
        return record
    return read


def scale_posteriors(record, scales, where):
    """Multi-scale posteriors of one evaluation file: the average over test scales Q (§4.2)."""
    missing = [q for q in scales if q not in record["posteriors"]]
    if missing:
        have = ", ".join(str(q) for q in sorted(record["posteriors"]))
        raise io.StageError(f"{where}: Q={missing[0]} not evaluated (has Q={have})")
    return average_posteriors(record["posteriors"][q] for q in scales)


def member_posteriors(read, member, protocol):
    """Posteriors of one ensemble member: its Q-averaged posteriors, averaged over the protocol's
    parts (multi-crop+dense = the two protocols' soft-max outputs averaged, §4.3). Also its labels."""
    run, scales = parse_member(member)
    parts, labels = [], None
    for part in protocol_parts(protocol):
        record = read(run, part)
        parts.append(scale_posteriors(record, scales, f"{member} ({part})"))
        if labels is not None and not torch.equal(labels, record["labels"]):
            raise io.StageError(f"{member}: dense and multi-crop labels differ")
        labels = record["labels"]
    return average_posteriors(parts), labels


def fuse(read, members, protocol):
    """An ensemble's posteriors (§4.4): the members' soft-max posteriors averaged. Also the labels."""
    outputs, labels = [], None
    for member in members:
        posteriors, member_labels = member_posteriors(read, member, protocol)
        if labels is not None and not torch.equal(labels, member_labels):
            raise io.StageError(f"{member}: its labels differ from {members[0]}'s (different test images)")
        outputs.append(posteriors)
        labels = member_labels
    return average_posteriors(outputs), labels


def ensemble_record(name, members, protocol, posteriors, labels):
    """The fused file: the evaluate stage's contract with run = name and posteriors {"fused": ...}."""
    parsed = [parse_member(m) for m in members]
    return {"run": name, "net": "+".join(m.split("/")[0] for m in members),
            "train_scale": "+".join(m.split("/")[1] for m in members), "protocol": protocol,
            "scales": sorted({q for _, qs in parsed for q in qs}), "posteriors": {"fused": posteriors},
            "labels": labels, "members": list(members)}


def fused_reader(directory):
    """name -> the fuse stage's record of ensemble `name` in `directory`, checked to be one."""
    def read(name):
        path = Path(directory) / f"{name}.pt"
        record = io.load(path, "fused predictions")
        if not isinstance(record, dict) or record.get("run") != name or "fused" not in record.get("posteriors", {}):
            raise io.StageError(f"{path}: not the fused predictions of ensemble {name!r}")
        return record
    return read
