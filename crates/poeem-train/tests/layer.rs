//! Behaviour of the Poeem indexing layer: the warm-start state machine, consistency with the
//! `poeem-pq` codec it exports, the regularizer's gradient and updates, the Givens rotation,
//! diagnostics, exact resume through serde, and typed errors.
//!
//! Every random choice is seeded (data from `ChaCha8Rng`, proptest with a fixed seed and no
//! failure files).

use faer::Par;
use poeem_pq::{
    Centroids, CoarseQuantizer, IvfPqCodec, IvfPqConfig, KMeansInit, KMeansSettings, OpqConfig,
    OpqInit, OpqObjective, PqTraining, ProductQuantizer,
};
use poeem_rotation::{PairSelection, Rotation};
use poeem_train::layer::CodeDistribution;
use poeem_train::{
    CentroidInit, CoarseObjective, IndexingLayer, IndexingLayerConfig, OptimizerConfig, Phase,
    RotationMode, TrainError,
};
use proptest::prelude::{ProptestConfig, prop_assert, proptest};
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn prop_config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n × dim` standard normal values.
fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n * dim)
        .map(|_| StandardNormal.sample(&mut r))
        .collect()
}

/// `n × dim` rows around `centers` (row-major), `spread` away from them, cycling through the
/// centres so that every centre gets the same number of rows.
fn around(centers: &[f32], dim: usize, n: usize, spread: f32, seed: u64) -> Vec<f32> {
    let k = centers.len() / dim;
    let mut r = rng(seed);
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = &centers[(i % k) * dim..(i % k + 1) * dim];
        for &v in c {
            let g: f32 = StandardNormal.sample(&mut r);
            out.push(v + spread * g);
        }
    }
    out
}

/// Gaussian rows with per-coordinate scale `decay^i`, turned by `q`: correlated across PQ
/// blocks unless the layer learns a rotation that undoes `q`.
fn anisotropic(n: usize, q: &Rotation, decay: f32, seed: u64) -> Vec<f32> {
    let dim = q.dim();
    let mut g = gaussian(n, dim, seed);
    for (i, v) in g.iter_mut().enumerate() {
        *v *= decay.powi((i % dim) as i32);
    }
    let mut out = vec![0.0; g.len()];
    q.apply(&g, &mut out, Par::Seq);
    out
}

/// A small layer: J = 4, D = 4, K = 16, 2 warm-up steps, a buffer of 128 rows.
fn small_config() -> IndexingLayerConfig {
    IndexingLayerConfig {
        n_lists: 4,
        n_subspaces: 4,
        n_bits: 4,
        warmup_steps: 2,
        buffer_size: 128,
        kmeans: KMeansSettings {
            max_iter: 8,
            ..KMeansSettings::default()
        },
        optimizer: OptimizerConfig::adagrad(0.05),
        ..IndexingLayerConfig::paper()
    }
}

/// Runs `layer` through warm-up and buffering on Gaussian batches until its next call is
/// joint; returns the number of calls made.
fn run_to_joint(layer: &mut IndexingLayer, batch: usize, seed: u64) -> u64 {
    let dim = layer.dim();
    let mut calls = 0;
    while layer.phase() != Phase::Joint {
        let x = gaussian(batch, dim, seed + calls);
        let mut out = vec![0.0; x.len()];
        layer.forward_train(&x, &mut out, Par::Seq).unwrap();
        calls += 1;
    }
    calls
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `w Σ ‖v_list + c_codes − x'‖²` in f64 with the codes held fixed, through the codec's decoder.
fn regularizer(codec: &IvfPqCodec, rotated: &[f32], lists: &[u32], codes: &[u16], w: f32) -> f64 {
    let mut z = vec![0.0f32; rotated.len()];
    codec.decode_rotated(lists, codes, &mut z).unwrap();
    let sum: f64 = z
        .iter()
        .zip(rotated)
        .map(|(&a, &b)| f64::from(a - b) * f64::from(a - b))
        .sum();
    f64::from(w) * sum
}

/// The coarse level's error `w Σ_b ‖x'_b − v_{j_b}‖²` with centroids `coarse` (`p` wide).
fn coarse_error(coarse: &[f32], p: usize, rotated: &[f32], lists: &[u32], w: f32) -> f64 {
    let sum: f64 = rotated
        .chunks_exact(p)
        .zip(lists)
        .flat_map(|(x, &j)| x.iter().zip(&coarse[j as usize * p..(j as usize + 1) * p]))
        .map(|(&x, &v)| f64::from(x - v) * f64::from(x - v))
        .sum();
    f64::from(w) * sum
}

/// A codec like `codec` with other coarse centroids and codebooks.
fn with_params(codec: &IvfPqCodec, coarse: &[f32], codebooks: &[f32]) -> IvfPqCodec {
    let p = codec.padded_dim();
    let pq = codec.pq();
    let coarse = (!coarse.is_empty())
        .then(|| CoarseQuantizer::from_centroids(Centroids::new(p, coarse.to_vec()).unwrap()));
    let pq = ProductQuantizer::from_codebooks(p, pq.n_subspaces(), pq.n_bits(), codebooks).unwrap();
    IvfPqCodec::from_parts(codec.dim(), codec.rotation().clone(), coarse, pq).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The warm-start state machine
// ---------------------------------------------------------------------------------------------

#[test]
fn phases_change_at_exactly_the_configured_steps() {
    let dim = 12;
    let config = IndexingLayerConfig {
        warmup_steps: 3,
        buffer_size: 100,
        ..small_config()
    };
    let mut layer = IndexingLayer::new(dim, config.clone()).unwrap();
    // 3 warm-up calls, 4 buffering calls of 32 rows (32, 64, 96, 100 rows kept), then joint.
    let expected = [
        (Phase::WarmUp, 0),
        (Phase::WarmUp, 0),
        (Phase::WarmUp, 0),
        (Phase::Buffering, 32),
        (Phase::Buffering, 64),
        (Phase::Buffering, 96),
        (Phase::Buffering, 100),
        (Phase::Joint, 0),
        (Phase::Joint, 0),
    ];
    let mut buffered = Vec::new();
    for (call, &(phase, rows_after)) in expected.iter().enumerate() {
        let x = gaussian(32, dim, 100 + call as u64);
        let mut out = vec![f32::NAN; x.len()];
        assert_eq!(layer.phase(), phase, "call {}", call + 1);
        let step = layer.forward_train(&x, &mut out, Par::Seq).unwrap();
        assert_eq!(step.phase, phase);
        assert_eq!(step.initialized, call == 7, "call {}", call + 1);
        assert_eq!(layer.steps(), call as u64 + 1);
        assert_eq!(layer.buffered_rows(), rows_after);
        if phase == Phase::Buffering {
            buffered.extend_from_slice(&x);
        }
        if phase == Phase::Joint {
            assert!(step.regularizer_loss > 0.0 && step.distortion > 0.0);
            assert_ne!(bits(&out), bits(&x));
        } else {
            // Identity, no regularizer, nothing to update.
            assert_eq!(bits(&out), bits(&x));
            assert_eq!(step.regularizer_loss, 0.0);
            assert!(layer.codec().is_none() && layer.pending_codes().is_none());
            layer.update(1.0, Par::Seq).unwrap();
            assert!(layer.codec().is_none());
        }
        layer.update(1.0, Par::Seq).unwrap();
        if call == 7 {
            // The init fitted exactly the first 100 buffered rows, as the codec would.
            let ivf = IvfPqConfig {
                n_lists: config.n_lists,
                n_subspaces: config.n_subspaces,
                n_bits: config.n_bits,
                pq_training: config.pq_training,
                kmeans: config.kmeans.clone(),
                seed: config.seed,
            };
            let reference =
                IvfPqCodec::train(&buffered[..100 * dim], dim, &ivf, Par::Seq, &mut |_| {})
                    .unwrap();
            let mut fresh = IndexingLayer::new(dim, config.clone()).unwrap();
            for c in 0..=7u64 {
                let x = gaussian(32, dim, 100 + c);
                let mut out = vec![0.0; x.len()];
                fresh.forward_train(&x, &mut out, Par::Seq).unwrap();
            }
            assert_eq!(fresh.codec().unwrap(), reference);
        }
    }
    assert_eq!(layer.diagnostics().rows, 64);
}

#[test]
fn no_warm_up_buffers_from_the_first_call_and_random_init_skips_the_buffer() {
    let dim = 8;
    let mut layer = IndexingLayer::new(
        dim,
        IndexingLayerConfig {
            warmup_steps: 0,
            ..small_config()
        },
    )
    .unwrap();
    assert_eq!(layer.phase(), Phase::Buffering);
    assert_eq!(run_to_joint(&mut layer, 64, 1), 2);

    let random = IndexingLayerConfig {
        warmup_steps: 2,
        centroid_init: CentroidInit::Random,
        ..small_config()
    };
    let mut layer = IndexingLayer::new(dim, random.clone()).unwrap();
    let mut out = vec![0.0; 64 * dim];
    for call in 0..3 {
        let x = gaussian(64, dim, call);
        let step = layer.forward_train(&x, &mut out, Par::Seq).unwrap();
        let expected = if call < 2 {
            Phase::WarmUp
        } else {
            Phase::Joint
        };
        assert_eq!(step.phase, expected);
        assert_eq!(step.initialized, call == 2);
        assert_eq!(layer.buffered_rows(), 0);
    }
    // The random init is a function of the seed and the first joint batch.
    let run = |seed: u64| {
        let mut l = IndexingLayer::new(
            dim,
            IndexingLayerConfig {
                seed,
                ..random.clone()
            },
        )
        .unwrap();
        for call in 0..3 {
            let x = gaussian(64, dim, call);
            l.forward_train(&x, &mut out.clone(), Par::Seq).unwrap();
        }
        l.codec().unwrap()
    };
    assert_eq!(run(0), layer.codec().unwrap());
    assert_ne!(run(1), layer.codec().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Consistency with poeem-pq
// ---------------------------------------------------------------------------------------------

/// After init, the training output is the exported codec's decode of its own encode, the
/// remembered codes are the codec's codes, and `quantize` gives the same output.
fn assert_consistent(layer: &mut IndexingLayer, x: &[f32]) {
    let codec = layer.codec().expect("initialised");
    let n = x.len() / layer.dim();
    let mut out = vec![0.0; x.len()];
    layer.forward_train(x, &mut out, Par::rayon(2)).unwrap();

    let mut lists = vec![0u32; n];
    let mut codes = vec![0u16; n * codec.pq().n_subspaces()];
    codec.encode(x, &mut lists, &mut codes, Par::Seq).unwrap();
    let mut decoded = vec![0.0; x.len()];
    codec
        .decode(&lists, &codes, &mut decoded, Par::Seq)
        .unwrap();
    assert_eq!(out, decoded);
    let (pending_lists, pending_codes) = layer.pending_codes().unwrap();
    assert_eq!(pending_lists, &lists[..]);
    assert_eq!(pending_codes, &codes[..]);

    let mut inferred = vec![0.0; x.len()];
    layer.quantize(x, &mut inferred, Par::Seq).unwrap();
    assert_eq!(bits(&inferred), bits(&out));
}

#[test]
fn training_output_is_the_codec_decode_of_its_encode() {
    let cases = [
        (12, small_config()),
        (
            12,
            IndexingLayerConfig {
                n_lists: 0,
                n_subspaces: 5, // pads 12 to 15
                ..small_config()
            },
        ),
        (
            10,
            IndexingLayerConfig {
                n_subspaces: 3, // pads 10 to 12
                rotation: RotationMode::OpqThenGivens(PairSelection::Greedy),
                ..small_config()
            },
        ),
        (
            16,
            IndexingLayerConfig {
                rotation: RotationMode::Givens(PairSelection::Steepest),
                centroid_init: CentroidInit::Random,
                ..small_config()
            },
        ),
    ];
    for (case, (dim, mut config)) in cases.into_iter().enumerate() {
        config.givens.learning_rate = 0.01;
        let mut layer = IndexingLayer::new(dim, config).unwrap();
        let calls = run_to_joint(&mut layer, 64, 10 * case as u64);
        if layer.codec().is_none() {
            // Random init happens on the first joint call.
            let x = gaussian(64, dim, 999);
            layer
                .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
                .unwrap();
        }
        for step in 0..4 {
            assert_consistent(&mut layer, &gaussian(50, dim, calls + 100 + step));
            layer.update(0.5, Par::Seq).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regularizer, gradients and updates
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(prop_config(12, 0x6AD1))]

    /// The gradient `update` applies is, with the codes held fixed, the gradient of `L_reg`
    /// for the codebooks, and for the coarse centroids that of `L_reg` (the reference's
    /// objective) or of the coarse level's own error `w Σ ‖x' − v_j‖²` (list means), as
    /// central finite differences computed through the codec's decoder show.
    #[test]
    fn regularizer_gradient_matches_finite_differences(
        seed in 0u64..1000,
        dim in 3usize..10,
        n_subspaces in 1usize..4,
        with_coarse in proptest::bool::ANY,
        list_means in proptest::bool::ANY,
        n_bits in 2u32..4,
        weight in 0.25f32..2.0,
    ) {
        let coarse_objective = if list_means {
            CoarseObjective::ListMeans
        } else {
            CoarseObjective::Reconstruction
        };
        let config = IndexingLayerConfig {
            coarse_objective,
            n_lists: if with_coarse { 3 } else { 0 },
            n_subspaces,
            n_bits,
            warmup_steps: 0,
            centroid_init: CentroidInit::Random,
            regularizer_weight: weight,
            rotation: RotationMode::Givens(PairSelection::Greedy),
            seed,
            ..small_config()
        };
        let mut layer = IndexingLayer::new(dim, config).unwrap();
        let x = gaussian(40, dim, seed);
        let step = layer.forward_train(&x, &mut vec![0.0; x.len()], Par::Seq).unwrap();
        let codec = layer.codec().unwrap();
        let grad = layer.regularizer_gradient().unwrap();
        let (lists, codes) = layer.pending_codes().unwrap();
        let (lists, codes) = (lists.to_vec(), codes.to_vec());
        let rotated = codec.rotate(&x, Par::Seq).unwrap();
        let coarse = codec.coarse().map(|c| c.centroids().as_slice().to_vec()).unwrap_or_default();
        let books = codec.pq().codebooks_flat();

        let loss = regularizer(&codec, &rotated, &lists, &codes, weight);
        prop_assert!((loss - f64::from(step.regularizer_loss)).abs() <= 1e-4 * loss.max(1.0));

        let h = 1e-2f32;
        let mut r = rng(seed ^ 77);
        let n_params = coarse.len() + books.len();
        for _ in 0..24 {
            let i = r.random_range(0..n_params);
            let value = |delta: f32| {
                let (mut c, mut b) = (coarse.clone(), books.clone());
                if i < c.len() { c[i] += delta } else { b[i - coarse.len()] += delta }
                if i < c.len() && list_means {
                    coarse_error(&c, codec.padded_dim(), &rotated, &lists, weight)
                } else {
                    regularizer(&with_params(&codec, &c, &b), &rotated, &lists, &codes, weight)
                }
            };
            let fd = (value(h) - value(-h)) / (2.0 * f64::from(h));
            let g = if i < coarse.len() { grad.coarse[i] } else { grad.codebooks[i - coarse.len()] };
            prop_assert!(
                (fd - f64::from(g)).abs() <= 2e-3 * (1.0 + fd.abs()),
                "parameter {i}: finite difference {fd}, gradient {g}"
            );
        }
    }
}

#[test]
fn updates_lower_the_regularizer_on_a_fixed_batch() {
    let dim = 12;
    for optimizer in [OptimizerConfig::adagrad(0.02), OptimizerConfig::adam(0.01)] {
        // The reference's objective: both levels descend L_reg itself.
        let config = IndexingLayerConfig {
            warmup_steps: 0,
            centroid_init: CentroidInit::Random,
            coarse_objective: CoarseObjective::Reconstruction,
            optimizer,
            ..small_config()
        };
        let mut layer = IndexingLayer::new(dim, config).unwrap();
        let x = gaussian(200, dim, 5);
        let mut out = vec![0.0; x.len()];
        let mut losses = Vec::new();
        for _ in 0..30 {
            losses.push(
                layer
                    .forward_train(&x, &mut out, Par::Seq)
                    .unwrap()
                    .regularizer_loss,
            );
            layer.update(1.0, Par::Seq).unwrap();
        }
        // Online k-means: a gradient step lowers the loss for fixed codes, re-assigning lowers
        // it further, so the loss never goes up.
        for pair in losses.windows(2) {
            assert!(
                pair[1] <= pair[0] * (1.0 + 1e-5),
                "{optimizer:?}: {losses:?}"
            );
        }
        assert!(losses[29] < 0.8 * losses[0], "{optimizer:?}: {losses:?}");
    }
}

#[test]
fn list_means_move_each_centroid_to_the_mean_of_its_rows() {
    let dim = 6;
    let config = IndexingLayerConfig {
        n_lists: 3,
        warmup_steps: 0,
        centroid_init: CentroidInit::Random,
        coarse_objective: CoarseObjective::ListMeans,
        optimizer: OptimizerConfig::adam(0.05),
        ..small_config()
    };
    let mut layer = IndexingLayer::new(dim, config).unwrap();
    let x = gaussian(90, dim, 11);
    let mut out = vec![0.0; x.len()];
    // The offset of each used centroid from the mean of the rows assigned to it.
    let offset = |layer: &IndexingLayer| {
        let (lists, _) = layer.pending_codes().unwrap();
        let codec = layer.codec().unwrap();
        let centroids = codec.coarse().unwrap().centroids().as_slice().to_vec();
        let p = codec.padded_dim();
        let mut worst = 0.0f64;
        for j in 0..3u32 {
            let rows: Vec<&[f32]> = x
                .chunks_exact(dim)
                .zip(lists)
                .filter(|&(_, &l)| l == j)
                .map(|(r, _)| r)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let squared: f64 = (0..dim)
                .map(|c| {
                    let mean =
                        rows.iter().map(|r| f64::from(r[c])).sum::<f64>() / rows.len() as f64;
                    (mean - f64::from(centroids[j as usize * p + c])).powi(2)
                })
                .sum();
            worst = worst.max(squared.sqrt());
        }
        worst
    };
    layer.forward_train(&x, &mut out, Par::Seq).unwrap();
    let first = offset(&layer);
    for _ in 0..300 {
        layer.update(1.0, Par::Seq).unwrap();
        layer.forward_train(&x, &mut out, Par::Seq).unwrap();
    }
    let last = offset(&layer);
    assert!(last < 0.05 && last < 0.1 * first, "offset {first} → {last}");
}

/// The coarse centroids and codebooks of `layer`'s codec, concatenated.
fn parameters(layer: &IndexingLayer) -> Vec<f32> {
    let codec = layer.codec().unwrap();
    let mut values = codec
        .coarse()
        .map(|c| c.centroids().as_slice().to_vec())
        .unwrap_or_default();
    values.extend(codec.pq().codebooks_flat());
    values
}

/// A plain scalar reference of the optimiser of one parameter tensor: state per value,
/// updated only for the rows a batch used (the lazy sparse update), with the rule of
/// `OptimizerConfig`.
struct ReferenceOptimizer {
    config: OptimizerConfig,
    first: Vec<f32>,
    second: Vec<f32>,
    steps: i32,
}

impl ReferenceOptimizer {
    fn new(config: OptimizerConfig, len: usize) -> Self {
        let start = match config {
            OptimizerConfig::Adagrad {
                initial_accumulator,
                ..
            } => initial_accumulator,
            _ => 0.0,
        };
        Self {
            config,
            first: vec![start; len],
            second: vec![0.0; len],
            steps: 0,
        }
    }

    /// One step on the rows `used` (of width `width`) of `params`, with the dense `grads`.
    fn step(
        &mut self,
        params: &mut [f32],
        width: usize,
        used: &[usize],
        grads: &[f32],
        lr_scale: f32,
    ) {
        self.steps += 1;
        for &row in used {
            for i in row * width..(row + 1) * width {
                let g = grads[i];
                match self.config {
                    OptimizerConfig::Adagrad { learning_rate, .. } => {
                        let lr = learning_rate * lr_scale;
                        self.first[i] += g * g;
                        params[i] -= lr * g / self.first[i].sqrt();
                    }
                    OptimizerConfig::Adam {
                        learning_rate,
                        beta1,
                        beta2,
                        epsilon,
                    } => {
                        let c1 = 1.0 - f64::from(beta1).powi(self.steps);
                        let c2 = 1.0 - f64::from(beta2).powi(self.steps);
                        let lr = (f64::from(learning_rate * lr_scale) * c2.sqrt() / c1) as f32;
                        self.first[i] = beta1 * self.first[i] + (1.0 - beta1) * g;
                        self.second[i] = beta2 * self.second[i] + (1.0 - beta2) * g * g;
                        params[i] -= lr * self.first[i] / (self.second[i].sqrt() + epsilon);
                    }
                    _ => unreachable!("no other optimiser"),
                }
            }
        }
    }
}

#[test]
fn updates_are_optimiser_steps_on_exactly_the_rows_the_batch_used() {
    // Bit for bit against a scalar reference over several steps, so the sparse gradient
    // sums, the vectorised optimiser and the in-place refresh of the quantizers all agree
    // with the plain definition.
    for (dim, n_lists, optimizer) in [
        (10, 3, OptimizerConfig::adagrad(0.05)), // pads 10 to 12
        (12, 0, OptimizerConfig::adagrad(0.2)),
        (12, 4, OptimizerConfig::adam(0.02)),
    ] {
        let config = IndexingLayerConfig {
            n_lists,
            warmup_steps: 0,
            centroid_init: CentroidInit::Random,
            optimizer,
            ..small_config()
        };
        let (m, k) = (config.n_subspaces, config.n_codewords());
        let mut layer = IndexingLayer::new(dim, config).unwrap();
        let p = layer.padded_dim();
        let mut reference = None;
        for step in 0..6u64 {
            let x = gaussian(37, dim, 70 + step);
            layer
                .forward_train(&x, &mut vec![0.0; x.len()], Par::rayon(2))
                .unwrap();
            let (mut params, mut coarse_opt, mut book_opt) =
                reference.take().unwrap_or_else(|| {
                    let params = parameters(&layer);
                    let coarse = ReferenceOptimizer::new(optimizer, n_lists * p);
                    let books = ReferenceOptimizer::new(optimizer, params.len() - n_lists * p);
                    (params, coarse, books)
                });
            assert_eq!(bits(&params), bits(&parameters(&layer)), "step {step}");
            let grad = layer.regularizer_gradient().unwrap();
            let (lists, codes) = layer.pending_codes().unwrap();
            let mut used_lists: Vec<usize> = lists.iter().map(|&l| l as usize).collect();
            let mut used_codes: Vec<usize> = codes
                .chunks_exact(m)
                .flat_map(|c| c.iter().enumerate().map(|(s, &c)| s * k + usize::from(c)))
                .collect();
            for used in [&mut used_lists, &mut used_codes] {
                used.sort_unstable();
                used.dedup();
            }
            let lr_scale = 1.0 - 0.1 * step as f32;
            let (coarse, books) = params.split_at_mut(n_lists * p);
            if n_lists > 0 {
                coarse_opt.step(coarse, p, &used_lists, &grad.coarse, lr_scale);
            }
            book_opt.step(books, p / m, &used_codes, &grad.codebooks, lr_scale);
            layer.update(lr_scale, Par::rayon(2)).unwrap();
            assert_eq!(bits(&params), bits(&parameters(&layer)), "step {step}");
            reference = Some((params, coarse_opt, book_opt));
        }
    }
}

#[test]
fn the_quantizers_updated_in_place_equal_a_rebuild() {
    // `update` refreshes only the rows it changed; a layer restored from its saved state
    // rebuilds everything from the parameters. Both must hold the same codec, bit for bit
    // (norms and layouts included), and quantize alike.
    let dim = 10;
    let mut config = IndexingLayerConfig {
        n_lists: 5,
        n_subspaces: 4, // pads 10 to 12
        warmup_steps: 0,
        buffer_size: 200,
        rotation: RotationMode::Givens(PairSelection::Greedy),
        ..small_config()
    };
    config.givens.learning_rate = 0.02;
    let mut layer = IndexingLayer::new(dim, config).unwrap();
    let probe = gaussian(90, dim, 1234);
    for step in 0..25 {
        let x = gaussian(50, dim, 900 + step);
        layer
            .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
            .unwrap();
        layer.update(1.0, Par::Seq).unwrap();
        if !layer.is_initialized() {
            continue;
        }
        let rebuilt: IndexingLayer =
            serde_json::from_str(&serde_json::to_string(&layer).unwrap()).unwrap();
        assert!(
            layer.codec().unwrap() == rebuilt.codec().unwrap(),
            "step {step}"
        );
        let (mut a, mut b) = (vec![0.0; probe.len()], vec![0.0; probe.len()]);
        layer.quantize(&probe, &mut a, Par::Seq).unwrap();
        rebuilt.quantize(&probe, &mut b, Par::rayon(2)).unwrap();
        assert_eq!(bits(&a), bits(&b), "step {step}");
    }
    assert!(layer.is_initialized() && layer.rotation().is_some());
}

#[test]
fn learning_rate_scale_zero_leaves_the_centroids_alone() {
    let dim = 8;
    let mut layer = IndexingLayer::new(dim, small_config()).unwrap();
    run_to_joint(&mut layer, 64, 3);
    let x = gaussian(64, dim, 50);
    layer
        .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
        .unwrap();
    let before = layer.codec().unwrap();
    layer.update(0.0, Par::Seq).unwrap();
    assert_eq!(layer.codec().unwrap(), before);
    // The batch was consumed: a second update is a no-op.
    layer.update(1.0, Par::Seq).unwrap();
    assert_eq!(layer.codec().unwrap(), before);
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

/// Mean batch distortion over the last 20 of `steps` joint steps on anisotropic data.
fn trained_distortion(rotation: RotationMode, steps: u64) -> f32 {
    let dim = 16;
    let q = Rotation::random(dim, 7);
    let mut config = IndexingLayerConfig {
        n_lists: 0,
        n_subspaces: 4,
        warmup_steps: 0,
        buffer_size: 512,
        optimizer: OptimizerConfig::adagrad(0.02),
        rotation,
        ..small_config()
    };
    config.givens.learning_rate = 1e-2;
    let mut layer = IndexingLayer::new(dim, config).unwrap();
    let mut out = vec![0.0; 256 * dim];
    let mut tail = 0.0;
    for step in 0..steps {
        let x = anisotropic(256, &q, 0.75, step);
        let s = layer.forward_train(&x, &mut out, Par::Seq).unwrap();
        layer.update(1.0, Par::Seq).unwrap();
        if step >= steps - 20 {
            tail += s.distortion / 20.0;
        }
    }
    tail
}

#[test]
fn givens_steps_reduce_distortion_on_anisotropic_data() {
    let none = trained_distortion(RotationMode::None, 200);
    let greedy = trained_distortion(RotationMode::Givens(PairSelection::Greedy), 200);
    let steepest = trained_distortion(RotationMode::Givens(PairSelection::Steepest), 200);
    let opq = trained_distortion(RotationMode::Opq, 60);
    assert!(greedy < 0.8 * none, "greedy {greedy} vs none {none}");
    assert!(steepest < 0.8 * none, "steepest {steepest} vs none {none}");
    assert!(opq < 0.8 * none, "opq {opq} vs none {none}");
}

#[test]
fn the_rotation_stays_orthonormal_over_thousands_of_steps() {
    let dim = 16;
    let mut config = IndexingLayerConfig {
        n_lists: 2,
        warmup_steps: 0,
        centroid_init: CentroidInit::Random,
        rotation: RotationMode::Givens(PairSelection::Random),
        ..small_config()
    };
    config.givens.learning_rate = 0.05;
    let mut layer = IndexingLayer::new(dim, config).unwrap();
    let q = Rotation::random(dim, 3);
    let mut out = vec![0.0; 16 * dim];
    for step in 0..3000 {
        let x = anisotropic(16, &q, 0.8, step);
        layer.forward_train(&x, &mut out, Par::Seq).unwrap();
        layer.update(1.0, Par::Seq).unwrap();
    }
    let rotation = layer.rotation().unwrap();
    let moved = rotation
        .as_slice()
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - if i / dim == i % dim { 1.0 } else { 0.0 }).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 0.3, "the rotation barely moved: {moved}");
    let error = layer.diagnostics().orthogonality_error;
    assert!(error < 1e-4, "orthogonality error {error}");
    assert_eq!(error, rotation.orthogonality_error());
}

// ---------------------------------------------------------------------------------------------
// Warm-start variants
// ---------------------------------------------------------------------------------------------

#[test]
fn residual_and_raw_codebook_fits_both_work_and_residuals_fit_clustered_data_better() {
    let dim = 16;
    let centers = gaussian(8, dim, 40)
        .iter()
        .map(|v| 4.0 * v)
        .collect::<Vec<_>>();
    let held_out = around(&centers, dim, 400, 0.5, 41);
    let distortion = |pq_training: PqTraining| {
        let config = IndexingLayerConfig {
            n_lists: 8,
            n_bits: 3,
            warmup_steps: 0,
            buffer_size: 512,
            pq_training,
            ..small_config()
        };
        let mut layer = IndexingLayer::new(dim, config).unwrap();
        for call in 0..4 {
            let x = around(&centers, dim, 128, 0.5, call);
            layer
                .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
                .unwrap();
        }
        assert_eq!(layer.phase(), Phase::Joint);
        let step = layer
            .forward_train(&held_out, &mut vec![0.0; held_out.len()], Par::Seq)
            .unwrap();
        assert!(step.initialized);
        step.distortion
    };
    let residual = distortion(PqTraining::Residuals);
    let raw = distortion(PqTraining::RawVectors);
    assert!(residual.is_finite() && raw.is_finite() && residual > 0.0);
    assert!(residual < 0.8 * raw, "residual {residual} vs raw {raw}");
}

// ---------------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------------

#[test]
fn code_distribution_measures_distance_to_uniform() {
    let uniform = CodeDistribution::from_counts(&[5; 16]);
    assert_eq!(uniform.used, 16);
    assert!(uniform.kl_to_uniform.abs() < 1e-12 && uniform.tv_to_uniform.abs() < 1e-12);
    let mut single = [0u64; 16];
    single[3] = 40;
    let single = CodeDistribution::from_counts(&single);
    assert_eq!(single.used, 1);
    assert!((single.kl_to_uniform - 16f64.ln()).abs() < 1e-12);
    assert!((single.tv_to_uniform - 15.0 / 16.0).abs() < 1e-12);
    let empty = CodeDistribution::from_counts(&[0; 4]);
    assert_eq!(
        (empty.used, empty.kl_to_uniform, empty.tv_to_uniform),
        (0, 0.0, 0.0)
    );
}

#[test]
fn diagnostics_see_balanced_and_collapsed_codes() {
    let dim = 8;
    // Four far-apart tight clusters in equal numbers: the four lists share the rows evenly.
    let centers = gaussian(4, dim, 60)
        .iter()
        .map(|v| 10.0 * v)
        .collect::<Vec<_>>();
    let mut config = IndexingLayerConfig {
        warmup_steps: 0,
        ..small_config()
    };
    config.kmeans.init = KMeansInit::KMeansPlusPlus;
    let mut layer = IndexingLayer::new(dim, config.clone()).unwrap();
    for call in 0..6 {
        let x = around(&centers, dim, 64, 0.1, call);
        layer
            .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
            .unwrap();
        layer.update(1.0, Par::Seq).unwrap();
    }
    let d = layer.diagnostics();
    assert_eq!(d.rows, 4 * 64);
    let coarse = d.coarse.unwrap();
    assert_eq!(coarse.used, 4);
    assert!(
        coarse.kl_to_uniform < 1e-9 && coarse.tv_to_uniform < 1e-9,
        "{coarse:?}"
    );
    assert_eq!(d.pq.len(), 4);
    assert!(d.mean_distortion > 0.0 && d.mean_distortion < 0.2);
    assert_eq!(d.orthogonality_error, 0.0);
    layer.reset_diagnostics();
    let d = layer.diagnostics();
    assert_eq!(
        (d.rows, d.mean_distortion, d.coarse.unwrap().used),
        (0, 0.0, 0)
    );

    // Identical rows: every centroid is that row, ties go to code 0 at both levels.
    let mut layer = IndexingLayer::new(dim, config).unwrap();
    let x: Vec<f32> = (0..64)
        .flat_map(|_| (0..dim).map(|c| c as f32 * 0.25))
        .collect();
    for _ in 0..3 {
        layer
            .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
            .unwrap();
    }
    let d = layer.diagnostics();
    let coarse = d.coarse.unwrap();
    assert_eq!(coarse.used, 1);
    assert!((coarse.kl_to_uniform - 4f64.ln()).abs() < 1e-12);
    assert!((d.pq_kl_mean - 16f64.ln()).abs() < 1e-12 && d.pq_used_mean == 1.0);
    assert!((d.pq_tv_mean - 15.0 / 16.0).abs() < 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Exact resume
// ---------------------------------------------------------------------------------------------

/// Runs `steps` forward/update steps on seeded batches, snapshotting the layer as JSON after the
/// forward or the update of the steps in `checkpoints` (`(step, after_forward)`); each snapshot,
/// deserialised and run on the same remaining batches, must give bit-identical outputs and end
/// in the same state.
fn check_resume(dim: usize, config: IndexingLayerConfig, steps: u64, checkpoints: &[(u64, bool)]) {
    let batch = |step: u64| gaussian(32, dim, 500 + step);
    let mut layer = IndexingLayer::new(dim, config).unwrap();
    let mut outputs = Vec::new();
    let mut snapshots = Vec::new();
    let mut phases = Vec::new();
    for step in 0..steps {
        let x = batch(step);
        let mut out = vec![0.0; x.len()];
        phases.push(layer.forward_train(&x, &mut out, Par::Seq).unwrap().phase);
        outputs.push(bits(&out));
        if checkpoints.contains(&(step, true)) {
            snapshots.push((step, true, serde_json::to_string(&layer).unwrap()));
        }
        layer.update(0.8, Par::Seq).unwrap();
        if checkpoints.contains(&(step, false)) {
            snapshots.push((step, false, serde_json::to_string(&layer).unwrap()));
        }
    }
    let end = serde_json::to_string(&layer).unwrap();
    for (step, after_forward, json) in snapshots {
        let mut resumed: IndexingLayer = serde_json::from_str(&json).unwrap();
        assert_eq!(
            serde_json::to_string(&resumed).unwrap(),
            json,
            "re-serialised at {step}"
        );
        if after_forward {
            resumed.update(0.8, Par::Seq).unwrap();
        }
        for s in step + 1..steps {
            let x = batch(s);
            let mut out = vec![0.0; x.len()];
            resumed.forward_train(&x, &mut out, Par::Seq).unwrap();
            assert!(
                bits(&out) == outputs[s as usize],
                "resumed at {step}: outputs differ at step {s}"
            );
            resumed.update(0.8, Par::Seq).unwrap();
        }
        assert!(
            serde_json::to_string(&resumed).unwrap() == end,
            "resumed at {step}: end state"
        );
    }
    assert_eq!(phases.last(), Some(&Phase::Joint));
}

#[test]
fn resume_is_bit_exact_in_every_phase() {
    let base = IndexingLayerConfig {
        warmup_steps: 3,
        buffer_size: 100,
        ..small_config()
    };
    // Calls 0–2 warm-up, 3–6 buffering (the buffer is full after 6), 7 init, then joint.
    let checkpoints = [
        (1, false),
        (4, false),
        (6, false),
        (7, true),
        (7, false),
        (9, true),
        (10, false),
    ];
    for (dim, rotation) in [
        (12, RotationMode::None),
        (12, RotationMode::Givens(PairSelection::Greedy)),
        (10, RotationMode::OpqThenGivens(PairSelection::Random)),
        (12, RotationMode::Opq),
    ] {
        let mut config = IndexingLayerConfig {
            rotation,
            ..base.clone()
        };
        config.givens.learning_rate = 0.01;
        check_resume(dim, config, 13, &checkpoints);
    }
    let random = IndexingLayerConfig {
        centroid_init: CentroidInit::Random,
        rotation: RotationMode::Givens(PairSelection::Steepest),
        optimizer: OptimizerConfig::adam(0.01),
        ..base
    };
    check_resume(
        12,
        random,
        8,
        &[(1, false), (3, true), (3, false), (5, false)],
    );
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let dim = 16;
    let config = IndexingLayerConfig {
        n_lists: 8,
        warmup_steps: 1,
        buffer_size: 300,
        rotation: RotationMode::OpqThenGivens(PairSelection::Greedy),
        ..small_config()
    };
    let run = |par: Par| {
        let mut layer = IndexingLayer::new(dim, config.clone()).unwrap();
        let mut outs = Vec::new();
        for step in 0..8 {
            let x = gaussian(300, dim, step);
            let mut out = vec![0.0; x.len()];
            layer.forward_train(&x, &mut out, par).unwrap();
            layer.update(1.0, par).unwrap();
            outs.push(bits(&out));
        }
        (outs, serde_json::to_string(&layer).unwrap())
    };
    assert!(run(Par::Seq) == run(Par::rayon(2)));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_settings_are_refused() {
    let bad =
        |dim: usize, config: IndexingLayerConfig, name: &str| match IndexingLayer::new(dim, config)
        {
            Err(TrainError::InvalidConfig { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: expected InvalidConfig, got {other:?}"),
        };
    let c = small_config();
    bad(0, c.clone(), "dim");
    bad(
        8,
        IndexingLayerConfig {
            n_bits: 0,
            ..c.clone()
        },
        "n_bits",
    );
    bad(
        8,
        IndexingLayerConfig {
            n_bits: 17,
            ..c.clone()
        },
        "n_bits",
    );
    bad(
        8,
        IndexingLayerConfig {
            n_subspaces: 0,
            ..c.clone()
        },
        "n_subspaces",
    );
    bad(
        8,
        IndexingLayerConfig {
            buffer_size: 15,
            ..c.clone()
        },
        "buffer_size",
    );
    bad(
        8,
        IndexingLayerConfig {
            n_lists: 200,
            ..c.clone()
        },
        "buffer_size",
    );
    bad(
        8,
        IndexingLayerConfig {
            regularizer_weight: -1.0,
            ..c.clone()
        },
        "regularizer_weight",
    );
    bad(
        8,
        IndexingLayerConfig {
            regularizer_weight: f32::NAN,
            ..c.clone()
        },
        "regularizer_weight",
    );
    bad(
        8,
        IndexingLayerConfig {
            optimizer: OptimizerConfig::adagrad(-0.1),
            ..c.clone()
        },
        "layer optimizer learning_rate",
    );
    let mut centroids = c.clone();
    centroids.kmeans.init = KMeansInit::Centroids(vec![0.0; 64]);
    bad(8, centroids, "kmeans.init");
    bad(
        8,
        IndexingLayerConfig {
            centroid_init: CentroidInit::Random,
            rotation: RotationMode::Opq,
            ..c.clone()
        },
        "rotation",
    );
    let mut givens = IndexingLayerConfig {
        rotation: RotationMode::Givens(PairSelection::Greedy),
        ..c.clone()
    };
    givens.givens.max_angle = 0.0;
    bad(8, givens, "givens.max_angle");
    // Random init needs no buffer.
    assert!(
        IndexingLayer::new(
            8,
            IndexingLayerConfig {
                buffer_size: 0,
                centroid_init: CentroidInit::Random,
                ..c
            }
        )
        .is_ok()
    );
}

#[test]
fn bad_batches_are_errors_and_change_nothing() {
    let dim = 6;
    for warmup_steps in [5, 0] {
        let mut layer = IndexingLayer::new(
            dim,
            IndexingLayerConfig {
                warmup_steps,
                n_subspaces: 3,
                centroid_init: CentroidInit::Random,
                ..small_config()
            },
        )
        .unwrap();
        let before = serde_json::to_string(&layer).unwrap();
        let mut out = vec![0.0; 4 * dim];
        let err = layer.forward_train(&[0.0; 4 * 6 - 1], &mut out[..23], Par::Seq);
        assert!(matches!(
            err,
            Err(TrainError::DimensionMismatch {
                expected: 24,
                got: 23,
                ..
            })
        ));
        let err = layer.forward_train(&[], &mut [], Par::Seq);
        assert!(matches!(
            err,
            Err(TrainError::DimensionMismatch { got: 0, .. })
        ));
        let x = gaussian(4, dim, 1);
        let err = layer.forward_train(&x, &mut out[..18], Par::Seq);
        assert!(matches!(
            err,
            Err(TrainError::DimensionMismatch { what: "out", .. })
        ));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = x.clone();
            x[2 * dim + 3] = bad;
            match layer.forward_train(&x, &mut out, Par::Seq) {
                Err(TrainError::NonFinite { row: 2, col: 3, .. }) => {}
                other => panic!("expected NonFinite at (2, 3), got {other:?}"),
            }
            assert!(matches!(
                layer.quantize(&x, &mut out, Par::Seq),
                Err(TrainError::NonFinite { row: 2, col: 3, .. })
            ));
        }
        for scale in [f32::NAN, -1.0, f32::INFINITY] {
            assert!(matches!(
                layer.update(scale, Par::Seq),
                Err(TrainError::InvalidConfig {
                    name: "lr_scale",
                    ..
                })
            ));
        }
        assert_eq!(serde_json::to_string(&layer).unwrap(), before);
    }
}

#[test]
fn corrupt_saved_state_is_an_error() {
    let dim = 8;
    let mut layer = IndexingLayer::new(
        dim,
        IndexingLayerConfig {
            rotation: RotationMode::Givens(PairSelection::Greedy),
            ..small_config()
        },
    )
    .unwrap();
    run_to_joint(&mut layer, 64, 9);
    let x = gaussian(64, dim, 90);
    layer
        .forward_train(&x, &mut vec![0.0; x.len()], Par::Seq)
        .unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&layer).unwrap();
    let good = json.clone();
    json["params"]["codebooks"].as_array_mut().unwrap().pop();
    assert!(serde_json::from_value::<IndexingLayer>(json).is_err());
    let mut json = good.clone();
    json["params"]["rotation"][1] = serde_json::json!(0.9);
    assert!(serde_json::from_value::<IndexingLayer>(json).is_err());
    let mut json = good.clone();
    json["pending"]["codes"][0] = serde_json::json!(999);
    assert!(serde_json::from_value::<IndexingLayer>(json).is_err());
    let mut json = good.clone();
    json["config"]["n_bits"] = serde_json::json!(0);
    assert!(serde_json::from_value::<IndexingLayer>(json).is_err());
    assert!(serde_json::from_value::<IndexingLayer>(good).is_ok());
}

#[test]
fn configs_round_trip_through_serde() {
    for config in [
        IndexingLayerConfig::tutorial(),
        IndexingLayerConfig {
            rotation: RotationMode::OpqThenGivens(PairSelection::Steepest),
            pq_training: PqTraining::RawVectors,
            centroid_init: CentroidInit::Random,
            opq: OpqConfig {
                init: OpqInit::Identity,
                objective: OpqObjective::IvfResiduals,
                ..OpqConfig::default()
            },
            ..IndexingLayerConfig::paper()
        },
    ] {
        let json = serde_json::to_string(&config).unwrap();
        let back: IndexingLayerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
    // Settings saved before OPQ's starting rotation and objective were settings read as the
    // OPQ of that time trained: from the identity, refitting the whole codec each round.
    let mut old = serde_json::to_value(IndexingLayerConfig::paper()).unwrap();
    let opq = old["opq"].as_object_mut().unwrap();
    assert!(opq.remove("init").is_some() && opq.remove("objective").is_some());
    let back: IndexingLayerConfig = serde_json::from_value(old).unwrap();
    assert_eq!(
        (back.opq.init, back.opq.objective),
        (OpqInit::Identity, OpqObjective::IvfResiduals)
    );
    assert_eq!(
        (
            IndexingLayerConfig::paper().opq.init,
            IndexingLayerConfig::paper().opq.objective
        ),
        (OpqInit::Random, OpqObjective::Vectors)
    );
    let tutorial = IndexingLayerConfig::tutorial();
    assert_eq!(
        (
            tutorial.n_lists,
            tutorial.n_codewords(),
            tutorial.n_subspaces,
            tutorial.warmup_steps
        ),
        (8, 256, 8, 16_384)
    );
}
