"""Loss plugins: cross-entropy with sample weights, class weights and label smoothing.

Checked against PyTorch's ``F.cross_entropy(weight=..., label_smoothing=...)`` (autograd for
the gradient) where torch is installed, against a NumPy transcription of PyTorch's formula
everywhere, and against scikit-learn's ``sample_weight``/``class_weight`` objective by
fitting both to the same optimum.
"""

from __future__ import annotations

import numpy as np
import pytest

from smx.backends import numpy_kernels
from smx.config import load_config
from smx.datasets.split import prepare
from smx.errors import ConfigError
from smx.losses import CrossEntropy
from smx.objective import Objective, portable_partial
from smx.plugins import Plugins
from smx.training import train
from smx.types import Block
from tests.conftest import assert_one_line_error, run_smx, write_yaml

PLUGINS = Plugins(entry_points=False)
L2 = 0.01
OPTIONS = [(eps, cw) for eps in (0.0, 0.1, 0.35) for cw in (False, True)]


def problem(seed=0, n=37, d=4, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    params = {"W": rng.normal(scale=0.5, size=(d, k)), "b": rng.normal(scale=0.2, size=k)}
    return X, y, params, rng.uniform(0.2, 3.0, size=k), rng.uniform(0.0, 2.0, size=n)


def pytorch_formula(params, X, y, cw, eps, l2):
    """PyTorch's cross_entropy(weight=cw, label_smoothing=eps, reduction='mean'), transcribed
    (aten LossNLL.cpp: (1−ε)·nll + ε/K · Σ_j c_j·(−log p_j) summed, both over Σ c_{y_i})."""
    Z = X @ params["W"] + params["b"]
    logp = Z - Z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    n, k = Z.shape
    c = np.ones(k) if cw is None else cw
    denom = c[y].sum()
    nll = -(c[y] * logp[np.arange(n), y]).sum() / denom
    smooth = -(logp * c[None, :]).sum() / denom
    return (1 - eps) * nll + eps / k * smooth + 0.5 * l2 * np.sum(params["W"] ** 2)


@pytest.mark.parametrize(("eps", "weighted"), OPTIONS)
def test_matches_the_pytorch_formula_and_its_gradient(eps, weighted):
    X, y, params, cw, _ = problem()
    cw = cw if weighted else None
    obj = Objective(CrossEntropy(eps), L2, class_weight=cw)
    value, grads = obj.value_and_grad({k: v.copy() for k, v in params.items()}, Block(X, y))
    assert float(value) == pytest.approx(pytorch_formula(params, X, y, cw, eps, L2), rel=1e-13)
    h = 1e-6  # central differences of the transcription
    for name in params:
        num = np.zeros_like(params[name])
        for idx in np.ndindex(params[name].shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            num[idx] = (pytorch_formula(plus, X, y, cw, eps, L2)
                        - pytorch_formula(minus, X, y, cw, eps, L2)) / (2 * h)
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("eps", "weighted"), OPTIONS)
def test_matches_torch_cross_entropy(eps, weighted):
    torch = pytest.importorskip("torch",
                                reason="torch is not installed (pip install torch==2.13.0)")
    F = torch.nn.functional
    X, y, params, cw, _ = problem(seed=1)
    cw = cw if weighted else None
    tW = torch.tensor(params["W"], requires_grad=True)
    tb = torch.tensor(params["b"], requires_grad=True)
    loss = F.cross_entropy(torch.tensor(X) @ tW + tb, torch.tensor(y),
                           weight=None if cw is None else torch.tensor(cw), label_smoothing=eps)
    loss = loss + 0.5 * L2 * (tW * tW).sum()
    loss.backward()
    value, grads = Objective(CrossEntropy(eps), L2, class_weight=cw).value_and_grad(
        params, Block(X, y))
    assert float(value) == pytest.approx(loss.item(), rel=1e-13)
    np.testing.assert_allclose(grads["W"], tW.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["b"], tb.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_sample_weights_are_a_weighted_mean_and_integer_weights_repeat_rows():
    X, y, params, _, w = problem(seed=2)
    obj = Objective(CrossEntropy(), L2)
    counts = np.array([0, 1, 2, 3] * 10)[: len(y)]
    rep = np.repeat(np.arange(len(y)), counts)
    v1, g1 = obj.value_and_grad(params, Block(X, y, counts.astype(float)))
    v2, g2 = obj.value_and_grad(params, Block(X[rep], y[rep]))
    assert float(v1) == pytest.approx(float(v2), rel=1e-13)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-15)
    # scaling every weight changes nothing: the objective is a weighted *mean*
    v3, _ = obj.value_and_grad(params, Block(X, y, 7.5 * w))
    v4, _ = obj.value_and_grad(params, Block(X, y, w))
    assert float(v3) == pytest.approx(float(v4), rel=1e-13)


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize(("eps", "weighted"), OPTIONS)
def test_the_numpy_kernel_equals_the_portable_path_or_declines(eps, weighted, sample):
    X, y, params, cw, w = problem(seed=3, n=300)
    loss = CrossEntropy(eps)
    kernel = PLUGINS.backend("numpy").kernel(loss)
    if eps:
        assert kernel is None  # a smoothed loss is not what the kernel computes
        return
    assert kernel.block_kernel is numpy_kernels.cross_entropy_partial
    block = Block(X, y, w if sample else None)
    cw = cw if weighted else None
    for grad in (True, False):
        a = kernel(params, block, cw, grad=grad)
        b = portable_partial(loss, params, block, cw, grad=grad)
        assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-13)
        assert float(a.weight) == pytest.approx(float(b.weight), rel=1e-14)
        if grad:
            for k in b.grads:
                np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_numpy_kernel_takes_a_large_block_in_pieces(weighted, monkeypatch):
    """Past the cache size, partials of row pieces are summed: the same sums (to rounding)
    as one pass; the pieces are as even as integers allow (no short last one, whose fixed
    cost would be a whole piece's)."""
    rng = np.random.default_rng(5)
    n, d, k = 2_500, 96, 7
    X, y = rng.normal(size=(n, d)), rng.integers(0, k, n)
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    cw = rng.uniform(0.5, 2.0, k) if weighted else None
    params = {"W": rng.normal(size=(d, k)), "b": rng.normal(size=k)}
    pieces = []
    real = numpy_kernels._block_partial
    monkeypatch.setattr(numpy_kernels, "_block_partial",
                        lambda p, b, *a: (pieces.append(b.n), real(p, b, *a))[1])
    monkeypatch.setattr(numpy_kernels, "CACHED_BATCH_BYTES", 600 * d * 8)  # 600 rows a piece
    got = numpy_kernels.cross_entropy_partial(params, Block(X, y, w), cw)
    assert pieces == [500, 500, 500, 500, 500]  # 5 pieces of at most 600 rows
    ref = portable_partial(CrossEntropy(), params, Block(X, y, w), cw)
    assert float(got.loss) == pytest.approx(float(ref.loss), rel=1e-13)
    assert float(got.weight) == pytest.approx(float(ref.weight), rel=1e-14)
    for key in ref.grads:
        np.testing.assert_allclose(got.grads[key], ref.grads[key], rtol=1e-12, atol=1e-13)


def test_pieces_stay_within_the_small_gemm_size_and_the_cache():
    rows = numpy_kernels.piece_rows
    assert rows(np.zeros((1, 256), np.float32), 10) == 390  # 390·256·10 ≤ 1e6
    assert rows(np.zeros((1, 2), np.float64), 1) == (4 << 20) // 16  # the cache bounds it
    assert rows(np.zeros((1, 50_000), np.float32), 20) == 64  # never fewer rows than this


@pytest.mark.parametrize("engine", ["torch", "jax"])
@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize(("eps", "weighted"), OPTIONS)
def test_the_torch_and_jax_kernels_equal_the_portable_path_or_decline(engine, eps, weighted,
                                                                       sample):
    pytest.importorskip(engine, reason=f"{engine} is not installed (pip install 'smx[{engine}]')")
    import importlib

    kernels = importlib.import_module(f"smx.backends.{engine}_kernels")
    backend = PLUGINS.backend(engine)
    X, y, params, cw, w = problem(seed=3, n=300)
    loss = CrossEntropy(eps)
    kernel = backend.kernel(loss)
    if eps:
        assert kernel is None  # a smoothed loss is not what the kernel computes
        return
    assert kernel is kernels.cross_entropy_partial

    def dev(a, dtype="float64"):
        return None if a is None else backend.from_host(a, "cpu", dtype)

    block = Block(dev(X), dev(y, "int64"), dev(w) if sample else None)
    on_device = {k: dev(v) for k, v in params.items()}
    for grad in (True, False):
        a = kernel(on_device, block, dev(cw) if weighted else None, grad=grad)
        b = portable_partial(loss, params, Block(X, y, w if sample else None),
                             cw if weighted else None, grad=grad)
        assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-13)
        assert float(a.weight) == pytest.approx(float(b.weight), rel=1e-14)
        if grad:
            for k in b.grads:
                np.testing.assert_allclose(backend.to_host(a.grads[k]), b.grads[k],
                                           rtol=1e-12, atol=1e-14)


def test_an_unknown_loss_option_names_its_key():
    with pytest.raises(ConfigError, match=r"loss.smoothing: unknown key; allowed: "
                                          r"class_weight, label_smoothing"):
        load_config({"loss": {"smoothing": 0.1}}, plugins=PLUGINS)
    with pytest.raises(ConfigError, match=r"loss\.label_smoothing"):
        load_config({"loss": {"label_smoothing": 1.5}}, plugins=PLUGINS)
    with pytest.raises(ConfigError, match=r"loss\.class_weight"):
        load_config({"loss": {"class_weight": {"a": -1.0}}}, plugins=PLUGINS)


def _fit_smx(X, y, *, C, w=None, class_weight=None):
    cfg = load_config({"data": {"name": "iris", "val_fraction": 0, "test_fraction": 0,
                                "standardize": False},
                       "model": {"C": C, "init_scale": 0.0}, "dtype": "float64", "epochs": 300,
                       "optimizer": {"name": "lbfgs", "tol": 1e-10},
                       "loss": {"class_weight": class_weight}}, plugins=PLUGINS)
    splits = prepare(X, y, val_fraction=0, test_fraction=0, seed=0, standardize=False,
                     sample_weight=w)
    return train(cfg, splits, PLUGINS.backend("numpy"), "cpu", PLUGINS).params


@pytest.mark.parametrize("case", ["sample_weight", "balanced", "mapping"])
def test_reaches_scikit_learns_weighted_optimum(case):
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    w = np.random.default_rng(0).uniform(0.1, 3.0, size=len(y)) if case == "sample_weight" \
        else None
    cw = {"balanced": "balanced", "mapping": {0: 3.0, 2: 0.5}}.get(case)
    sk = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000, class_weight=cw).fit(
        X, y, sample_weight=w)
    ours = _fit_smx(X, y, C=0.5, w=w, class_weight=cw)
    np.testing.assert_allclose(ours["W"], sk.coef_.T, rtol=1e-4, atol=1e-5)
    b = ours["b"] - ours["b"].mean()
    np.testing.assert_allclose(b, sk.intercept_ - sk.intercept_.mean(), rtol=1e-4, atol=1e-5)


def test_a_class_weight_for_an_unknown_label_is_one_line(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", "data: {name: iris}\nepochs: 1\n"
                     "loss: {class_weight: {7: 2.0}}\n")
    proc = run_smx("run", str(cfg), "output=out", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "loss.class_weight", "class 7 is not among the labels")
    assert not (tmp_path / "out").exists()


def test_weights_from_a_csv_column_and_an_npz_key_train(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    w = rng.uniform(0.5, 2.0, size=120)
    lines = ["a,b,c,wt,label"] + [f"{r[0]},{r[1]},{r[2]},{wi},{yi}"
                                  for r, wi, yi in zip(X, w, y, strict=True)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "d.npz", X=X, y=y, wt=w)
    for data in ("data.path=d.csv data.label_column=label", "data.path=d.npz"):
        out = f"out-{data[10:13]}"
        proc = run_smx("run", "data.name=file", *data.split(), "data.sample_weight=wt",
                       "epochs=3", f"output={out}", "--quiet", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        from smx.modelfile import load_model

        assert load_model(tmp_path / out / "model.npz").W.shape == (3, 2)  # wt is no feature
    proc = run_smx("run", "data.name=file", "data.path=d.npz", "data.sample_weight=nope",
                   "epochs=1", "output=bad", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "no array 'nope'")


def test_a_batch_whose_rows_all_weigh_zero_contributes_nothing():
    X, y, params, _, _ = problem(seed=4)
    block = Block(X, y, np.zeros(len(y)))
    value, grads = Objective(CrossEntropy(), 0.0).value_and_grad(params, block)
    assert float(value) == 0.0 and all(np.all(g == 0) for g in grads.values())
