use rand::Rng;
use rand::seq::SliceRandom;

/// How a Givens step chooses its d/2 disjoint coordinate pairs from the skew-symmetric gradient
/// `S`. The first-order decrease of a step is `η Σ_{(i,j)} S_ij²`, so a pair's weight is `S_ij²`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PairSelection {
    /// Shuffle the coordinates and pair neighbours: O(d).
    Random,
    /// Take pairs by descending weight when both ends are free: a ½-approximate maximum
    /// matching, O(d² log d).
    #[default]
    Greedy,
    /// The maximum-weight perfect matching (blossom algorithm), the steepest block direction:
    /// O(d³), practical up to d ≈ 512.
    Steepest,
}

impl PairSelection {
    /// All variants, for experiments.
    pub const ALL: [PairSelection; 3] = [
        PairSelection::Random,
        PairSelection::Greedy,
        PairSelection::Steepest,
    ];

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            PairSelection::Random => "random",
            PairSelection::Greedy => "greedy",
            PairSelection::Steepest => "steepest",
        }
    }
}

impl std::fmt::Display for PairSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PairSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!("unknown pair selection {s:?}: expected random, greedy or steepest")
            })
    }
}

/// Chooses ⌊d/2⌋ disjoint pairs `(i, j)`, `i < j`, of the coordinates `0..dim` from the row-major
/// skew-symmetric matrix `skew` (pair weight `S_ij²`). With odd `dim` one coordinate is left out.
/// `rng` is used by [`PairSelection::Random`] only.
///
/// # Panics
/// When `skew.len() != dim * dim`.
#[track_caller]
pub fn select_pairs(
    skew: &[f64],
    dim: usize,
    selection: PairSelection,
    rng: &mut impl Rng,
) -> Vec<(usize, usize)> {
    assert_eq!(skew.len(), dim * dim, "skew matrix must be dim × dim");
    let mut pairs = match selection {
        PairSelection::Random => {
            let mut order: Vec<usize> = (0..dim).collect();
            order.shuffle(rng);
            order.chunks_exact(2).map(|p| (p[0], p[1])).collect()
        }
        PairSelection::Greedy => greedy_pairs(skew, dim),
        PairSelection::Steepest => {
            let weight: Vec<f64> = skew.iter().map(|s| s * s).collect();
            let mate = crate::blossom::max_weight_perfect_matching(dim, &weight);
            mate.iter()
                .enumerate()
                .filter_map(|(i, m)| m.filter(|&j| i < j).map(|j| (i, j)))
                .collect()
        }
    };
    for p in &mut pairs {
        if p.0 > p.1 {
            *p = (p.1, p.0);
        }
    }
    pairs
}

fn greedy_pairs(skew: &[f64], dim: usize) -> Vec<(usize, usize)> {
    let mut candidates: Vec<(f64, usize, usize)> = (0..dim)
        .flat_map(|i| (i + 1..dim).map(move |j| (skew[i * dim + j] * skew[i * dim + j], i, j)))
        .collect();
    // Heaviest first; ties by index so the choice is deterministic.
    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut free = vec![true; dim];
    let mut pairs = Vec::with_capacity(dim / 2);
    for (_, i, j) in candidates {
        if free[i] && free[j] {
            free[i] = false;
            free[j] = false;
            pairs.push((i, j));
            if pairs.len() == dim / 2 {
                break;
            }
        }
    }
    pairs
}

/// `Σ_{(i,j) ∈ pairs} S_ij²`: the first-order decrease of a Givens step per unit learning rate.
pub fn matching_weight(skew: &[f64], dim: usize, pairs: &[(usize, usize)]) -> f64 {
    pairs
        .iter()
        .map(|&(i, j)| skew[i * dim + j] * skew[i * dim + j])
        .sum()
}
