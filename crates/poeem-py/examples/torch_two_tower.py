"""A PyTorch two-tower model on a RecBole-layout MovieLens directory, trained plain and with
poeem.torch.IndexingLayer; recall@50 at nprobe 1, 2, 4, 8 through the exported Poeem index
against a post-hoc `poeem.build_index(..., opq=True)` of the plain model, over several seeds.

    python crates/poeem-py/examples/torch_two_tower.py --data ../shared/data/ml-100k
    torchrun --nproc_per_node 2 crates/poeem-py/examples/torch_two_tower.py \\
        --data ../shared/data/ml-100k --ddp            # gloo, the same quality within noise
    # (Debian's torch 1.13 on Python 3.11: add --redirects 2 --tee 2, see docs/torch.md)

The model follows the Rust `movielens` preset: ids and features on both sides (user: id, age,
gender, occupation; item: id, release year, genres), each field embedded in 32 dimensions, one
128-wide hidden layer, 64-d outputs normalised, temperature 0.05, in-batch softmax with log-Q
correction and duplicates masked; Adam 0.001, batch 1024; leave-last-out split (each user's
last interaction held out, training items removed from the results). The layer: J = 32,
K = 256, D = 8, warm-up of half the training, a 8,192-row buffer, its parameters moved by SGD;
each step it quantizes the batch's distinct items (the codebooks learn from them) and, as the
Rust preset, gets a uniform sample of 1,024 catalogue items through `learn_coarse_from`: the
warm-start buffer fills from these samples and the coarse centroids learn their lists' means
from them, so the lists weigh every item alike, as a post-hoc index's do, instead of crowding
onto the popular items of the batches.
`--time` measures the training step at batch 1024 with and without the layer (CPU time of the
process, `time.process_time`, median of 40 steps after 20: wall time on a shared machine says
more about the neighbours than about the step).
"""

import argparse
import csv
import os
import pathlib
import tempfile
import time

import numpy as np
import torch
from torch import nn

import poeem
import poeem.torch as pt

DIM, FIELD, HIDDEN, TEMPERATURE = 64, 32, 128, 0.05
CATALOGUE = 1024  # uniform catalogue items the layer sees each step (--catalogue)
COARSE_LR, CODEBOOK_LR = 1.0, 16.0  # SGD on the layer's regularizer (see `train`)


def read_table(path):
    with open(path, newline="", encoding="latin-1") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header = [h.split(":")[0] for h in rows[0]]
    return header, rows[1:]


def vocab(values):
    table = {}
    return [table.setdefault(v, len(table)) for v in values], len(table)


def load(data_dir):
    """Interactions (user, item, timestamp) and the feature fields, as index arrays."""
    data_dir = pathlib.Path(data_dir)
    name = data_dir.name
    header, rows = read_table(data_dir / f"{name}.inter")
    u, i, t = header.index("user_id"), header.index("item_id"), header.index("timestamp")
    users, n_users = vocab([r[u] for r in rows])
    user_ids = {r[u]: users[k] for k, r in enumerate(rows)}
    items, n_items = vocab([r[i] for r in rows])
    item_ids = {r[i]: items[k] for k, r in enumerate(rows)}
    stamps = np.array([float(r[t]) for r in rows])
    # User features: age, gender, occupation.
    header, rows = read_table(data_dir / f"{name}.user")
    user_fields = np.zeros((n_users, 3), dtype=np.int64)
    sizes = []
    for c, field in enumerate(("age", "gender", "occupation")):
        col = header.index(field)
        codes, size = vocab([r[col] for r in rows if r[0] in user_ids])
        sizes.append(size)
        for r, code in zip((r for r in rows if r[0] in user_ids), codes):
            user_fields[user_ids[r[0]], c] = code
    # Item features: release year, genres (a bag, padded with an extra index).
    header, rows = read_table(data_dir / f"{name}.item")
    year, genre = header.index("release_year"), header.index("class")
    known = [r for r in rows if r[0] in item_ids]
    years, n_years = vocab([r[year] for r in known])
    item_year = np.zeros(n_items, dtype=np.int64)
    genre_table = {}
    bags = [[genre_table.setdefault(g, len(genre_table)) for g in r[genre].split()]
            for r in known]
    width = max(map(len, bags))
    item_genres = np.full((n_items, width), len(genre_table), dtype=np.int64)
    for r, y, bag in zip(known, years, bags):
        item_year[item_ids[r[0]]] = y
        item_genres[item_ids[r[0]], : len(bag)] = bag
    return dict(users=np.array(users), items=np.array(items), stamps=stamps,
                n_users=n_users, n_items=n_items, user_fields=user_fields, user_sizes=sizes,
                item_year=item_year, n_years=n_years, item_genres=item_genres,
                n_genres=len(genre_table))


def split(d):
    """Leave-last-out: each user's latest interaction (ties: the last in file order) is held
    out."""
    order = np.lexsort((np.arange(len(d["users"])), d["stamps"], d["users"]))
    last = np.zeros(len(order), dtype=bool)
    users = d["users"][order]
    last[order[np.r_[users[1:] != users[:-1], True]]] = True
    return np.nonzero(~last)[0], np.nonzero(last)[0]


class Tower(nn.Module):
    def __init__(self, sizes, bag_size=None):
        super().__init__()
        self.fields = nn.ModuleList(nn.Embedding(s, FIELD) for s in sizes)
        self.bag = nn.EmbeddingBag(bag_size + 1, FIELD, mode="mean",
                                   padding_idx=bag_size) if bag_size else None
        width = FIELD * (len(sizes) + (1 if bag_size else 0))
        self.mlp = nn.Sequential(nn.Linear(width, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, DIM))

    def forward(self, fields, bag=None):
        parts = [e(fields[:, k]) for k, e in enumerate(self.fields)]
        if self.bag is not None:
            parts.append(self.bag(bag))
        return nn.functional.normalize(self.mlp(torch.cat(parts, 1)), dim=1)


class TwoTower(nn.Module):
    def __init__(self, d, layer=None):
        super().__init__()
        self.d = d
        self.query = Tower([d["n_users"], *d["user_sizes"]])
        self.item = Tower([d["n_items"], d["n_years"]], bag_size=d["n_genres"])
        self.layer = layer
        self.user_fields = torch.from_numpy(
            np.c_[np.arange(d["n_users"]), d["user_fields"]])
        self.item_fields = torch.from_numpy(np.c_[np.arange(d["n_items"]), d["item_year"]])
        self.item_genres = torch.from_numpy(d["item_genres"])

    def queries(self, users):
        return self.query(self.user_fields[users])

    def items(self, items):
        return self.item(self.item_fields[items], self.item_genres[items])

    def forward(self, users, items, catalogue):
        """Query vectors, and the vectors of `items` through the layer, whose coarse level
        (and warm start) learns from the `catalogue` items (no gradient to the tower)."""
        q, v = self.queries(users), self.items(items)
        if self.layer is not None:
            v = self.layer(v)
            with torch.no_grad():
                self.layer.learn_coarse_from(self.items(catalogue))
        return q, v


def train(d, train_idx, seed, layer_settings, epochs, batch, rank=0, world=1, timing=None):
    torch.manual_seed(seed)
    layer = pt.IndexingLayer(DIM, 32, 8, 8, seed=seed, **layer_settings) if layer_settings \
        else None
    model = TwoTower(d, layer)
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("layer.")],
               "lr": 1e-3}]
    opt = torch.optim.Adam(groups)
    # The layer's centroids and codebooks: plain SGD on the regularizer, an online k-means
    # whose step moves a centroid or a codeword by 2·lr·(its share of the rows) towards its
    # rows' mean. The codebooks' gradient is divided by the rows they learn from (the batch's
    # distinct items); the centroids', as before, by the batch's and the catalogue sample's
    # rows (the loss is divided by the batch's rows, and the centroids' learning rate scaled
    # by batch / (batch + sample) rows each step). A codeword used by r of the batch's n
    # distinct items (n ~ 560 on ml-100k) moves 2 * CODEBOOK_LR * r / n of the way to their
    # mean: 16 keeps that under 1 while r < n / 32, and beat 4 on seed 4 and seeds 1-3
    # (docs/torch.md). Not Adam: a dense Adam's momentum keeps moving the centroids and
    # codewords a batch did not use (the Rust layer steps only the rows used).
    layer_opt = torch.optim.SGD([{"params": [layer.coarse_centroids], "lr": COARSE_LR},
                                 {"params": [layer.codebooks], "lr": CODEBOOK_LR}]) if layer \
        else None
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    users, items = torch.from_numpy(d["users"]), torch.from_numpy(d["items"])
    counts = np.bincount(d["items"][train_idx], minlength=d["n_items"])
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32))
    rng = np.random.default_rng(seed)
    step_times = []
    for _ in range(epochs):
        order = rng.permutation(train_idx)
        for start in range(0, len(order) - batch + 1, batch):
            rows = torch.from_numpy(order[start:start + batch][rank::world])
            catalogue = torch.from_numpy(rng.integers(0, d["n_items"], CATALOGUE)[rank::world])
            began = time.process_time()
            u, i = users[rows], items[rows]
            distinct, back = torch.unique(i, return_inverse=True)
            q, v = net(u, distinct, catalogue)
            v = v[back]
            logits = (q @ v.T) / TEMPERATURE - log_q[i][None, :]
            same = (i[:, None] == i[None, :]) & ~torch.eye(len(i), dtype=torch.bool)
            loss = nn.functional.cross_entropy(logits.masked_fill(same, -1e9),
                                               torch.arange(len(i)))
            if layer is not None:
                loss = loss + layer.regularizer_loss() / len(distinct)
                layer_opt.param_groups[0]["lr"] = \
                    COARSE_LR * len(distinct) / (len(distinct) + len(catalogue))
            opt.zero_grad()
            if layer_opt is not None:
                layer_opt.zero_grad()
            loss.backward()
            opt.step()
            if layer_opt is not None:
                layer_opt.step()
            step_times.append(time.process_time() - began)
            if timing is not None and len(step_times) >= timing:
                return model, step_times
    return model, step_times


class Exact:
    """Brute force by inner product: what an index of these vectors can reach at best."""

    def __init__(self, vectors):
        self.vectors = vectors

    def search(self, queries, k, nprobe=None):
        scores = queries @ self.vectors.T
        return None, np.argsort(-scores, axis=1, kind="stable")[:, :k]


def evaluate(d, model, train_idx, test_idx, index_of, k=50, nprobes=(1, 2, 4, 8)):
    """recall@50 at each of `nprobes` through `index_of(vectors)` (training items removed)."""
    with torch.no_grad():
        vectors = model.items(torch.arange(d["n_items"])).numpy()
        queries = model.queries(torch.from_numpy(d["users"][test_idx])).numpy()
    seen = {}
    for r in train_idx:
        seen.setdefault(d["users"][r], set()).add(d["items"][r])
    index = index_of(vectors)
    out = {}
    for nprobe in nprobes:
        _, found = index.search(queries, k + 200, nprobe=nprobe)
        hits = 0
        for row, r in zip(found, test_idx):
            kept = [x for x in row if x >= 0 and x not in seen.get(d["users"][r], ())][:k]
            hits += d["items"][r] in kept
        out[nprobe] = hits / len(test_idx)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--ddp", action="store_true", help="under torchrun: gloo, DDP")
    ap.add_argument("--time", action="store_true", help="time 60 steps plain / with the layer")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads and the layer's Rust threads per process")
    ap.add_argument("--rotation", default="none",
                    choices=["none", "opq", "givens-random", "givens-greedy", "givens-steepest"],
                    help="the layer's rotation (the post-hoc baseline always learns OPQ)")
    ap.add_argument("--nprobe", default="1,2,4,8",
                    help="comma-separated nprobes to evaluate (32 probes every list: the index's "
                    "exhaustive ADC)")
    ap.add_argument("--catalogue", type=int, default=CATALOGUE,
                    help="uniform catalogue items the layer's coarse level learns from each "
                    "step")
    args = ap.parse_args()
    nprobes = [int(p) for p in args.nprobe.split(",")]
    globals()["CATALOGUE"] = args.catalogue
    torch.set_num_threads(args.threads)
    rank, world = 0, 1
    if args.ddp:
        torch.distributed.init_process_group("gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    d = load(args.data)
    train_idx, test_idx = split(d)
    steps_per_epoch = len(train_idx) // args.batch
    layer_settings = dict(warmup_steps=steps_per_epoch * args.epochs // 2, buffer_size=8192,
                          regularizer_weight=1.0, rotation=args.rotation, kmeans_iterations=25,
                          warm_start_items="catalogue", threads=args.threads)
    if args.time:
        for name, settings in (("plain", None), ("layer", dict(layer_settings, warmup_steps=0,
                                                                buffer_size=2048))):
            _, times = train(d, train_idx, 1, settings, 1000, args.batch, rank, world, 60)
            if rank != 0:
                continue
            print(f"{name}: median step {1e3 * np.median(times[20:]):.1f} ms CPU at batch "
                  f"{args.batch} ({len(times) - 20} steps)")
        return
    results = {"poeem": [], "post-hoc OPQ": [], "brute force, poeem model (x, unquantized)": [],
               "brute force, plain model": []}
    for seed in args.seeds:
        joint, _ = train(d, train_idx, seed, layer_settings, args.epochs, args.batch, rank,
                         world)
        plain, _ = train(d, train_idx, seed, None, args.epochs, args.batch, rank, world)
        if rank != 0:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "items.poeem")
            results["poeem"].append(evaluate(
                d, joint, train_idx, test_idx,
                lambda v: (joint.layer.export(v, np.arange(len(v)), path), poeem.Index.open(path))[1],
                nprobes=nprobes))
        results["post-hoc OPQ"].append(evaluate(
            d, plain, train_idx, test_idx,
            lambda v: poeem.build_index(v, n_lists=32, n_subspaces=8, opq=True, seed=seed),
            nprobes=nprobes))
        results["brute force, poeem model (x, unquantized)"].append(
            evaluate(d, joint, train_idx, test_idx, Exact, nprobes=nprobes))
        results["brute force, plain model"].append(
            evaluate(d, plain, train_idx, test_idx, Exact, nprobes=nprobes))
        print(f"seed {seed}: " + "  ".join(f"{name} {runs[-1]}" for name, runs in results.items()),
              flush=True)
    if rank == 0:
        print("recall@50, mean ± std over seeds", args.seeds, "(DDP, 2 processes)" if args.ddp else "")
        print("| method | " + " | ".join(f"nprobe {p}" for p in nprobes) + " |")
        print("|---" * (len(nprobes) + 1) + "|")
        for name, runs in results.items():
            cells = [f"{np.mean([r[p] for r in runs]):.4f} ± {np.std([r[p] for r in runs]):.4f}"
                     for p in nprobes]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.ddp:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
