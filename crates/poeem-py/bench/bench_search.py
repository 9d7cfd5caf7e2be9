"""Search timing side by side, one thread: faiss's Python `search`, poeem's Python `search`, and
poeem's in-process Rust search (the `poeem search` command's own timer, which excludes file I/O),
each batched and one query per call.

    python crates/poeem-py/bench/bench_search.py --vectors ../shared/data/bio/bio_train.npy

The vectors are standardised per column (as `cargo xtask bench-faiss search` does), a seeded
shuffle holds out --queries rows as queries, and both libraries build IVF{n_lists},PQ{M}x8
(residuals, L2) on the rest. Prints a markdown table: medians of --repeats runs, recall@k
against brute force, and the binding's cost against the Rust search.
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import faiss
import poeem

ROOT = pathlib.Path(__file__).resolve().parents[3]


def standardise(x):
    x = x.astype(np.float64)
    sd = x.std(axis=0)
    sd[sd == 0] = np.inf
    return ((x - x.mean(axis=0)) / sd).astype(np.float32)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rust_seconds(poeem_bin, index_path, queries_path, k, nprobe, one, repeats, out):
    """The median of `repeats` searches timed inside one `poeem search` process (its own timer
    around the search: no process start, file reading or index opening; the later runs warm)."""
    args = [poeem_bin, "search", "--index", index_path, "--queries", queries_path, "-k", str(k),
            "--nprobe", str(nprobe), "--threads", "1", "--repeats", str(repeats), "--out", out]
    if one:
        args.append("--one-at-a-time")
    err = subprocess.run(args, capture_output=True, text=True, check=True).stderr
    # µs per query, printed with two decimals (the seconds have only three).
    per_query = float(re.search(r"([0-9.]+) µs per query", err).group(1))
    return per_query * 1e-6 * int(re.search(r"searched (\d+) queries", err).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--n-lists", type=int, default=1024)
    parser.add_argument("--n-subspaces", type=int, default=16)
    parser.add_argument("--nprobe", type=int, default=8)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--single", type=int, default=1000,
                        help="queries timed one per call (the first ones)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poeem-bin", default=os.environ.get(
        "POEEM_BIN", str(ROOT / "target" / "release" / "poeem")))
    args = parser.parse_args()

    data = standardise(np.load(args.vectors))
    n, dim = data.shape
    order = np.random.default_rng(args.seed).permutation(n)
    xq, xb = data[order[:args.queries]], data[order[args.queries:]]
    m, k, nprobe = args.n_subspaces, args.k, args.nprobe
    pad = -dim % m  # faiss needs M | d: both get the same zero-padded vectors
    xb_p, xq_p = (np.pad(a, ((0, 0), (0, pad))) for a in (xb, xq))
    d = dim + pad
    print(f"data: {args.vectors} ({n} × {dim}, standardised, padded to {d}); {len(xb)} base, "
          f"{len(xq)} queries; IVF{args.n_lists},PQ{m}x8, l2, nprobe {nprobe}, k {k}, "
          f"1 thread, faiss {faiss.__version__}, poeem {poeem.__version__}", file=sys.stderr)

    faiss.omp_set_num_threads(2)
    reference = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, args.n_lists, m, 8)
    reference.do_polysemous_training = False
    reference.train(xb_p)
    reference.add(xb_p)
    reference.nprobe = nprobe
    index = poeem.build_index(xb_p, n_lists=args.n_lists, n_subspaces=m, metric="l2",
                              seed=args.seed, threads=2)
    faiss.omp_set_num_threads(1)

    truth = faiss.knn(xq_p, xb_p, k)[1] if hasattr(faiss, "knn") else None

    def recall(ids):
        if truth is None:
            return float("nan")
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth)]))

    single = xq_p[:args.single]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        index.save(tmp / "i.poeem")
        np.save(tmp / "q.npy", xq_p)
        np.save(tmp / "q1.npy", single)
        out = str(tmp / "ids.npy")
        index = poeem.Index.open(tmp / "i.poeem")
        index.search(xq_p[:10], k, nprobe=nprobe, threads=1)  # warm the pages
        faiss_batch = median_time(lambda: reference.search(xq_p, k), args.repeats)
        poeem_batch = median_time(lambda: index.search(xq_p, k, nprobe=nprobe, threads=1),
                                  args.repeats)
        rust_batch = rust_seconds(args.poeem_bin, tmp / "i.poeem", tmp / "q.npy", k, nprobe,
                                  False, args.repeats, out)
        rows_single = [single[i:i + 1] for i in range(len(single))]

        def faiss_one():
            for q in rows_single:
                reference.search(q, k)

        def poeem_one():
            for q in rows_single:
                index.search(q, k, nprobe=nprobe, threads=1)

        faiss_single = median_time(faiss_one, args.repeats)
        poeem_single = median_time(poeem_one, args.repeats)
        rust_single = rust_seconds(args.poeem_bin, tmp / "i.poeem", tmp / "q1.npy", k, nprobe,
                                   True, args.repeats, out)
        r_faiss = recall(reference.search(xq_p, k)[1])
        r_poeem = recall(index.search(xq_p, k, nprobe=nprobe, threads=1)[1])

    nq, ns = len(xq_p), len(single)
    rows.append(("faiss, Python", r_faiss, faiss_batch / nq, faiss_single / ns))
    rows.append(("poeem, Python", r_poeem, poeem_batch / nq, poeem_single / ns))
    rows.append(("poeem, Rust in-process", r_poeem, rust_batch / nq, rust_single / ns))
    print(f"| search (1 thread) | recall@{k} | batched µs/query | QPS batched "
          f"| one per call µs/query |")
    print("|---|---|---|---|---|")
    for name, r, b, s in rows:
        print(f"| {name} | {r:.4f} | {b * 1e6:.2f} | {1 / b:,.0f} | {s * 1e6:.2f} |")
    print()
    print(f"binding cost, batched: {100 * (poeem_batch / rust_batch - 1):+.1f}% against the "
          f"Rust search; one query per call: {(poeem_single - rust_single) / ns * 1e6:+.2f} µs "
          f"per call ({len(xq_p)} batched queries, {ns} single, median of {args.repeats})")


if __name__ == "__main__":
    main()
