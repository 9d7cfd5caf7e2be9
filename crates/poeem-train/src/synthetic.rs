//! The synthetic tutorial of the reference implementation: the one dataset with published
//! end-to-end numbers (see `method.md` §6).
//!
//! Queries and items are the ids `0..10_000`. A pair is drawn as follows: `item` uniform; two
//! distinct positions of its four decimal digits chosen at random, giving digits `x` (first
//! chosen) and `y`; `q0` uniform; `query = (q0 / 100) · 100 + 10x + y`. So a query's last two
//! digits name two digits of the item and its first two are noise. An item is relevant to query
//! `q` when at least two of its four digits lie in `{(q / 10) mod 10, q mod 10}`: 1,808 items
//! when those two digits differ, 523 when they are equal. Every generated pair is relevant.
//!
//! The evaluation is precision@100 over all 10,000 query ids against this rule (a random ranking
//! scores about 0.168), not over held-out pairs.

use faer::Par;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::Dataset;
use crate::metrics::top_k_inner_product;

/// The number of query ids and of item ids.
pub const TUTORIAL_VOCAB: u32 = 10_000;

/// The number of pairs of the reference tutorial.
pub const TUTORIAL_PAIRS: usize = 1_000_000;

/// `n_pairs` (query, item) pairs of the tutorial, seeded.
pub fn tutorial_pairs(n_pairs: usize, seed: u64) -> Vec<(u32, u32)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n_pairs)
        .map(|_| {
            let item = rng.random_range(0..TUTORIAL_VOCAB);
            let d = ScaledTutorial::TUTORIAL.digits(item);
            let px = rng.random_range(0..4usize);
            let py = (px + rng.random_range(1..4usize)) % 4;
            let q0 = rng.random_range(0..TUTORIAL_VOCAB);
            (q0 / 100 * 100 + 10 * d[px] + d[py], item)
        })
        .collect()
}

/// Whether `item` is relevant to `query`: at least two of the item's four digits are among the
/// query's last two digits. Ids of 10,000 or more are never relevant.
pub fn tutorial_is_relevant(query: u32, item: u32) -> bool {
    ScaledTutorial::TUTORIAL.is_relevant(query, item)
}

/// The items relevant to `query`, ascending.
pub fn tutorial_relevant(query: u32) -> Vec<u32> {
    (0..TUTORIAL_VOCAB)
        .filter(|&item| tutorial_is_relevant(query, item))
        .collect()
}

/// The tutorial as a [`Dataset`]: all 10,000 query ids and item ids (index = id), `n_pairs`
/// training pairs, no held-out pairs, id fields only.
pub fn tutorial_dataset(n_pairs: usize, seed: u64) -> Dataset {
    let n = TUTORIAL_VOCAB as usize;
    Dataset::from_pairs(n, n, tutorial_pairs(n_pairs, seed), Vec::new())
        .expect("tutorial ids are below TUTORIAL_VOCAB")
}

/// Mean precision@`k` of `rankings` (`width` items per row, row `q` ranking for query id `q`,
/// over all 10,000 queries), judged by [`tutorial_is_relevant`]. Only the first `k` items of
/// each row count; a row shorter than `k` is not rescaled.
///
/// # Panics
/// When `k` is 0 or `rankings` is not `10,000 × width`.
#[track_caller]
pub fn tutorial_precision(rankings: &[u32], width: usize, k: usize) -> f64 {
    assert!(k > 0, "k must be positive");
    assert_eq!(
        rankings.len(),
        TUTORIAL_VOCAB as usize * width,
        "one ranking per tutorial query"
    );
    if width == 0 {
        return 0.0;
    }
    let hits: usize = rankings
        .chunks_exact(width)
        .zip(0..TUTORIAL_VOCAB)
        .map(|(row, q)| {
            row.iter()
                .take(k)
                .filter(|&&item| tutorial_is_relevant(q, item))
                .count()
        })
        .sum();
    hits as f64 / (k as f64 * f64::from(TUTORIAL_VOCAB))
}

/// Precision@`k` of exact inner-product retrieval with the given embeddings (10,000 rows each,
/// index = id): the tutorial's brute-force evaluation.
///
/// # Panics
/// When `k` or `dim` is 0 or a buffer is not `10,000 × dim`.
#[track_caller]
pub fn tutorial_brute_force_precision(
    query_vectors: &[f32],
    item_vectors: &[f32],
    dim: usize,
    k: usize,
    par: Par,
) -> f64 {
    let n = TUTORIAL_VOCAB as usize * dim;
    assert_eq!(query_vectors.len(), n, "one query vector per tutorial id");
    assert_eq!(item_vectors.len(), n, "one item vector per tutorial id");
    let rankings = top_k_inner_product(query_vectors, item_vectors, dim, k, par);
    tutorial_precision(&rankings, k.min(TUTORIAL_VOCAB as usize), k)
}

/// The tutorial's generator at any size: the same clustered relevance structure in base `base`
/// instead of 10.
///
/// An item's four digits are those of its id in base `base` (`base⁴ ≥ items`); a query's type is
/// its id modulo `base²`, read as two digits `(x, y)`. An item is relevant to a query when at
/// least two of its four digits are among `{x, y}`, and a pair is drawn as in the tutorial: an
/// item uniform, two distinct positions of its digits giving `x` and `y`, the query uniform
/// among those of type `(x, y)`. `base = 10` with 10,000 items and queries is the tutorial's
/// rule. For 2,000,000 items the base is 38: about 1.5 % of the catalogue (31,000 items) is
/// relevant to a query, against 18 % in the tutorial, and a random ranking has a precision near
/// 0.016.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaledTutorial {
    /// Item ids `0..items`.
    pub items: u32,
    /// Query ids `0..queries`; a multiple of `base²`.
    pub queries: u32,
    /// The base of the digits.
    pub base: u32,
}

/// Pairs drawn from one random stream; chunks of pairs are independent streams, so generation
/// is parallel and its result does not depend on the thread count.
const PAIR_CHUNK: usize = 1 << 16;

impl ScaledTutorial {
    /// The reference tutorial's rule: 10,000 items and queries, base 10.
    pub const TUTORIAL: Self = Self {
        items: TUTORIAL_VOCAB,
        queries: TUTORIAL_VOCAB,
        base: 10,
    };

    /// `items` items in the smallest base `b ≥ 2` with `b⁴ ≥ items`, and as many queries as fit
    /// in a multiple of `b²` (at least `b²`).
    ///
    /// # Panics
    /// When `items` is 0.
    #[track_caller]
    pub fn new(items: u32) -> Self {
        assert!(items > 0, "the catalogue needs at least one item");
        let mut base = 2u32;
        while u64::from(base).pow(4) < u64::from(items) {
            base += 1;
        }
        let types = base * base;
        Self {
            items,
            queries: (items / types).max(1) * types,
            base,
        }
    }

    /// The four digits of item `id`, most significant first.
    pub fn digits(&self, id: u32) -> [u32; 4] {
        let b = self.base;
        [id / (b * b * b) % b, id / (b * b) % b, id / b % b, id % b]
    }

    /// The query type `(x, y)` of query `id`: its last two digits.
    pub fn query_type(&self, query: u32) -> (u32, u32) {
        (query / self.base % self.base, query % self.base)
    }

    /// Whether `item` is relevant to `query` (ids out of range never are).
    pub fn is_relevant(&self, query: u32, item: u32) -> bool {
        if query >= self.queries || item >= self.items {
            return false;
        }
        let (x, y) = self.query_type(query);
        self.digits(item)
            .iter()
            .filter(|&&d| d == x || d == y)
            .count()
            >= 2
    }

    /// How many items are relevant to each query type, indexed by `x · base + y`.
    pub fn relevant_counts(&self) -> Vec<u32> {
        let b = self.base as usize;
        let count_chunk = |ids: std::ops::Range<u32>| {
            let mut counts = vec![0u32; b * b];
            let mut per_digit = vec![0u8; b];
            for id in ids {
                let digits = self.digits(id);
                for &d in &digits {
                    per_digit[d as usize] += 1;
                }
                // A type (x, y) counts the item when x and y cover two of its positions, so
                // one of them is a digit of the item: only those types are visited.
                for x in 0..b {
                    let mut count = |y: usize| {
                        let hits = if x == y {
                            per_digit[x]
                        } else {
                            per_digit[x] + per_digit[y]
                        };
                        if hits >= 2 {
                            counts[x * b + y] += 1;
                        }
                    };
                    if per_digit[x] > 0 {
                        (0..b).for_each(&mut count);
                    } else {
                        let mut seen = [usize::MAX; 4];
                        for (i, &d) in digits.iter().enumerate() {
                            let d = d as usize;
                            if !seen[..i].contains(&d) {
                                seen[i] = d;
                                count(d);
                            }
                        }
                    }
                }
                for &d in &digits {
                    per_digit[d as usize] = 0;
                }
            }
            counts
        };
        let chunks: Vec<std::ops::Range<u32>> = (0..self.items)
            .step_by(PAIR_CHUNK)
            .map(|start| start..(start + PAIR_CHUNK as u32).min(self.items))
            .collect();
        chunks.into_par_iter().map(count_chunk).reduce(
            || vec![0u32; b * b],
            |mut a, c| {
                a.iter_mut().zip(c).for_each(|(a, c)| *a += c);
                a
            },
        )
    }

    /// `n_pairs` (query, item) pairs, seeded; in parallel on rayon's current pool, the same
    /// pairs whatever its size. Memory: the 8 bytes of each pair, nothing per pair besides.
    pub fn pairs(&self, n_pairs: usize, seed: u64) -> Vec<(u32, u32)> {
        let mut pairs = vec![(0u32, 0u32); n_pairs];
        let types = self.base * self.base;
        let groups = self.queries / types;
        pairs
            .par_chunks_mut(PAIR_CHUNK)
            .enumerate()
            .for_each(|(chunk, out)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(chunk as u64);
                for pair in out {
                    let item = rng.random_range(0..self.items);
                    let d = self.digits(item);
                    let px = rng.random_range(0..4usize);
                    let py = (px + rng.random_range(1..4usize)) % 4;
                    let group = rng.random_range(0..groups);
                    *pair = (group * types + d[px] * self.base + d[py], item);
                }
            });
        pairs
    }

    /// The pairs as a [`Dataset`] of ids (index = id), no held-out pairs.
    pub fn dataset(&self, n_pairs: usize, seed: u64) -> Dataset {
        Dataset::from_pairs(
            self.queries as usize,
            self.items as usize,
            self.pairs(n_pairs, seed),
            Vec::new(),
        )
        .expect("generated ids are in range")
    }
}

/// A popularity-skewed interaction set with genre tastes, small enough for tests: the shape of
/// MovieLens (a few genres per item, users who favour two genres, a long tail of rarely seen
/// items) with ids only. Trained long, it shows how an indexing layer's coarse level behaves
/// when batches over-represent popular items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenreSpec {
    /// Users (query ids `0..users`).
    pub users: usize,
    /// Items (item ids `0..items`); item `i`'s popularity is `(1 + i)^-popularity_exponent`.
    pub items: usize,
    /// Genres; each item has one or two, each user favours two.
    pub genres: usize,
    /// How much likelier a user picks an item of a favourite genre.
    pub favourite_weight: f64,
    /// Exponent of the popularity law.
    pub popularity_exponent: f64,
    /// Interactions per user, drawn uniformly from this range (capped by `items`).
    pub per_user: (usize, usize),
    /// Seed of every draw.
    pub seed: u64,
}

impl GenreSpec {
    /// 1,000 users, 1,600 items, 12 genres, favourites 20 times likelier, popularity
    /// `(1 + i)^-0.5`, 20 to 80 interactions per user.
    pub fn movielens_like(seed: u64) -> Self {
        Self {
            users: 1000,
            items: 1600,
            genres: 12,
            favourite_weight: 20.0,
            popularity_exponent: 0.5,
            per_user: (20, 80),
            seed,
        }
    }

    /// The genres of each item (one or two, ascending), and each user's interactions in the
    /// order drawn (distinct items, weighted by popularity and taste).
    pub fn draw(&self) -> (Vec<Vec<usize>>, Vec<Vec<u32>>) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let genres = self.genres.max(1);
        let item_genres: Vec<Vec<usize>> = (0..self.items)
            .map(|_| {
                let n = rng.random_range(1..=2usize).min(genres);
                let mut picked = rand::seq::index::sample(&mut rng, genres, n).into_vec();
                picked.sort_unstable();
                picked
            })
            .collect();
        let popularity: Vec<f64> = (0..self.items)
            .map(|i| (1.0 + i as f64).powf(-self.popularity_exponent))
            .collect();
        let histories = (0..self.users)
            .map(|u| {
                let favourites = [u % genres, rng.random_range(0..genres)];
                let weights: Vec<f64> = item_genres
                    .iter()
                    .zip(&popularity)
                    .map(|(g, &p)| {
                        let liked = g.iter().any(|g| favourites.contains(g));
                        p * if liked { self.favourite_weight } else { 1.0 }
                    })
                    .collect();
                let (low, high) = self.per_user;
                let count = rng.random_range(low..=high.max(low)).min(self.items);
                rand::seq::index::sample_weighted(&mut rng, self.items, |i| weights[i], count)
                    .map(|chosen| chosen.into_iter().map(|i| i as u32).collect())
                    .unwrap_or_default()
            })
            .collect();
        (item_genres, histories)
    }

    /// The interactions as a [`Dataset`] of ids, each user's last interaction held out.
    pub fn dataset(&self) -> Dataset {
        let (_, histories) = self.draw();
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (u, items) in histories.iter().enumerate() {
            if let Some((&last, rest)) = items.split_last() {
                train.extend(rest.iter().map(|&i| (u as u32, i)));
                test.push((u as u32, last));
            }
        }
        Dataset::from_pairs(self.users, self.items, train, test)
            .expect("generated ids are below users and items")
    }
}
