"""Task builders: order, composition, and the resampling objects tasks carry."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sweepkit import Fold, Replicate, bootstrap, cv_folds, grid


def test_grid_is_the_cartesian_product_in_nested_loop_order():
    tasks = grid(model=["lasso", "ridge"], alpha=[0.1, 1.0, 10.0])
    assert len(tasks) == 6
    assert list(tasks) == [{"model": m, "alpha": a} for m in ["lasso", "ridge"] for a in [0.1, 1.0, 10.0]]
    assert tasks[-1] == {"model": "ridge", "alpha": 10.0} and tasks[1:3] == list(tasks)[1:3]
    with pytest.raises(IndexError):
        tasks[6]


def test_grid_scalars_strings_and_arrays():
    assert list(grid(model="lasso", alpha=np.array([1.0, 2.0]))) == [{"model": "lasso", "alpha": 1.0}, {"model": "lasso", "alpha": 2.0}]
    with pytest.raises(ValueError, match="grid axis 'alpha' is empty"):
        grid(alpha=[])


def test_products_and_sums_compose_lazily():
    tasks = grid(model=["a", "b"]) * bootstrap(100)
    assert len(tasks) == 200 and tasks[101] == {"model": "b", "replicate": 1}
    assert tasks.keys == {"model", "replicate"}
    mixed = grid(model="enet", alpha=[0.1, 1.0]) + grid(model="rf", trees=[100]) + [{"model": "null"}]
    assert [t["model"] for t in mixed] == ["enet", "enet", "rf", "null"] and mixed.keys is None
    huge = grid(i=range(10**6)) * grid(j=range(10**6))
    assert len(huge) == 10**12 and huge[10**12 - 1] == {"i": 10**6 - 1, "j": 10**6 - 1}
    with pytest.raises(ValueError, match="both factors of the product define \\['model'\\]"):
        grid(model=["a"]) * grid(model=["b"])


def test_tasks_pickle_with_their_contents():
    tasks = grid(model=["a", "b"]) * cv_folds(3, repeats=2)
    import cloudpickle

    again = pickle.loads(cloudpickle.dumps(tasks))
    assert list(again) == list(tasks)
    assert again[5]["fold"].n_splits == 3 and again[5]["fold"].repeat == 1


def test_bootstrap_replicates():
    r = Replicate(3, seed=42)
    idx = r.indices(50)
    assert idx.shape == (50,) and idx.min() >= 0 and idx.max() < 50
    assert np.array_equal(idx, Replicate(3, seed=42).indices(50))
    assert not np.array_equal(idx, Replicate(4, seed=42).indices(50))
    in_bag, out = r.split(50)
    assert set(in_bag).isdisjoint(out) and set(in_bag) | set(out) == set(range(50))
    assert int(r) == 3 and r == 3
    with pytest.raises(RuntimeError, match="gets the sweep's seed when it runs inside sweep"):
        bootstrap(2)[0]["replicate"].indices(10)


def test_cv_folds_of_a_repeat_partition_the_data():
    tasks = cv_folds(5, repeats=2, seed=1)
    assert len(tasks) == 10 and tasks[7] == {"repeat": 1, "fold": 2}
    for repeat in (0, 1):
        tests = [t["fold"].split(23)[1] for t in tasks if t["repeat"] == repeat]
        assert sorted(np.concatenate(tests).tolist()) == list(range(23))
        train, test = tasks[repeat * 5]["fold"].split(23)
        assert set(train).isdisjoint(test) and len(train) + len(test) == 23
    first = [t["fold"].split(23)[1].tolist() for t in tasks if t["repeat"] == 0]
    second = [t["fold"].split(23)[1].tolist() for t in tasks if t["repeat"] == 1]
    assert first != second


def test_stratified_folds_keep_class_balance():
    y = np.array([0] * 30 + [1] * 10)
    fold = Fold(0, 3, repeat=0, n_splits=5)
    train, test = fold.split(y, stratify=True)
    assert y[test].sum() == 2 and len(test) == 8


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_counts(bad):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        bootstrap(bad)
