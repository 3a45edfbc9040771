"""recipes/bayesian_network.py: the shipped Asia network, structure recovery that makes
sense, nothing downloaded, and the same graphs serially and on a local cluster."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweepkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # workers inherit the path
import bayesian_network as recipe


def refuse(sock, address):
    raise OSError(f"the recipe tried to open a connection to {address}: nothing may be downloaded")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One serial run at a small size (60 structure searches), with connections refused."""
    out = tmp_path_factory.mktemp("bayesian")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        frame, summary, confidence = recipe.main(out=out, n_boot=2, sample_sizes=(250, 5000))
    return out, frame, summary, confidence


def test_asia_network_is_the_published_one():
    model = recipe.asia_network()
    assert len(recipe.NODES) == 8 and len(recipe.EDGES) == 8
    assert set(model.edges()) == set(recipe.EDGES)
    either = model.get_cpds("either").values  # a deterministic OR of lung and tub
    assert either[0].ravel().tolist() == [1.0, 1.0, 1.0, 0.0]
    data = recipe.sample_asia(20_000, seed=0)
    assert list(data.columns) == list(recipe.NODES)
    assert (data["smoke"] == "yes").mean() == pytest.approx(0.5, abs=0.02)
    assert (data["either"] == "yes").mean() == pytest.approx(0.065, abs=0.01)  # P(tub or lung) = 0.0648


def test_shd_is_zero_for_the_truth_and_counts_each_wrong_pair_once():
    truth = " ".join(f"{a}->{b}" for a, b in recipe.EDGES)
    assert recipe.structure_metrics(truth) == {"n_arcs": 8, "shd": 0, "skeleton_precision": 1.0, "skeleton_recall": 1.0}
    # Reversing asia->tub stays in the equivalence class; dropping it costs 1; adding
    # asia->smoke costs 1.
    assert recipe.structure_metrics(truth.replace("asia->tub", "tub->asia"))["shd"] == 0
    assert recipe.structure_metrics(truth.replace("asia->tub", ""))["shd"] == 1
    assert recipe.structure_metrics(truth + " asia->smoke")["shd"] == 1


def test_bootstrap_confidence_separates_true_edges_from_absent_ones(run):
    _, frame, summary, confidence = run

    settings = len(recipe.SCORES) * len(recipe.MAX_INDEGREE) * 2
    assert len(frame) == settings * 2 and len(summary) == settings
    assert len(confidence) == settings * 28  # every pair of 8 nodes, in every setting
    assert ((confidence["directed"] <= confidence["confidence"]) & confidence["confidence"].between(0, 1)).all()
    mean = confidence.groupby("true_edge")["confidence"].mean()
    assert mean[True] - mean[False] > 0.4  # observed 0.81 vs 0.15


def test_more_data_recovers_more_of_the_structure(run):
    _, _, summary, confidence = run

    shd = summary.groupby("n")["shd_mean"].mean()
    assert shd[5000] <= shd[250]  # observed 8.9 vs 9.7 (averaged over the 15 settings)
    recall = summary.groupby("n")["skeleton_recall_mean"].mean()
    assert recall[5000] - recall[250] > 0.04  # observed 0.85 vs 0.77
    true_edges = confidence[confidence["true_edge"]].groupby("n")["confidence"].mean()
    assert true_edges.to_numpy() == pytest.approx(recall.to_numpy())  # mean recall is mean true-edge confidence


def test_outputs_are_written(run):
    out, frame, _, _ = run

    written = {p.name for p in out.iterdir()}
    assert {"results.parquet", "summary.csv", "edge_confidence.csv", "structure.png", "manifest.json"} <= written
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), frame, check_categorical=False)


def test_serial_and_local_cluster_learn_identical_graphs(tmp_path):
    small = {"n_boot": 1, "sample_sizes": (500,)}
    serial, _, _ = recipe.main(out=tmp_path / "serial", **small)
    with sweepkit.sweep_cluster("local", workers=2):
        local, _, _ = recipe.main(out=tmp_path / "local", **small)

    assert set(local["worker"]) != {"local process"}  # it did run on the workers
    assert np.isfinite(serial["shd"]).all()
    drop = ["duration", "worker"]
    pd.testing.assert_frame_equal(local.drop(columns=drop), serial.drop(columns=drop), check_exact=True)
