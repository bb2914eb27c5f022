"""L-BFGS at tol=1e-10 against a tightly converged reference (issue 20's table).

For each data set and C, fits ``SoftmaxRegression(C, tol=1e-10)`` (float64, standardized
X) and scikit-learn's ``LogisticRegression(C, tol=1e-10)``, and compares both with SciPy's
L-BFGS-B run on the same objective to ``gtol=1e-12`` with its loss-change test off
(``ftol=0``): the reference. Prints a Markdown table (max|Δcoef| against the reference, the
stop reason, iterations and seconds); ``tests/test_estimator_convergence.py`` asserts the
same ≤ 1e-5.

    python benchmarks/convergence.py
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_expit, logsumexp, softmax
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from smx import SoftmaxRegression

CS = (0.01, 1.0, 100.0)
TOL = 1e-10


def rank_deficient() -> tuple[np.ndarray, np.ndarray]:
    """Redundant and repeated columns: directions the data cannot see."""
    return make_classification(n_samples=400, n_features=20, n_informative=8, n_redundant=6,
                               n_repeated=2, n_classes=3, random_state=0)


DATASETS = {
    "digits": lambda: load_digits(return_X_y=True),
    "iris": lambda: load_iris(return_X_y=True),
    "wine": lambda: load_wine(return_X_y=True),
    "breast_cancer": lambda: load_breast_cancer(return_X_y=True),
    "rank_deficient": rank_deficient,
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = DATASETS[name]()
    return StandardScaler().fit_transform(X), np.unique(y, return_inverse=True)[1]


def objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray, C: float, k: int
              ) -> tuple[float, np.ndarray]:
    """scikit-learn's objective divided by C·n, and its gradient, over [coef, intercept]
    (one row for two classes, as ``coef_`` has)."""
    n, p = X.shape
    rows = 1 if k == 2 else k
    W = theta.reshape(rows, p + 1)
    coef, b = W[:, :p], W[:, p]
    Z = X @ coef.T + b
    if k == 2:
        s = np.where(y == 1, 1.0, -1.0)
        f = -np.mean(log_expit(s * Z[:, 0]))
        dZ = (-s * np.exp(log_expit(-s * Z[:, 0])) / n)[:, None]
    else:
        f = np.mean(logsumexp(Z, axis=1) - Z[np.arange(n), y])
        P = softmax(Z, axis=1)
        P[np.arange(n), y] -= 1.0
        dZ = P / n
    lam = 1.0 / (C * n)
    f += 0.5 * lam * np.sum(coef**2)
    grad = np.hstack([dZ.T @ X + lam * coef, dZ.sum(axis=0)[:, None]])
    return float(f), grad.ravel()


def reference(X: np.ndarray, y: np.ndarray, C: float) -> np.ndarray:
    """``coef_`` at gtol 1e-12, no loss-change stop: the minimiser to ~1e-9."""
    k, p = int(y.max()) + 1, X.shape[1]
    rows = 1 if k == 2 else k
    res = minimize(objective, np.zeros(rows * (p + 1)), args=(X, y, C, k), jac=True,
                   method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 100_000, "maxcor": 30})
    return res.x.reshape(rows, p + 1)[:, :p]


def smx_fit(X: np.ndarray, y: np.ndarray, C: float) -> SoftmaxRegression:
    return SoftmaxRegression(C=C, tol=TOL, max_iter=20_000).fit(X, y)


def row(name: str, C: float) -> dict:
    X, y = load(name)
    ref = reference(X, y, C)
    t0 = time.perf_counter()
    est = smx_fit(X, y, C)
    t_smx = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = LogisticRegression(C=C, tol=TOL, max_iter=20_000).fit(X, y)
    t_sk = time.perf_counter() - t0
    return {"data": name, "C": C, "shape": X.shape,
            "smx": float(np.max(np.abs(est.coef_ - ref))), "smx_iter": int(est.n_iter_[0]),
            "smx_s": t_smx, "stop": est.stop_reason_,
            "sklearn": float(np.max(np.abs(sk.coef_ - ref))), "sk_iter": int(sk.n_iter_[0]),
            "sk_s": t_sk}


def main() -> int:
    print("| data | n × p | C | smx max\\|Δcoef\\| | smx iterations | smx s | smx stop reason "
          "| scikit-learn max\\|Δcoef\\| | its iterations | its s |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    worst = 0.0
    for name in DATASETS:
        for C in CS:
            r = row(name, C)
            worst = max(worst, r["smx"])
            print(f"| {r['data']} | {r['shape'][0]} × {r['shape'][1]} | {C:g} | {r['smx']:.1e} "
                  f"| {r['smx_iter']} | {r['smx_s']:.2f} | {r['stop']} | {r['sklearn']:.1e} "
                  f"| {r['sk_iter']} | {r['sk_s']:.2f} |", flush=True)
    print(f"\nworst smx max|Δcoef|: {worst:.1e} (limit 1e-5)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
