"""How well does hill climbing recover a Bayesian network, and how does that depend on its settings?

Data are forward-sampled from the 8-node Asia network, once per sample size. Every
task learns a structure by hill climbing (pgmpy) on one bootstrap resample of one of
those data sets, with one setting: scoring function (BIC, K2, BDeu with several
equivalent sample sizes), maximum in-degree, and sample size. Each learned graph is
compared with the truth: structural Hamming distance (SHD) between the equivalence
classes (CPDAGs), since data cannot tell Markov-equivalent graphs apart, and precision
and recall of the skeleton. Across replicates, the bootstrap gives every possible edge
a confidence, the fraction of replicates that contain it (model averaging: Friedman,
Goldszmidt and Wyner 1999).

The Asia ("chest clinic") network of Lauritzen and Spiegelhalter (1988): a visit to
Asia raises the risk of tuberculosis, smoking that of lung cancer and bronchitis;
``either`` is "tuberculosis or lung cancer" (a deterministic OR), which shows on the
X-ray; dyspnoea follows from either or from bronchitis. Its published probability
tables (as in the bnlearn repository's ``asia.bif``) are written out below, so that
nothing is downloaded at run time.

    sweepkit run recipes/bayesian_network.py --out results/bayesian_network
    python recipes/bayesian_network.py --cluster serial --n-boot 3 --sample-sizes 250 1000

The defaults (900 structure searches) take a few minutes on two cores. The full
exploration, many more replicates over a wider range of sample sizes, is meant for
a cluster:

    sweepkit run recipes/bayesian_network.py --cluster sge --n-boot 200 \\
        --sample-sizes 100 250 500 1000 2500 5000 10000 50000

Outputs in ``--out``: ``results.parquet`` (one row per learned graph: setting,
replicate, arcs, SHD, skeleton precision and recall), ``summary.csv`` (per setting),
``edge_confidence.csv`` (per setting and pair of nodes) and ``structure.png``.

Lauritzen, S. L. and Spiegelhalter, D. J. (1988). Local computations with
probabilities on graphical structures and their application to expert systems.
Journal of the Royal Statistical Society, Series B, 50(2), 157-224.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

import sweepkit
from sweepkit.extras import require
from sweepkit.report import write_table

# -- the Asia network -------------------------------------------------------------------
STATES = ("yes", "no")

# variable: (parents, P(variable = yes) for each parent configuration). The
# configurations are ordered with the first parent varying slowest and "yes"
# before "no": (yes, yes), (yes, no), (no, yes), (no, no) for two parents.
CPTS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "asia": ((), (0.01,)),
    "tub": (("asia",), (0.05, 0.01)),
    "smoke": ((), (0.5,)),
    "lung": (("smoke",), (0.1, 0.01)),
    "bronc": (("smoke",), (0.6, 0.3)),
    "either": (("lung", "tub"), (1.0, 1.0, 1.0, 0.0)),
    "xray": (("either",), (0.98, 0.05)),
    "dysp": (("bronc", "either"), (0.9, 0.8, 0.7, 0.1)),
}

NODES: tuple[str, ...] = tuple(CPTS)
EDGES: tuple[tuple[str, str], ...] = tuple((parent, child) for child, (parents, _) in CPTS.items() for parent in parents)


def asia_network():
    """The network as a ``pgmpy`` ``DiscreteBayesianNetwork`` with its tables."""
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    model = DiscreteBayesianNetwork(EDGES)
    for child, (parents, p_yes) in CPTS.items():
        p_yes = np.array(p_yes)
        model.add_cpds(
            TabularCPD(
                child, len(STATES), np.vstack([p_yes, 1 - p_yes]),
                evidence=list(parents) or None, evidence_card=[len(STATES)] * len(parents) or None,
                state_names={v: list(STATES) for v in (child, *parents)},
            )
        )
    model.check_model()
    return model


def sample_asia(n: int, seed: int) -> pd.DataFrame:
    """``n`` rows forward-sampled from the network, columns in :data:`NODES` order
    (pgmpy seeds numpy's global random state with ``seed``)."""
    with warnings.catch_warnings():  # pgmpy's sampler imports its own deprecated modules
        warnings.simplefilter("ignore", FutureWarning)
        data = asia_network().simulate(n, seed=seed, show_progress=False)
    return data[list(NODES)]


# -- the exploration ---------------------------------------------------------------------

# The settings explored: each score (BDeu with three equivalent sample sizes) times
# each in-degree limit. Asia's largest in-degree is 2: a limit of 1 cannot express it.
SCORES = sweepkit.grid(score=["bic", "k2"]) + sweepkit.grid(score="bdeu", ess=[1.0, 10.0, 100.0])
MAX_INDEGREE = (1, 2, 3)
SETTING = ["scoring", "max_indegree", "n"]

# Every pair of nodes, oriented as in the true network when it is an edge there.
PAIRS = [(b, a) if (b, a) in EDGES else (a, b) for a, b in combinations(NODES, 2)]


def learn_structure(
    data: dict[int, pd.DataFrame], n: int, replicate: sweepkit.Replicate, score: str, max_indegree: int,
    ess: float | None = None,
) -> dict[str, str]:
    """Hill-climb a DAG on bootstrap replicate ``replicate`` of the size-``n`` data set.

    Returns the learned arcs as text, ``"asia->tub either->xray ..."``, sorted.
    """
    from pgmpy.causal_discovery import HillClimbSearch

    resample = data[n].iloc[replicate.indices(n)].reset_index(drop=True)
    # pgmpy tries candidate edges in the order of a Python set, so ties between equally
    # good moves are broken by hash order. For strings that order changes from process to
    # process (hash randomization); integers hash to themselves, so integer column names
    # give the same graph in every process: serially and on any worker.
    coded = resample.set_axis(range(len(NODES)), axis=1)
    search = HillClimbSearch(
        scoring_method=make_score(score, coded, ess), max_indegree=max_indegree, return_type="dag", show_progress=False
    )
    arcs = search.fit(coded).causal_graph_.edges()
    return {"arcs": " ".join(sorted(f"{NODES[a]}->{NODES[b]}" for a, b in arcs))}


def make_score(score: str, data: pd.DataFrame, ess: float | None):
    """A pgmpy structure score on ``data``: ``"bic"``, ``"k2"`` or ``"bdeu"`` (with ``ess``)."""
    from pgmpy.structure_score import BIC, K2, BDeu

    states = {column: list(STATES) for column in data.columns}  # a resample may miss a rare state
    if score == "bdeu":
        return BDeu(data, equivalent_sample_size=ess, state_names=states)
    return {"bic": BIC, "k2": K2}[score](data, state_names=states)


def scoring_label(score: str, ess: float) -> str:
    """``"bic"``, ``"k2"``, ``"bdeu(ess=10)"``."""
    return f"bdeu(ess={ess:g})" if score == "bdeu" else score


def parse_arcs(text: str) -> set[tuple[str, str]]:
    """``"a->b c->d"`` -> ``{("a", "b"), ("c", "d")}``."""
    return {tuple(arc.split("->")) for arc in text.split()}  # type: ignore[misc]


def cpdag_marks(arcs: Iterable[tuple[str, str]]) -> dict[frozenset, object]:
    """The equivalence class (CPDAG) of a DAG on the Asia nodes: for each adjacent pair
    of nodes, its arc ``(parent, child)`` if every equivalent DAG has it, else ``"-"``."""
    from pgmpy.base import DAG

    dag = DAG()
    dag.add_nodes_from(NODES)
    dag.add_edges_from(arcs)
    cpdag = dag.to_pdag()
    marks: dict[frozenset, object] = {frozenset(arc): arc for arc in cpdag.directed_edges}
    marks.update({frozenset(edge): "-" for edge in cpdag.undirected_edges})
    return marks


TRUE_MARKS = cpdag_marks(EDGES)
TRUE_SKELETON = set(TRUE_MARKS)


def structure_metrics(arcs: str) -> dict[str, float]:
    """Accuracy of one learned graph against the Asia network.

    SHD counts the pairs of nodes whose mark differs between the two CPDAGs (a missing,
    extra, or differently oriented edge each count 1); precision and recall are those of
    the skeleton (edges without direction). Precision is NaN for a graph without edges.
    """
    marks = cpdag_marks(parse_arcs(arcs))
    found = len(set(marks) & TRUE_SKELETON)
    return {
        "n_arcs": len(marks),
        "shd": sum(marks.get(pair) != TRUE_MARKS.get(pair) for pair in set(marks) | TRUE_SKELETON),
        "skeleton_precision": found / len(marks) if marks else np.nan,
        "skeleton_recall": found / len(TRUE_SKELETON),
    }


def score_structures(frame: pd.DataFrame) -> pd.DataFrame:
    """The sweep's table with a readable setting and the accuracy of every learned graph."""
    metrics = {arcs: structure_metrics(arcs) for arcs in frame["arcs"].unique()}
    labels = list(dict.fromkeys(scoring_label(t["score"], t.get("ess", np.nan)) for t in SCORES))
    scoring = [scoring_label(s, e) for s, e in zip(frame["score"], frame["ess"])]
    frame = frame.assign(scoring=pd.Categorical(scoring, categories=labels, ordered=True))
    frame = frame.join(pd.DataFrame([metrics[a] for a in frame["arcs"]], index=frame.index))
    columns = [*SETTING, "score", "ess", "replicate", "arcs", "n_arcs", "shd", "skeleton_precision", "skeleton_recall"]
    return frame[[*columns, "duration", "worker"]]


def edge_confidence(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting and pair of nodes ``a - b``: the fraction of bootstrap replicates whose
    graph joins them (``confidence``) and has the arc ``a -> b`` (``directed``; for an edge
    of the true network, ``a -> b`` is its true direction)."""
    arcs = frame["arcs"].map(parse_arcs)
    edges = [f"{a} - {b}" for a, b in PAIRS]
    present = pd.DataFrame({e: arcs.map(lambda s, a=a, b=b: (a, b) in s or (b, a) in s) for e, (a, b) in zip(edges, PAIRS)})
    forward = pd.DataFrame({e: arcs.map(lambda s, a=a, b=b: (a, b) in s) for e, (a, b) in zip(edges, PAIRS)})
    keys = [frame[c] for c in SETTING]
    table = pd.concat(
        {"confidence": present.groupby(keys, observed=True).mean().stack(),
         "directed": forward.groupby(keys, observed=True).mean().stack()},
        axis=1,
    )
    table = table.rename_axis([*SETTING, "edge"]).reset_index()
    table.insert(len(SETTING) + 1, "true_edge", table["edge"].isin([f"{a} - {b}" for a, b in EDGES]))
    return table


def summarize(frame: pd.DataFrame, confidence: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean and spread of SHD; mean skeleton precision and recall (mean recall
    is also the mean bootstrap confidence of the true edges); the mean confidence of the
    absent edges; and the accuracy of the consensus skeleton (the edges found in at least
    half of the replicates)."""
    groups = frame.groupby(SETTING, observed=True)
    summary = groups["shd"].agg(
        replicates="size", shd_mean="mean", shd_sd="std",
        shd_q025=lambda s: s.quantile(0.025), shd_q975=lambda s: s.quantile(0.975),
    )
    summary = summary.join(groups[["skeleton_precision", "skeleton_recall", "n_arcs"]].mean().add_suffix("_mean"))
    absent = confidence[~confidence["true_edge"]]
    summary["confidence_absent_edges"] = absent.groupby(SETTING, observed=True)["confidence"].mean()
    consensus = confidence.assign(kept=confidence["confidence"] >= 0.5, hit=lambda t: t["kept"] & t["true_edge"])
    counts = consensus.groupby(SETTING, observed=True)[["kept", "hit"]].sum()
    summary["consensus_precision"] = counts["hit"] / counts["kept"].where(counts["kept"] > 0)
    summary["consensus_recall"] = counts["hit"] / len(EDGES)
    return summary.reset_index()


def plot(summary: pd.DataFrame, confidence: pd.DataFrame, path: Path) -> None:
    """Mean SHD against sample size (a panel per in-degree limit, a line per score) over
    a heatmap of edge confidence (a row per pair of nodes, a column per setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = sorted(summary["max_indegree"].unique())
    fig = plt.figure(figsize=(max(12, 0.28 * len(summary) + 4), 11), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.5])
    axes = top.subplots(1, len(limits), sharey=True, squeeze=False)[0]
    for ax, limit in zip(axes, limits):
        for scoring, rows in summary[summary["max_indegree"] == limit].groupby("scoring", observed=True):
            ax.errorbar(rows["n"], rows["shd_mean"], yerr=rows["shd_sd"], marker="o", capsize=3, label=scoring)
        ax.set(xscale="log", title=f"max in-degree {limit}", xlabel="sample size")
    axes[0].set_ylabel("SHD to the true CPDAG (mean ± sd)")
    axes[-1].legend(fontsize="small")

    true_edges = set(confidence.loc[confidence["true_edge"], "edge"])
    grid = confidence.pivot_table(index="edge", columns=SETTING, values="confidence", observed=True)
    grid = grid.loc[sorted(grid.index, key=lambda e: (e not in true_edges, e))]
    ax = bottom.subplots()
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(grid)), [f"{e} *" if e in true_edges else e for e in grid.index], fontsize=7)
    ax.set_xticks(range(grid.shape[1]), [f"{s}, k≤{k}, n={n}" for s, k, n in grid.columns], rotation=90, fontsize=7)
    ax.axhline(len(EDGES) - 0.5, color="white", lw=1.5)
    ax.set_title("Bootstrap edge confidence (* true edge)")
    bottom.colorbar(image, ax=ax, label="fraction of replicates with the edge")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def data_seed(seed: int, n: int) -> int:
    """The seed that samples the size-``n`` data set: independent data sets per size."""
    return int(np.random.SeedSequence([seed, n]).generate_state(1)[0])


def main(
    out: Path = Path("results/bayesian_network"),
    n_boot: int = 20,
    sample_sizes: tuple[int, ...] = (250, 1000, 5000),
    seed: int = 1988,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Structure learning on the Asia network over scores, in-degree limits, sample sizes and bootstrap replicates.

    Args:
        out: output folder: the durable run (resumable), results table, summaries and plot
        n_boot: bootstrap replicates per setting and sample size
        sample_sizes: sizes of the data sets sampled from the network (e.g. --sample-sizes 250 1000 5000)
        seed: seed of the sampled data sets and of every bootstrap resample
    """
    require("pgmpy", "bayesian")
    require("matplotlib", "recipes")
    sizes = sorted({int(s) for s in sample_sizes})
    data = {n: sample_asia(n, seed=data_seed(seed, n)) for n in sizes}
    tasks = SCORES * sweepkit.grid(max_indegree=MAX_INDEGREE, n=sizes) * sweepkit.bootstrap(n_boot)
    results = sweepkit.sweep(learn_structure, tasks, shared={"data": data}, seed=seed, store=out)

    frame = score_structures(results.to_frame())
    confidence = edge_confidence(frame)
    summary = summarize(frame, confidence)
    table = write_table(frame, out / "results.parquet")
    summary.to_csv(out / "summary.csv", index=False)
    confidence.to_csv(out / "edge_confidence.csv", index=False)
    plot(summary, confidence, out / "structure.png")

    best = summary.sort_values(["n", "shd_mean"], ascending=[False, True]).iloc[0]
    shown = summary[["scoring", "max_indegree", "n", "shd_mean", "shd_sd", "skeleton_precision_mean",
                     "skeleton_recall_mean", "confidence_absent_edges"]]
    print(f"\n{len(frame)} structures learned ({len(summary)} settings x {n_boot} bootstrap replicates); seed {results.seed}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(
        f"\nClosest to the truth at n={best['n']}: {best['scoring']} with max in-degree {best['max_indegree']}, "
        f"SHD {best['shd_mean']:.2f} ± {best['shd_sd']:.2f}; true edges found in {best['skeleton_recall_mean']:.0%} "
        f"of replicates on average, absent edges in {best['confidence_absent_edges']:.0%}"
    )
    print(f"Wrote {table}, {out / 'summary.csv'}, {out / 'edge_confidence.csv'}, {out / 'structure.png'}")
    return frame, summary, confidence


if __name__ == "__main__":
    from sweepkit.cli import run_recipe

    run_recipe(main)
