"""Elastic net, lasso and ridge on thousands of bootstrap resamples of one data set.

How well does each penalised regression recover a sparse signal, and how stable
is that? Each randomized run draws a bootstrap resample of the training data,
fits the three models on that same resample, and scores each on a held-out test
set: test error, error of the coefficients against the truth, and which features
it selected. The runs are collected into one table; the summary gives each
model's mean and spread, and how often each feature was selected.

    sweepkit run recipes/elastic_net_simulation.py --n-runs 200 --out results/enet
    sweepkit run recipes/elastic_net_simulation.py --cluster sge --workers 20

The data are simulated with known sparse coefficients (default), or are
scikit-learn's diabetes data (``--data diabetes``: no true coefficients, so
coefficient error is left empty and selection frequency is what to read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

import sweepkit
from sweepkit.extras import require
from sweepkit.report import write_table

MODELS = ("elastic_net", "lasso", "ridge")


def make_data(data: str, n_samples: int, n_features: int, n_informative: int, noise: float, seed: int) -> dict:
    """Training data, a large test set, and the true coefficients (None for real data)."""
    rng = np.random.default_rng(seed)
    if data == "diabetes":
        from sklearn.datasets import load_diabetes
        from sklearn.model_selection import train_test_split

        X, y = load_diabetes(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed)
        return {"X": X_train, "y": y_train, "X_test": X_test, "y_test": y_test, "beta": None}
    beta = np.zeros(n_features)
    beta[:n_informative] = rng.choice([-1.0, 1.0], n_informative) * rng.uniform(1.0, 3.0, n_informative)
    X = rng.standard_normal((n_samples + 2000, n_features))
    y = X @ beta + noise * rng.standard_normal(len(X))
    return {"X": X[:n_samples], "y": y[:n_samples], "X_test": X[n_samples:], "y_test": y[n_samples:], "beta": beta}


def make_model(model: str, alpha: float):
    from sklearn.linear_model import ElasticNet, Lasso, Ridge

    if model == "elastic_net":
        return ElasticNet(alpha=alpha, l1_ratio=0.5, max_iter=5000)
    if model == "lasso":
        return Lasso(alpha=alpha, max_iter=5000)
    return Ridge(alpha=alpha * len(MODELS) * 10)  # ridge needs a larger penalty for a comparable shrinkage


def fit_one(model: str, replicate: sweepkit.Replicate, alpha: float, X, y, X_test, y_test, beta) -> dict:
    """Fit one model on bootstrap replicate ``replicate`` and score it."""
    rows = replicate.indices(len(y))
    est = make_model(model, alpha).fit(X[rows], y[rows])
    coef = est.coef_
    selected = np.abs(coef) > 1e-8
    out = {
        "test_mse": float(np.mean((est.predict(X_test) - y_test) ** 2)),
        "n_selected": int(selected.sum()),
        "selected": np.flatnonzero(selected),
    }
    if beta is not None:
        truth = beta != 0
        out["coef_error"] = float(np.linalg.norm(coef - beta))
        out["true_positives"] = int((selected & truth).sum())
        out["false_positives"] = int((selected & ~truth).sum())
    return out


def tasks(n_runs: int, alpha: float) -> sweepkit.Tasks:
    """``n_runs`` bootstrap replicates, each fitted by every model (the same resample)."""
    return sweepkit.bootstrap(n_runs) * sweepkit.grid(model=list(MODELS), alpha=alpha)


def summarize(frame: pd.DataFrame, n_features: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-model mean and spread of each score; per-model selection frequency of each feature."""
    ok = frame[frame["status"] == "ok"]
    scores = [c for c in ("test_mse", "coef_error", "n_selected", "true_positives", "false_positives") if c in ok and ok[c].notna().any()]
    summary = ok.groupby("model")[scores].agg(["mean", "std", lambda s: s.quantile(0.025), lambda s: s.quantile(0.975)])
    summary.columns = [f"{score}_{stat}" for score, stat in zip(summary.columns.get_level_values(0), ["mean", "sd", "q025", "q975"] * len(scores))]
    counts = np.zeros((len(MODELS), n_features))
    for i, model in enumerate(MODELS):
        for sel in ok.loc[ok["model"] == model, "selected"]:
            counts[i, sel] += 1
    runs = ok.groupby("model").size().reindex(list(MODELS)).to_numpy()[:, None]
    frequency = pd.DataFrame(counts / np.maximum(runs, 1), index=list(MODELS), columns=[f"x{j}" for j in range(n_features)])
    return summary, frequency


def _mean_sd(summary: pd.DataFrame) -> pd.DataFrame:
    """``mean ± sd`` of each score, one column per score."""
    scores = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
    return pd.DataFrame({s: [f"{m:.3g} ± {d:.2g}" for m, d in zip(summary[f"{s}_mean"], summary[f"{s}_sd"])] for s in scores}, index=summary.index)


def plot(frame: pd.DataFrame, frequency: pd.DataFrame, beta, path: Path) -> None:
    """Test error per model, and how often the sparse models select each feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame["status"] == "ok"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(1, 2.2))
    left.boxplot([ok.loc[ok["model"] == m, "test_mse"] for m in MODELS], tick_labels=list(MODELS), whis=(2.5, 97.5), showfliers=False)
    left.set(title=f"Test error over {len(ok) // len(MODELS)} bootstrap runs", ylabel="test MSE (box: quartiles, whiskers: 95%)")
    features = np.arange(frequency.shape[1])
    if beta is not None:
        for j in np.flatnonzero(beta):
            right.axvspan(j - 0.45, j + 0.45, color="0.88", zorder=0)
    for m, marker in zip(("lasso", "elastic_net"), "os"):  # ridge keeps every feature: nothing to show
        right.plot(features, frequency.loc[m].to_numpy(), marker=marker, ms=3.5, lw=1, label=m)
    right.set(
        title="How often each feature is selected" + (" (grey: true non-zero coefficient)" if beta is not None else ""),
        xlabel="feature", ylabel="fraction of runs", ylim=(-0.02, 1.02), xlim=(-0.7, len(features) - 0.3),
    )
    right.legend(loc="upper right", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    n_runs: int = 10_000,
    out: Path = Path("results/elastic_net_simulation"),
    data: Literal["simulated", "diabetes"] = "simulated",
    n_samples: int = 300,
    n_features: int = 50,
    n_informative: int = 5,
    noise: float = 2.0,
    alpha: float = 0.2,
    seed: int = 2024,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Elastic net, lasso and ridge on bootstrap resamples of one shared data set.

    Args:
        n_runs: randomized runs (bootstrap replicates); each fits all three models
        out: output folder: the durable run (resumable), results table, summary and plot
        data: simulated data with known sparse coefficients, or scikit-learn's diabetes data
        n_samples: training rows of the simulated data
        n_features: features of the simulated data
        n_informative: features with a non-zero true coefficient
        noise: standard deviation of the simulated noise
        alpha: penalty strength (ridge uses a proportionally larger one)
        seed: seed of the data and of every bootstrap resample
    """
    require("sklearn", "recipes")
    require("matplotlib", "recipes")
    shared = make_data(data, n_samples, n_features, n_informative, noise, seed)
    results = sweepkit.sweep(fit_one, tasks(n_runs, alpha), shared=shared, seed=seed, store=out, on_error="collect")
    frame = results.to_frame()
    summary, frequency = summarize(frame, shared["X"].shape[1])

    table = write_table(frame, out / "results.parquet")
    summary.to_csv(out / "summary.csv")
    frequency.to_csv(out / "selection_frequency.csv")
    plot(frame, frequency, shared["beta"], out / "plot.png")

    pd.set_option("display.width", 140)
    print(f"\n{len(frame)} fits ({n_runs} runs x {len(MODELS)} models), {results.counts()['error']} failed; seed {results.seed}")
    print("mean ± sd over the runs:")
    print(_mean_sd(summary).to_string())
    print(f"\nSelection frequency of the first features:\n{frequency.iloc[:, :10].round(2).to_string()}")
    print(f"\nWrote {table}, {out / 'summary.csv'}, {out / 'selection_frequency.csv'}, {out / 'plot.png'}")
    return frame, summary


if __name__ == "__main__":
    from sweepkit.cli import run_recipe

    run_recipe(main)
