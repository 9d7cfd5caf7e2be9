"""poeem <-> faiss interop, checked against real faiss (faiss-cpu 1.15.1).

- poeem builds an index, `poeem export-faiss` writes it, `faiss.read_index` loads it, and faiss's
  search at nprobe 1, n_lists/4 and n_lists returns poeem's ids (ties aside) with scores equal
  within 1e-4 relative, over a grid of shapes (dimension divisible by M or padded, several M,
  n_bits 4/6/8/12, metrics ip/l2/cosine, with and without OPQ);
- faiss builds an index (`IVF…,PQ…`, `OPQ…,IVF…,PQ…`, residuals off, lists left empty),
  `poeem import-faiss` converts it, and `poeem search` returns faiss's ids and scores; exporting
  it again gives a file that faiss searches identically;
- files poeem cannot represent are refused with the four-character code found.

Run with `POEEM_BIN=target/debug/poeem python -m pytest crates/poeem-faiss/tests/python`.
Deterministic: every random draw comes from a seeded numpy generator; faiss runs on one thread.
"""

import os
import subprocess
from pathlib import Path

import faiss
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[4]
POEEM = Path(os.environ.get("POEEM_BIN", ROOT / "target" / "debug" / "poeem"))
N_LISTS = 16
K = 10
N_QUERIES = 40

faiss.omp_set_num_threads(1)


def poeem(*args):
    """Runs the poeem binary; returns (returncode, stdout, stderr)."""
    proc = subprocess.run(
        [str(POEEM), *map(str, args)], capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr


def poeem_ok(*args):
    code, out, err = poeem(*args)
    assert code == 0, f"poeem {' '.join(map(str, args))} failed:\n{err}\n{out}"
    return out


def clustered(seed, n, dim):
    """Gaussian clusters, so that the coarse lists mean something."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(24, dim)) * 3.0
    scales = rng.uniform(0.5, 1.5, size=dim)
    x = centers[rng.integers(0, 24, size=n)] + rng.normal(size=(n, dim)) * scales
    return x.astype(np.float32)


def queries(seed, dim):
    return clustered(seed + 1000, N_QUERIES, dim)


def poeem_search(index, q, nprobe, tmp):
    qpath, ids, scores = tmp / "q.npy", tmp / "ids.npy", tmp / "scores.npy"
    np.save(qpath, q)
    poeem_ok(
        "search", "--index", index, "--queries", qpath, "-k", K, "--nprobe", nprobe,
        "--threads", 1, "--out", ids, "--scores", scores,
    )
    return np.load(ids), np.load(scores)


def faiss_search(index, q, nprobe):
    faiss.extract_index_ivf(index).nprobe = nprobe
    d, i = index.search(q, K)
    return i, d


def assert_same_results(ids_a, scores_a, ids_b, scores_b, what, relative=1e-4):
    """Same scores within `relative` of the score scale; same ids, except among items tied
    with the k-th (within twice that)."""
    assert ids_a.shape == ids_b.shape == scores_a.shape == scores_b.shape, what
    scale = max(1.0, float(np.abs(scores_a[ids_a >= 0]).max(initial=0.0)))
    tol = relative * scale
    for row in range(ids_a.shape[0]):
        found = ids_a[row] >= 0
        assert np.array_equal(found, ids_b[row] >= 0), f"{what}: query {row} result counts"
        # Missing results: faiss reports ±FLT_MAX, poeem ±inf; only found ones are compared.
        np.testing.assert_allclose(
            scores_a[row][found], scores_b[row][found], rtol=relative, atol=tol,
            err_msg=f"{what}: query {row}",
        )
        last = scores_a[row][found][-1] if found.any() else 0.0
        for r in np.flatnonzero(found):
            if abs(scores_a[row, r] - last) > 2 * tol:
                assert ids_a[row, r] in ids_b[row], (
                    f"{what}: query {row}, rank {r}: id {ids_a[row, r]} "
                    f"(score {scores_a[row, r]}) missing from {ids_b[row]}"
                )


# (dim, M, n_bits, metric, opq): every M divides dim or not, every n_bits, every metric,
# with and without OPQ.
POEEM_GRID = [
    (16, 4, 8, "ip", False),
    (16, 8, 4, "l2", True),
    (10, 4, 6, "cosine", False),
    (10, 3, 8, "l2", False),
    (12, 4, 12, "ip", True),
    (14, 4, 4, "cosine", True),
    (16, 16, 6, "l2", False),
    (9, 2, 12, "cosine", False),
    (20, 5, 6, "ip", False),
    (18, 4, 8, "ip", True),
]


@pytest.mark.parametrize("dim,m,n_bits,metric,opq", POEEM_GRID)
def test_poeem_writes_faiss_reads(tmp_path, dim, m, n_bits, metric, opq):
    seed = dim * 1000 + m * 10 + n_bits
    n = 4500 if n_bits == 12 else 2000
    x = clustered(seed, n, dim)
    np.save(tmp_path / "x.npy", x)
    index = tmp_path / "x.poeem"
    build = [
        "build", "--vectors", tmp_path / "x.npy", "--n-lists", N_LISTS, "--n-subspaces", m,
        "--n-bits", n_bits, "--metric", metric, "--kmeans-iterations", 4, "--seed", seed,
        "--threads", 2, "--out", index,
    ]
    if opq:
        build += ["--opq", "--opq-rounds", 2]
    poeem_ok(*build)
    out = tmp_path / "x.faiss"
    poeem_ok("export-faiss", "--index", index, "--out", out)
    fi = faiss.read_index(str(out))
    assert fi.ntotal == n and fi.d == dim
    ivf = faiss.extract_index_ivf(fi)
    assert ivf.nlist == N_LISTS
    q = queries(seed, dim)
    for nprobe in (1, N_LISTS // 4, N_LISTS):
        ids_p, scores_p = poeem_search(index, q, nprobe, tmp_path)
        ids_f, scores_f = faiss_search(fi, q, nprobe)
        what = f"dim {dim} M {m} bits {n_bits} {metric} opq {opq} nprobe {nprobe}"
        # poeem scans a 4-bit index with fast-scan's 8-bit quantized tables (scores within
        # M·δ/2 of faiss's float ADC, docs/index-format.md); other widths score exactly.
        relative = 1e-2 if n_bits == 4 else 1e-4
        assert_same_results(ids_f, scores_f, ids_p, scores_p, what, relative)


def test_exported_4bit_index_becomes_faiss_fast_scan(tmp_path):
    """A 4-bit poeem index exports as an IndexIVFPQ with 4-bit codes, which faiss converts to
    its own fast-scan index; that index finds what poeem finds (both quantize their tables, so
    the top-k sets, not the scores, are compared)."""
    seed, dim, m = 77, 16, 8
    x = clustered(seed, 3000, dim)
    np.save(tmp_path / "x.npy", x)
    index, out = tmp_path / "x.poeem", tmp_path / "x.faiss"
    poeem_ok(
        "build", "--vectors", tmp_path / "x.npy", "--n-lists", N_LISTS, "--n-subspaces", m,
        "--n-bits", 4, "--metric", "l2", "--kmeans-iterations", 4, "--seed", seed,
        "--threads", 2, "--out", index,
    )
    poeem_ok("export-faiss", "--index", index, "--out", out)
    read = faiss.read_index(str(out))  # owns the index: the downcast view below does not
    ivf = faiss.downcast_index(read)
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.pq.nbits == 4
    fast = faiss.IndexIVFPQFastScan(ivf)
    assert fast.ntotal == ivf.ntotal
    q = queries(seed, dim)
    for nprobe in (1, N_LISTS // 4):
        fast.nprobe = nprobe
        _, ids_f = fast.search(q, K)
        qpath, ids = tmp_path / "q.npy", tmp_path / "ids.npy"
        np.save(qpath, q)
        poeem_ok(
            "search", "--index", index, "--queries", qpath, "-k", K, "--nprobe", nprobe,
            "--threads", 1, "--rerank-factor", 0, "--out", ids,
        )
        ids_p = np.load(ids)
        overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids_f, ids_p)])
        assert overlap >= 0.9, f"nprobe {nprobe}: top-{K} overlap {overlap:.3f}"


# (dim, M, metric, refine): padding (dim 10, M 4) puts an IndexPreTransform inside the
# IndexRefineFlat; cosine puts a normalisation around it.
REFINE_GRID = [
    (12, 4, "l2", "f32"),
    (10, 4, "ip", "f16"),
    (10, 4, "cosine", "f32"),
    (12, 6, "cosine", "f16"),
]


@pytest.mark.parametrize("dim,m,metric,refine", REFINE_GRID)
def test_refinement_data_export_as_index_refine_flat(tmp_path, dim, m, metric, refine):
    """faiss searches an exported index with refinement data as poeem re-ranks it: the same
    ids and scores (8-bit codes, so both scan the same candidates)."""
    seed = dim * 100 + m
    x = clustered(seed, 2000, dim)
    np.save(tmp_path / "x.npy", x)
    index, out = tmp_path / "x.poeem", tmp_path / "x.faiss"
    poeem_ok(
        "build", "--vectors", tmp_path / "x.npy", "--n-lists", N_LISTS, "--n-subspaces", m,
        "--n-bits", 8, "--metric", metric, "--kmeans-iterations", 4, "--seed", seed,
        "--threads", 2, "--refine", refine, "--out", index,
    )
    exported = poeem_ok("export-faiss", "--index", index, "--out", out)
    assert f"the {refine} refinement data as an IndexRefineFlat" in exported
    fi = faiss.read_index(str(out))
    inner = faiss.downcast_index(fi)
    if metric == "cosine":
        assert isinstance(inner, faiss.IndexPreTransform)
        inner = faiss.downcast_index(inner.index)
    assert isinstance(inner, faiss.IndexRefineFlat) and inner.k_factor == 8
    q = queries(seed, dim)
    qpath, ids, scores = tmp_path / "q.npy", tmp_path / "ids.npy", tmp_path / "scores.npy"
    np.save(qpath, q)
    for nprobe in (1, N_LISTS // 4):
        poeem_ok(
            "search", "--index", index, "--queries", qpath, "-k", K, "--nprobe", nprobe,
            "--threads", 1, "--rerank-factor", 8, "--out", ids, "--scores", scores,
        )
        ids_f, scores_f = faiss_search(fi, q, nprobe)
        what = f"dim {dim} M {m} {metric} {refine} nprobe {nprobe}"
        assert_same_results(ids_f, scores_f, np.load(ids), np.load(scores), what)


def test_pq8_refinement_data_stay_behind(tmp_path):
    seed, dim = 5, 8
    np.save(tmp_path / "x.npy", clustered(seed, 1000, dim))
    index, out = tmp_path / "x.poeem", tmp_path / "x.faiss"
    poeem_ok(
        "build", "--vectors", tmp_path / "x.npy", "--n-lists", N_LISTS, "--n-subspaces", 4,
        "--n-bits", 4, "--metric", "l2", "--kmeans-iterations", 4, "--seed", seed,
        "--refine", "pq8", "--out", index,
    )
    exported = poeem_ok("export-faiss", "--index", index, "--out", out)
    assert "pq8 refinement data are not in the faiss file" in exported
    read = faiss.read_index(str(out))
    assert isinstance(faiss.downcast_index(read), faiss.IndexIVFPQ)


@pytest.mark.parametrize("factory,metric", [
    ("IVF16,PQ8,RFlat", faiss.METRIC_L2),
    ("OPQ4,IVF16,PQ4x4,RFlat", faiss.METRIC_INNER_PRODUCT),
])
def test_faiss_refine_flat_imports_with_its_vectors(tmp_path, factory, metric):
    """An IndexRefineFlat imports as its IVF-PQ index with its vectors as f32 refinement data:
    poeem re-ranking k·k_factor candidates finds what faiss finds (exactly where both scan the
    same candidates, 8-bit codes; mostly with 4-bit codes, whose candidates poeem picks with
    quantized tables)."""
    seed, dim, k_factor = 31, 16, 4
    x = clustered(seed, 3000, dim)
    fi = faiss.index_factory(dim, factory, metric)
    fast_training(faiss.extract_index_ivf(fi))
    fi.train(x)
    fi.add(x)
    faiss.downcast_index(fi).k_factor = k_factor
    src = tmp_path / "f.faiss"
    faiss.write_index(fi, str(src))
    index = tmp_path / "f.poeem"
    out = poeem_ok("import-faiss", "--input", src, "--out", index)
    assert "IxRF" in out and f"k_factor was {k_factor}" in out, out
    assert "refine        f32" in poeem_ok("info", "--index", index)
    fi = faiss.read_index(str(src))
    q = queries(seed, dim)
    qpath, ids, scores = tmp_path / "q.npy", tmp_path / "ids.npy", tmp_path / "scores.npy"
    np.save(qpath, q)
    for nprobe in (1, N_LISTS // 4):
        ids_f, scores_f = faiss_search(fi, q, nprobe)
        poeem_ok(
            "search", "--index", index, "--queries", qpath, "-k", K, "--nprobe", nprobe,
            "--threads", 1, "--rerank-factor", k_factor, "--out", ids, "--scores", scores,
        )
        ids_p, scores_p = np.load(ids), np.load(scores)
        what = f"{factory} nprobe {nprobe}"
        if factory.endswith("x4,RFlat"):
            overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids_f, ids_p)])
            assert overlap >= 0.8, f"{what}: top-{K} overlap {overlap:.3f}"
            # Items both return were re-scored exactly by both: the same scores.
            for row in range(len(q)):
                faiss_scores = dict(zip(ids_f[row], scores_f[row]))
                for i, score in zip(ids_p[row], scores_p[row]):
                    if i in faiss_scores:
                        np.testing.assert_allclose(score, faiss_scores[i], rtol=1e-4, atol=1e-5)
        else:
            assert_same_results(ids_f, scores_f, ids_p, scores_p, what)


def fast_training(ivf):
    """Few k-means iterations and no polysemous training (which takes minutes at 12 bits)."""
    ivf = faiss.downcast_index(ivf)
    ivf.cp.niter = 5
    if isinstance(ivf, faiss.IndexIVFPQ):
        ivf.do_polysemous_training = False
        ivf.pq.cp.niter = 5


def faiss_build(seed, dim, factory, metric, by_residual=True, add_fraction=1.0):
    """A faiss index trained on clustered data; with add_fraction < 1 only the items of some
    lists are added, leaving the others empty."""
    x = clustered(seed, 4500 if factory.endswith("x12") else 3000, dim)
    fi = faiss.index_factory(dim, factory, metric)
    ivf = faiss.extract_index_ivf(fi)
    ivf.by_residual = by_residual
    fast_training(ivf)
    fi.train(x)
    ids = np.arange(len(x), dtype=np.int64) * 7 + 3
    if add_fraction < 1.0:
        _, lists = ivf.quantizer.search(_pre(fi, x), 1)
        keep = lists[:, 0] < int(ivf.nlist * add_fraction)
        x, ids = x[keep], ids[keep]
    fi.add_with_ids(x, ids)
    return fi


def _pre(fi, x):
    """The vectors as the IVF sees them (after an IndexPreTransform's chain)."""
    if isinstance(fi, faiss.IndexPreTransform):
        for i in range(fi.chain.size()):
            x = fi.chain.at(i).apply(x)
    return x


FAISS_GRID = [
    # (dim, factory, metric, by_residual, add_fraction)
    (16, "IVF16,PQ4", faiss.METRIC_L2, True, 1.0),
    (16, "IVF16,PQ8x4", faiss.METRIC_INNER_PRODUCT, True, 1.0),
    (12, "IVF16,PQ3x6", faiss.METRIC_L2, True, 0.25),
    (16, "OPQ4,IVF16,PQ4", faiss.METRIC_L2, True, 1.0),
    (16, "OPQ8,IVF16,PQ8x6", faiss.METRIC_INNER_PRODUCT, True, 0.75),
    (12, "OPQ4_12,IVF16,PQ4", faiss.METRIC_L2, True, 1.0),
    (16, "IVF16,PQ4", faiss.METRIC_L2, False, 1.0),
    (16, "IVF16,PQ8x4", faiss.METRIC_INNER_PRODUCT, False, 0.25),
    (8, "IVF16,PQ2x12", faiss.METRIC_L2, True, 1.0),
]


@pytest.mark.parametrize("dim,factory,metric,by_residual,add_fraction", FAISS_GRID)
def test_faiss_writes_poeem_imports(tmp_path, dim, factory, metric, by_residual, add_fraction):
    seed = dim + len(factory) + metric * 7 + by_residual
    fi = faiss_build(seed, dim, factory, metric, by_residual, add_fraction)
    src = tmp_path / "f.faiss"
    faiss.write_index(fi, str(src))
    fi = faiss.read_index(str(src))
    index = tmp_path / "f.poeem"
    poeem_ok("import-faiss", "--input", src, "--out", index)
    poeem_ok("verify", "--index", index)
    info = poeem_ok("info", "--index", index)
    fast_scan = by_residual and factory.endswith("x4")
    assert ("fast_scan4" in info) == fast_scan, info
    if add_fraction < 1.0:
        assert "empty 0" not in info, info
    # ...and back to faiss.
    back = tmp_path / "back.faiss"
    poeem_ok("export-faiss", "--index", index, "--out", back)
    fb = faiss.read_index(str(back))
    q = queries(seed, dim)
    for nprobe in (1, N_LISTS // 4, N_LISTS):
        what = f"{factory} metric {metric} by_residual {by_residual} nprobe {nprobe}"
        ids_f, scores_f = faiss_search(fi, q, nprobe)
        ids_p, scores_p = poeem_search(index, q, nprobe, tmp_path)
        # 4-bit codes with residuals import into poeem's fast-scan layout, whose 8-bit quantized
        # tables score within M·δ/2 of faiss's float ADC.
        relative = 1e-2 if fast_scan else 1e-4
        assert_same_results(
            ids_f, scores_f, ids_p, scores_p, "faiss vs poeem, " + what, relative
        )
        ids_b, scores_b = faiss_search(fb, q, nprobe)
        if by_residual:
            # The same centroids, codebooks, codes and rotation: faiss computes the same bits.
            np.testing.assert_array_equal(ids_b, ids_f, err_msg="round trip, " + what)
            np.testing.assert_array_equal(scores_b, scores_f, err_msg="round trip, " + what)
        else:
            # Residuals off comes back as residuals on with widened codes (same vectors).
            assert_same_results(ids_f, scores_f, ids_b, scores_b, "round trip, " + what)


def refused(tmp_path, fi, *expected):
    src = tmp_path / "r.faiss"
    faiss.write_index(fi, str(src))
    code, out, err = poeem("import-faiss", "--input", src, "--out", tmp_path / "r.poeem")
    assert code != 0, out
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "r.poeem").exists()


def test_unsupported_files_are_refused_with_their_code(tmp_path):
    x = clustered(5, 2000, 16)

    def trained(factory, metric=faiss.METRIC_L2):
        fi = faiss.index_factory(16, factory, metric)
        if factory != "PQ4x4":
            fast_training(faiss.extract_index_ivf(fi))
        fi.train(x)
        fi.add(x[:100])
        return fi

    refused(tmp_path, trained("IVF16,Flat"), '"IwFl"', "supported: IwPQ")
    refused(tmp_path, trained("IVF16,PQ4x4fs"), '"IwPf"', "fast-scan")
    refused(tmp_path, trained("PCA8,IVF16,PQ4"), '"Pcam"', "supported: LTra")
    refused(tmp_path, trained("PQ4x4"), '"IxPq"', "supported: IwPQ")
    # OPQ to a wider space than poeem's padding (12 → 16 with M = 4: poeem pads 12 to 12).
    x12 = x[:, :12].copy()
    fi = faiss.index_factory(12, "OPQ4_16,IVF16,PQ4")
    fast_training(faiss.extract_index_ivf(fi))
    faiss.downcast_VectorTransform(fi.chain.at(0)).niter = 2
    fi.train(x12)
    refused(tmp_path, fi, "pads dimension 12 only to the next multiple of M = 4")
    # A normalised inner-product IVF whose lists are probed by inner product.
    refused(tmp_path, trained("L2norm,IVF16,PQ4", faiss.METRIC_INNER_PRODUCT), "IxFI", "IxF2")
    # A linear transform that is not orthonormal.
    ivfpq = trained("IVF16,PQ4")
    lt = faiss.LinearTransform(16, 16, False)
    a = np.eye(16, dtype=np.float32) * 2.0
    faiss.copy_array_to_vector(a.ravel(), lt.A)
    lt.is_trained = True
    refused(tmp_path, faiss.IndexPreTransform(lt, ivfpq), "not orthonormal")
    # A dimension-reducing one.
    lt = faiss.LinearTransform(20, 16, False)
    faiss.copy_array_to_vector(np.eye(16, 20, dtype=np.float32).ravel(), lt.A)
    lt.is_trained = True
    refused(tmp_path, faiss.IndexPreTransform(lt, ivfpq), "reduces the dimension")


def test_faiss_is_importable():
    """CI must never skip these tests: faiss has to be there, at the checked version."""
    assert faiss.__version__ == "1.15.1", faiss.__version__
    assert POEEM.exists(), f"no poeem binary at {POEEM} (set POEEM_BIN)"


def test_a_trained_poeem_index_keeps_its_recall_through_faiss(tmp_path):
    """A Poeem model trained by `poeem train`, exported and written as a faiss file: faiss's
    search, scored like `poeem evaluate` (each user's last interaction held out, its training
    items left out), gives the recall `poeem evaluate` reports through the poeem index."""
    rng = np.random.default_rng(5)
    users, items, k = 120, 300, 10
    popularity = 1.0 / np.sqrt(1.0 + np.arange(items))
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    history = {}
    t = 0
    for u in range(users):
        taste = rng.integers(0, 6)
        weights = popularity * np.where(np.arange(items) % 6 == taste, 20.0, 1.0)
        chosen = rng.choice(items, size=rng.integers(8, 20), replace=False, p=weights / weights.sum())
        history[u] = [int(i) for i in chosen]
        for i in chosen:
            t += 1
            lines.append(f"{u}\t{i}\t{t}")
    data = tmp_path / "toy.inter"
    data.write_text("\n".join(lines) + "\n")
    model, index, fi = tmp_path / "model", tmp_path / "toy.poeem", tmp_path / "toy.faiss"
    poeem_ok(
        "train", "--interactions", data, "--n-lists", 8, "--n-subspaces", 4, "--n-bits", 6,
        "--epochs", 30, "--batch-size", 128, "--warmup-steps", 40, "--buffer-size", 300,
        "--dim", 16, "--hidden", 32, "--seed", 1, "--threads", 1, "--out", model,
    )
    poeem_ok("export", "--model", model, "--out", index)
    poeem_ok("export-faiss", "--index", index, "--out", fi)
    queries_path = tmp_path / "users.npy"
    poeem_ok("embed", "--model", model, "--side", "query", "--out", queries_path)
    user_ids = [int(line) for line in (tmp_path / "users.ids.txt").read_text().split()]
    q = np.load(queries_path)
    fi_index = faiss.read_index(str(fi))
    for nprobe in (1, 4):
        out = poeem_ok(
            "evaluate", "--model", model, "--index", index, "--nprobe", nprobe, "-k", k,
            "--threads", 1,
        )
        row = next(l for l in out.splitlines() if l.startswith(f"| index, nprobe {nprobe} "))
        expected = float(row.split("|")[2])
        extra = max(len(h) for h in history.values())
        faiss.extract_index_ivf(fi_index).nprobe = nprobe
        _, found = fi_index.search(q, k + extra)
        hits = 0
        for row_index, u in enumerate(user_ids):
            held_out, seen = history[u][-1], set(history[u][:-1])
            ranked = [int(i) for i in found[row_index] if i >= 0 and int(i) not in seen][:k]
            hits += held_out in ranked
        recall = hits / len(user_ids)
        assert abs(recall - expected) <= 1.0 / len(user_ids) + 1e-4, (nprobe, recall, expected)
