"""Which model predicts a response from many more features than samples?

Like gene expression predicting drug response: one data set of ``n = 100`` samples
and ``p = 2,000`` features in correlated blocks, with a sparse linear signal.
Every model configuration (a mean-only baseline, lasso, elastic net, ridge and
random forest, each with its hyper-parameters) is scored on the held-out rows of
every resample: the folds of repeated k-fold cross-validation, or the out-of-bag
rows of bootstrap replicates. Scaling
and univariate feature selection (SelectKBest) sit inside a scikit-learn Pipeline
and are fitted on each resample's training rows only: no information from the
held-out rows leaks into the model.

The work is a table of (model configuration x resample) fits. One option, ``--over``,
says what runs in parallel (and whether the resamples are CV folds or bootstrap
replicates); whatever is not parallel runs inside each task:

    --over models,cv          one task per (model configuration, CV fold)     [default]
    --over models,bootstrap   one task per (model configuration, bootstrap replicate)
    --over cv                 one task per CV fold, fitting every model
    --over bootstrap          one task per bootstrap replicate, fitting every model
    --over models             one task per model configuration, running every CV fold

For a given kind of resample, the scores do not depend on ``--over``: it only changes
how the work is cut up.

    sweepkit run recipes/prediction_pipeline.py --out results/prediction
    python recipes/prediction_pipeline.py --over bootstrap --cluster local

The defaults take well under a minute on two cores. At a real study's size (hours
on one machine; minutes on a cluster):

    sweepkit run recipes/prediction_pipeline.py --cluster sge --n-samples 500 \\
        --n-features 20000 --k-best 1000 --repeats 20 --n-boot 500

Outputs in ``--out``: ``results.parquet`` (one row per model configuration and
resample: R^2 and MSE on the held-out rows, and the duration of the task that made
it), ``summary.csv`` (per configuration: mean, sd and 2.5/97.5 percentiles of R^2)
and ``scores.png``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

import sweepkit
from sweepkit.extras import require
from sweepkit.report import write_table

# The model configurations: a grid per model family, concatenated.
MODELS = (
    sweepkit.grid(model="mean")
    + sweepkit.grid(model="lasso", alpha=[0.025, 0.05, 0.1, 0.2])
    + sweepkit.grid(model="elastic_net", alpha=[0.05, 0.1, 0.2, 0.4], l1_ratio=0.5)
    + sweepkit.grid(model="ridge", alpha=[10.0, 100.0, 1000.0])
    + sweepkit.grid(model="random_forest", max_features=[0.1, 0.33])
)
HYPER_PARAMETERS = list(dict.fromkeys(name for config in MODELS for name in config if name != "model"))
BLOCK_SIZE, BLOCK_CORRELATION = 20, 0.5


def simulate(n_samples: int, n_features: int, n_informative: int, signal_r2: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features in blocks of 20 with correlation 0.5 within a block; ``y`` a sum of one
    feature from each of the first ``n_informative`` blocks plus noise, scaled so that
    the signal explains ``signal_r2`` of the variance of ``y`` (0: ``y`` is pure noise)."""
    informative = np.arange(n_informative) * BLOCK_SIZE
    if informative.size and informative[-1] >= n_features:
        raise ValueError(f"{n_informative} informative blocks of {BLOCK_SIZE} features need more than {n_features} features")
    rng = np.random.default_rng(seed)
    blocks = rng.standard_normal((n_samples, math.ceil(n_features / BLOCK_SIZE)))
    common = np.repeat(blocks, BLOCK_SIZE, axis=1)[:, :n_features]
    X = np.sqrt(BLOCK_CORRELATION) * common + np.sqrt(1 - BLOCK_CORRELATION) * rng.standard_normal((n_samples, n_features))
    signal = X[:, informative].sum(axis=1) / np.sqrt(max(n_informative, 1))  # variance 1
    y = np.sqrt(signal_r2) * signal + np.sqrt(1 - signal_r2) * rng.standard_normal(n_samples)
    return X, y


def make_pipeline(model: str, k_best: int, **hyper: Any):
    """Scale, keep the ``k_best`` features most correlated with ``y``, fit ``model``."""
    from sklearn.dummy import DummyRegressor
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_selection import SelectKBest, f_regression
    from sklearn.linear_model import ElasticNet, Lasso, Ridge
    from sklearn.pipeline import make_pipeline as pipeline
    from sklearn.preprocessing import StandardScaler

    estimators = {
        "mean": DummyRegressor,
        "lasso": lambda **h: Lasso(max_iter=10_000, **h),
        "elastic_net": lambda **h: ElasticNet(max_iter=10_000, **h),
        "ridge": Ridge,
        # A fixed random_state: the forest of a given resample is the same whichever
        # task fits it, so the scores do not depend on --over.
        "random_forest": lambda **h: RandomForestRegressor(n_estimators=100, random_state=0, **h),
    }
    return pipeline(StandardScaler(), SelectKBest(f_regression, k=k_best), estimators[model](**hyper))


def fit_and_score(X: np.ndarray, y: np.ndarray, k_best: int, split, model: str, **hyper: Any) -> dict[str, float]:
    """Fit one model configuration on a resample's training rows, score it on its held-out
    rows. ``split`` is a bootstrap :class:`~sweepkit.Replicate` (in-bag / out-of-bag) or a
    cross-validation :class:`~sweepkit.Fold` (train / test)."""
    from sklearn.metrics import mean_squared_error, r2_score

    train, test = split.split(len(y))
    predicted = make_pipeline(model, min(k_best, X.shape[1]), **hyper).fit(X[train], y[train]).predict(X[test])
    return {"r2": r2_score(y[test], predicted), "mse": mean_squared_error(y[test], predicted)}


def evaluate(X: np.ndarray, y: np.ndarray, k_best: int, inner: list[dict], **task: Any) -> pd.DataFrame:
    """One task: the fits of the task's parameters combined with each entry of ``inner``.

    The task gives a model configuration, a resample, or both; ``inner`` lists the other
    loop (``[{}]`` when the task gives both). One row per fit, holding the parameters
    that came from ``inner`` (the sweep adds the task's own) and the scores.
    """
    rows = []
    for extra in inner:
        params = {**task, **extra}
        split = params.pop("replicate") if "replicate" in params else params.pop("fold")
        params.pop("repeat", None)
        rows.append({**plain(extra), **fit_and_score(X, y, k_best, split, **params)})
    return pd.DataFrame(rows)


def plain(params: dict) -> dict:
    """Parameters as plain values: a Replicate or Fold becomes its number."""
    return {k: int(v) if isinstance(v, sweepkit.Replicate | sweepkit.Fold) else v for k, v in params.items()}


def config_label(row: pd.Series) -> str:
    """``"lasso(alpha=0.2)"``: a model and its hyper-parameters."""
    hyper = ", ".join(f"{h}={row[h]:g}" for h in HYPER_PARAMETERS if pd.notna(row.get(h)))
    return f"{row['model']}({hyper})" if hyper else row["model"]


def plan(axis: str, models: sweepkit.Tasks, resamples: sweepkit.Tasks) -> tuple[sweepkit.Tasks, list[dict]]:
    """The sweep's tasks and the inner loop each task runs: ``axis`` is "both", "models" or "resamples"."""
    if axis == "both":
        return models * resamples, [{}]
    if axis == "models":
        return models, list(resamples)
    return resamples, list(models)


def tidy(frame: pd.DataFrame, split_columns: list[str]) -> pd.DataFrame:
    """One row per (model configuration, resample), in grid order, whatever the axis."""
    labels = [config_label(pd.Series(t)) for t in MODELS]
    frame = frame.assign(config=pd.Categorical(frame.apply(config_label, axis=1), categories=labels, ordered=True))
    for h in HYPER_PARAMETERS:  # a column only some models have is NaN for the others
        frame[h] = frame[h].astype(float)
    columns = ["config", "model", *HYPER_PARAMETERS, *split_columns, "r2", "mse"]
    return frame.sort_values(["config", *split_columns])[[*columns, "duration", "worker"]].reset_index(drop=True)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model configuration, best first: held-out R^2 (mean, sd, 2.5 and 97.5
    percentiles over resamples) and mean MSE."""
    groups = scores.groupby(["config", "model"], observed=True)
    summary = groups["r2"].agg(
        resamples="size", r2_mean="mean", r2_sd="std",
        r2_q025=lambda s: s.quantile(0.025), r2_q975=lambda s: s.quantile(0.975),
    )
    summary["mse_mean"] = groups["mse"].mean()
    return summary.sort_values("r2_mean", ascending=False).reset_index()


def plot(scores: pd.DataFrame, summary: pd.DataFrame, title: str, path: Path) -> None:
    """Box plots of held-out R^2 per model configuration, best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = summary[::-1]  # matplotlib draws the first box at the bottom
    families = list(dict.fromkeys(config["model"] for config in MODELS))
    colours = dict(zip(families, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(shown) + 1.5), layout="constrained")
    boxes = ax.boxplot([scores.loc[scores["config"] == c, "r2"] for c in shown["config"]], orientation="horizontal",
                       tick_labels=list(shown["config"]), patch_artist=True, medianprops={"color": "black"})
    for box, model in zip(boxes["boxes"], shown["model"]):
        box.set_facecolor(colours[model])
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set(xlabel="R² on held-out rows (0: predicting the training mean)", title=title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    out: Path = Path("results/prediction_pipeline"),
    over: Literal["models,cv", "models,bootstrap", "cv", "bootstrap", "models"] = "models,cv",
    n_samples: int = 100,
    n_features: int = 2000,
    n_informative: int = 5,
    signal_r2: float = 0.9,
    k_best: int = 200,
    folds: int = 5,
    repeats: int = 5,
    n_boot: int = 50,
    seed: int = 7,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score lasso, elastic net, ridge and random forest pipelines on resamples of one wide data set.

    Args:
        out: output folder: the durable run (resumable), results table, summary and plot
        over: what runs in parallel: model configurations, CV folds or bootstrap replicates, or a product of two
        n_samples: rows of the simulated data
        n_features: features of the simulated data
        n_informative: features that carry the signal (one per block of 20 correlated features)
        signal_r2: fraction of the variance of y the signal explains (0: y is pure noise)
        k_best: features kept by the univariate filter, chosen on each resample's training rows
        folds: folds of each cross-validation repeat
        repeats: repeats of k-fold cross-validation
        n_boot: bootstrap replicates
        seed: seed of the simulated data and of every resample
    """
    require("sklearn", "recipes")
    require("matplotlib", "recipes")
    X, y = simulate(n_samples, n_features, n_informative, signal_r2, seed)
    # The resamples carry the seed themselves, so they are the same inside a task as
    # when they are tasks: the scores do not depend on the axis.
    resample = "bootstrap" if over.endswith("bootstrap") else "cv"
    axis = "both" if "," in over else "models" if over == "models" else "resamples"
    if resample == "cv":
        resamples, split_columns = sweepkit.cv_folds(folds, repeats, seed=seed), ["repeat", "fold"]
    else:
        resamples, split_columns = sweepkit.bootstrap(n_boot, seed=seed), ["replicate"]
    tasks, inner = plan(axis, MODELS, resamples)
    shared = {"X": X, "y": y, "k_best": k_best, "inner": inner}
    results = sweepkit.sweep(evaluate, tasks, shared=shared, seed=seed, store=out)

    scores = tidy(results.to_frame(), split_columns)
    summary = summarize(scores)
    table = write_table(scores, out / "results.parquet")
    summary.to_csv(out / "summary.csv", index=False)
    held_out = f"{folds}-fold CV, {repeats} repeats" if resample == "cv" else f"{n_boot} bootstrap out-of-bag samples"
    plot(scores, summary, f"n={n_samples}, p={n_features}, {held_out}", out / "scores.png")

    best = summary.iloc[0]
    print(f"\n{len(scores)} fits ({len(MODELS)} model configurations x {len(resamples)} resamples, "
          f"{len(tasks)} tasks); seed {results.seed}")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nBest: {best['config']}, held-out R² {best['r2_mean']:.3f} ± {best['r2_sd']:.3f} "
          f"(95% of resamples within {best['r2_q025']:.3f} to {best['r2_q975']:.3f})")
    print(f"Wrote {table}, {out / 'summary.csv'}, {out / 'scores.png'}")
    return scores, summary


if __name__ == "__main__":
    from sweepkit.cli import run_recipe

    run_recipe(main)
