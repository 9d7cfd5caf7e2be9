"""faiss side of `cargo xtask bench-faiss search`: builds IVF{n_lists},PQ{M} and times its search.

Reads the base and query vectors written by xtask and builds the index, then prints one JSON line
(version, settings, build times). It then serves timing requests so that xtask can interleave
faiss's runs with poeem's: each line `MODE NPROBE` on stdin runs one timed search and answers a
JSON line `{"seconds": ...}`, after writing the returned ids as an int64 `.npy`
(`faiss_ids_MODE_NPROBE.npy` in the output folder; recall is computed by xtask, the same way for
both libraries). End of input ends the script.

Modes: `one` (one thread, one query per call: a Python loop calling the SWIG `search_c` on
pre-made pointers, so no per-call numpy allocation; the loop's own cost is reported as
`call_overhead_seconds`, measured on an empty flat index, and not subtracted), `batch1` (one
thread, all queries in one call), `batch2` (two threads, all queries in one call).
"""
import json
import sys
import time

import numpy as np
import faiss

(base_path, query_path, out_dir, metric_name) = sys.argv[1:5]
(n_lists, n_subspaces, k, seed, build_threads, kmeans_iterations) = map(int, sys.argv[5:11])
# 8: IVF{n},PQ{M} (8-bit codes); 4: IVF{n},PQ{M}x4fsr (4-bit fast-scan, residuals encoded).
# rerank_factor > 0 wraps the index in a re-ranking (k_factor = rerank_factor), see `refine`.
(n_bits, rerank_factor) = map(int, sys.argv[11:13]) if len(sys.argv) > 11 else (8, 0)
# opq = 1 puts faiss's OPQ rotation in front: OPQ{M},IVF{n},PQ{M}... (an IndexPreTransform).
opq = int(sys.argv[13]) if len(sys.argv) > 13 else 0
# The re-ranking data: f32 (",RFlat"), f16 (",Refine(SQfp16)") or pq8 (",Refine(PQ{M}x8)", an
# 8-bit PQ of the vectors; poeem's pq8 encodes the residual of the 4-bit reconstruction).
refine = sys.argv[14] if len(sys.argv) > 14 else "f32"

base = np.ascontiguousarray(np.load(base_path), dtype=np.float32)
queries = np.ascontiguousarray(np.load(query_path), dtype=np.float32)
n, d = base.shape
nq = queries.shape[0]
metric = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}[metric_name]

key = f"IVF{n_lists},PQ{n_subspaces}" + ("x4fsr" if n_bits == 4 else "")
if opq:
    key = f"OPQ{n_subspaces}," + key
if rerank_factor > 0:
    key += {"f32": ",RFlat", "f16": ",Refine(SQfp16)", "pq8": f",Refine(PQ{n_subspaces}x8)"}[refine]
index = faiss.index_factory(d, key, metric)
if rerank_factor > 0:
    index.k_factor = rerank_factor
    ivf = faiss.downcast_index(index.base_index)
else:
    ivf = index
if opq:
    ivf = faiss.downcast_index(ivf.index)
if n_bits == 4:
    assert isinstance(ivf, faiss.IndexIVFPQFastScan) and ivf.by_residual and ivf.pq.nbits == 4
else:
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.by_residual and ivf.pq.nbits == 8
    # Polysemous training only permutes the codes for Hamming filtering, which is off
    # (polysemous_ht = 0); poeem has no such step, so it would only add to faiss's build time.
    ivf.do_polysemous_training = False
ivf.cp.seed = seed
ivf.pq.cp.seed = seed + 1
if kmeans_iterations > 0:  # 0: faiss's defaults
    ivf.cp.niter = kmeans_iterations
    ivf.pq.cp.niter = kmeans_iterations
settings = {
    "factory": key,
    "coarse_kmeans_iterations": ivf.cp.niter,
    "coarse_max_points_per_centroid": ivf.cp.max_points_per_centroid,
    "pq_kmeans_iterations": ivf.pq.cp.niter,
    "pq_max_points_per_centroid": ivf.pq.cp.max_points_per_centroid,
}

faiss.omp_set_num_threads(build_threads)
start = time.perf_counter()
index.train(base)
train_seconds = time.perf_counter() - start
start = time.perf_counter()
index.add(base)
add_seconds = time.perf_counter() - start
index_bytes = int(faiss.serialize_index(index).size)

distances = np.empty((nq, k), dtype=np.float32)
labels = np.empty((nq, k), dtype=np.int64)
query_ptrs = [faiss.swig_ptr(queries[i]) for i in range(nq)]
distance_ptrs = [faiss.swig_ptr(distances[i]) for i in range(nq)]
label_ptrs = [faiss.swig_ptr(labels[i]) for i in range(nq)]


def one_at_a_time(target):
    search = target.search_c
    start = time.perf_counter()
    for i in range(nq):
        search(1, query_ptrs[i], k, distance_ptrs[i], label_ptrs[i])
    return time.perf_counter() - start


def batched():
    start = time.perf_counter()
    index.search_c(nq, faiss.swig_ptr(queries), k, faiss.swig_ptr(distances),
                   faiss.swig_ptr(labels))
    return time.perf_counter() - start


faiss.omp_set_num_threads(1)
empty = faiss.IndexFlat(d, metric)
call_overhead = min(one_at_a_time(empty) for _ in range(3)) / nq

print(json.dumps({
    "faiss_version": faiss.__version__,
    "settings": settings,
    "train_seconds": train_seconds,
    "add_seconds": add_seconds,
    "index_bytes": index_bytes,
    "call_overhead_seconds": call_overhead,
}), flush=True)

modes = {"one": (1, lambda: one_at_a_time(index)), "batch1": (1, batched), "batch2": (2, batched)}
for line in sys.stdin:
    mode, nprobe = line.split()
    threads, run = modes[mode]
    faiss.omp_set_num_threads(threads)
    ivf.nprobe = int(nprobe)
    labels.fill(-1)
    seconds = run()
    np.save(f"{out_dir}/faiss_ids_{mode}_{nprobe}.npy", labels)
    print(json.dumps({"seconds": seconds}), flush=True)
