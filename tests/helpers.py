"""Task functions the tests send to workers (importable there: tests/ is on their path)."""

from __future__ import annotations

import os
import time

import numpy as np

LOADS: list[int] = []  # pids that unpickled a Payload in this process


class Payload:
    """Wraps an array and counts how often a process deserializes it."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        return (_load_payload, (self.array,))


def _load_payload(array: np.ndarray) -> Payload:
    LOADS.append(os.getpid())
    return Payload(array)


def loads() -> int:
    return len(LOADS)


def use_payload(i: int, payload: Payload, pause: float = 0.0) -> float:
    time.sleep(pause)
    return float(payload.array[i % len(payload.array)])


def use_payload_until(i: int, payload: Payload, flag: str) -> float:
    """Slow until ``flag`` exists, then quicker: leaves work for a worker that joins late."""
    time.sleep(0.01 if os.path.exists(flag) else 0.05)
    return float(payload.array[i % len(payload.array)])


def noisy(a: float, b: int, rng: np.random.Generator, X: np.ndarray) -> dict:
    """Uses the task's random stream and BLAS: must be bitwise identical everywhere."""
    w = rng.standard_normal(X.shape[1])
    return {"score": float(np.linalg.norm(X @ w)) * a + b, "draw": float(rng.random())}


def fail_at(i: int, bad: int = 500) -> int:
    if i == bad:
        raise ValueError(f"task {i} is bad")
    return 2 * i


def slow(i: int, pause: float = 0.05) -> int:
    time.sleep(pause)
    return i
