//! The model's hand-written backward passes against finite differences: embedding bags, the MLP,
//! the cosine normalisation, the in-batch softmax (with extra negatives, log-Q and duplicate
//! masking), and the whole two-tower model end to end; plus the loss's exact values in simple
//! cases, zero vectors, and independence of the thread count.
//!
//! Finite differences are central, on f32 computations whose objective is accumulated in f64;
//! the tolerance `|analytic − numeric| ≤ ABS + REL · max(|analytic|, |numeric|)` suits f32.
//! Where ReLUs are involved, a coordinate whose perturbation crosses a kink is skipped (the
//! estimate at step h and h/2 must agree for the point to be smooth there).

use faer::Par;
use poeem_train::data::{Dataset, EntityFeatures, Field};
use poeem_train::loss::{
    LossReduction, LossScratch, NORM_EPSILON, SoftmaxLoss, normalize_rows, normalize_rows_backward,
};
use poeem_train::model::{EmbeddingTable, Fields, Mlp, MlpCache, SparseGrad, Tower, TowerCache};
use poeem_train::{
    IndexingLayerConfig, LayerUpdateItems, Model, ModelConfig, Phase, TowerConfig, WarmStartItems,
};
use proptest::prelude::{ProptestConfig, any, prop_assert, proptest};
use proptest::test_runner::{RngSeed, TestCaseError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ABS: f64 = 2e-3;
const REL: f64 = 2e-2;

fn prop_config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Central difference of `f` at `h`.
fn central(f: &mut dyn FnMut(f32) -> f64, h: f32) -> f64 {
    (f(h) - f(-h)) / (2.0 * f64::from(h))
}

fn close(analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= ABS + REL * analytic.abs().max(numeric.abs())
}

/// Checks `analytic` against central differences of `f` (a function of the perturbation of
/// one coordinate) at steps `h`, `h/4`, `h/16`: one must agree (near a point where the tower's
/// output is tiny the curvature is large and only a small step is accurate). With `kinks`, a
/// coordinate where no step agrees and the estimates at the smallest step and its half differ
/// is taken to sit on a ReLU kink and skipped (returns Ok(false)).
fn check(
    what: &str,
    analytic: f32,
    f: &mut dyn FnMut(f32) -> f64,
    h: f32,
    kinks: bool,
) -> Result<bool, TestCaseError> {
    let a = f64::from(analytic);
    let mut step = h;
    let mut numeric = Vec::new();
    for _ in 0..3 {
        let n = central(f, step);
        if close(a, n) {
            return Ok(true);
        }
        numeric.push(n);
        step /= 4.0;
    }
    let smallest = numeric[numeric.len() - 1];
    if kinks && !close(smallest, central(f, step * 2.0)) {
        return Ok(false);
    }
    prop_assert!(false, "{what}: analytic {analytic}, numeric {numeric:?}");
    Ok(true)
}

/// A random field of `n_entities` bags over `n_tokens` tokens: some empty, some with repeated
/// tokens.
fn random_field(rng: &mut ChaCha8Rng, name: &str, n_entities: usize, n_tokens: usize) -> Field {
    let mut offsets = vec![0u32];
    let mut tokens = Vec::new();
    for _ in 0..n_entities {
        let len = rng.random_range(0..4usize);
        for _ in 0..len {
            tokens.push(rng.random_range(0..n_tokens as u32));
        }
        offsets.push(tokens.len() as u32);
    }
    Field {
        name: name.into(),
        n_tokens,
        offsets,
        tokens,
    }
}

/// The gradient value of table row `row`, column `col` in `sparse` (0 for untouched rows).
fn sparse_value(sparse: &SparseGrad, row: usize, col: usize) -> f32 {
    sparse
        .rows()
        .iter()
        .position(|&r| r as usize == row)
        .map_or(0.0, |s| sparse.values()[s * sparse.dim() + col])
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

proptest! {
    #![proptest_config(prop_config(64, 0x8a6))]

    /// The mean-pooled bag's table gradient, for a batch with repeated entities and tokens and
    /// empty bags, including rows the batch never touches (gradient 0).
    #[test]
    fn embedding_bag_gradient(seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (n_entities, n_tokens) = (rng.random_range(1..8), rng.random_range(1..10));
        let dim = rng.random_range(1..6);
        let (stride, col) = (dim + 3, 2);
        let field = random_field(&mut rng, "f", n_entities, n_tokens);
        let entities: Vec<u32> =
            (0..rng.random_range(1..10)).map(|_| rng.random_range(0..n_entities as u32)).collect();
        let table = EmbeddingTable::from_vec(n_tokens, dim, uniform(&mut rng, n_tokens * dim, 1.0))
            .unwrap();
        let weights = uniform(&mut rng, entities.len() * stride, 1.0);

        let mut sparse = SparseGrad::new(n_tokens, dim);
        table.backward_bags(&field, &entities, &weights, stride, col, &mut sparse);
        let mut distinct = sparse.rows().to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        prop_assert!(distinct.len() == sparse.rows().len(), "rows must be distinct");

        for k in 0..n_tokens * dim {
            let mut f = |delta: f32| {
                let mut t = table.clone();
                t.as_mut_slice()[k] += delta;
                let mut out = vec![7.0f32; entities.len() * stride];
                t.forward_bags(&field, &entities, &mut out, stride, col, Par::Seq);
                out.chunks_exact(stride)
                    .zip(weights.chunks_exact(stride))
                    .map(|(o, w)| dot(&o[col..col + dim], &w[col..col + dim]))
                    .sum()
            };
            check("bag", sparse_value(&sparse, k / dim, k % dim), &mut f, 1e-2, false)?;
        }
    }

    /// The MLP's weight, bias and input gradients, with ReLU hidden layers.
    #[test]
    fn mlp_gradient(seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.random_range(1..6);
        let n_in = rng.random_range(1..6);
        let n_out = rng.random_range(1..5);
        let hidden: Vec<usize> = (0..rng.random_range(0..3)).map(|_| rng.random_range(1..6)).collect();
        let mut mlp = Mlp::new(n_in, &hidden, n_out, &mut rng);
        for layer in mlp.layers_mut() {
            let b = uniform(&mut rng, layer.n_out(), 0.5);
            layer.biases_mut().copy_from_slice(&b);
        }
        let input = uniform(&mut rng, n * n_in, 1.0);
        let weights = uniform(&mut rng, n * n_out, 1.0);

        let mut cache = MlpCache::default();
        let mut out = vec![0.0f32; n * n_out];
        mlp.forward(&input, &mut cache, &mut out, Par::Seq);
        let mut grads = mlp.new_grads();
        let mut grad_input = vec![0.0f32; n * n_in];
        mlp.backward(&input, &cache, &weights, &mut grads, &mut grad_input, Par::Seq);

        let objective = |m: &Mlp, x: &[f32]| {
            let mut cache = MlpCache::default();
            let mut out = vec![0.0f32; n * n_out];
            m.forward(x, &mut cache, &mut out, Par::Seq);
            dot(&out, &weights)
        };
        let mut checked = 0;
        let mut total = 0;
        for l in 0..mlp.layers().len() {
            for k in 0..mlp.layers()[l].weights().len() {
                let mut f = |d: f32| {
                    let mut m = mlp.clone();
                    m.layers_mut()[l].weights_mut()[k] += d;
                    objective(&m, &input)
                };
                total += 1;
                checked += usize::from(check("weight", grads.weights(l)[k], &mut f, 1e-3, true)?);
            }
            for k in 0..mlp.layers()[l].n_out() {
                let mut f = |d: f32| {
                    let mut m = mlp.clone();
                    m.layers_mut()[l].biases_mut()[k] += d;
                    objective(&m, &input)
                };
                total += 1;
                checked += usize::from(check("bias", grads.biases(l)[k], &mut f, 1e-3, true)?);
            }
        }
        for k in 0..input.len() {
            let mut f = |d: f32| {
                let mut x = input.clone();
                x[k] += d;
                objective(&mlp, &x)
            };
            total += 1;
            checked += usize::from(check("input", grad_input[k], &mut f, 1e-3, true)?);
        }
        prop_assert!(checked * 10 >= total * 9, "too many kinks: {checked} of {total} checked");
    }

    /// Cosine scores over a temperature with the in-batch softmax, through the normalisation of
    /// both sides: extra negatives, log-Q corrections, duplicate items (masked or not), sum or
    /// mean reduction.
    #[test]
    fn cosine_softmax_gradient(seed in any::<u64>(), mask in any::<bool>(), mean in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let b = rng.random_range(1..6);
        let c = b + rng.random_range(0..4);
        let dim = rng.random_range(1..6);
        let queries = uniform(&mut rng, b * dim, 1.0);
        let items = uniform(&mut rng, c * dim, 1.0);
        // Few distinct ids so that duplicates occur.
        let ids: Vec<u32> = (0..c).map(|_| rng.random_range(0..3)).collect();
        let log_q = rng.random_bool(0.5).then(|| uniform(&mut rng, c, 2.0));
        let loss = SoftmaxLoss {
            temperature: rng.random_range(0.2..1.0),
            reduction: if mean { LossReduction::Mean } else { LossReduction::Sum },
            mask_duplicates: mask,
        };
        let objective = |q: &[f32], y: &[f32], grads: Option<(&mut [f32], &mut [f32])>| {
            let (mut qh, mut qn) = (vec![0.0; q.len()], vec![0.0; b]);
            let (mut yh, mut yn) = (vec![0.0; y.len()], vec![0.0; c]);
            normalize_rows(q, dim, &mut qh, &mut qn);
            normalize_rows(y, dim, &mut yh, &mut yn);
            let (mut gq, mut gy) = (vec![0.0; q.len()], vec![0.0; y.len()]);
            let value = loss.forward_backward(
                &qh, &yh, dim, &ids, log_q.as_deref(), &mut LossScratch::default(),
                &mut gq, &mut gy, Par::Seq,
            );
            if let Some((dq, dy)) = grads {
                normalize_rows_backward(&qh, &qn, &gq, dim, dq);
                normalize_rows_backward(&yh, &yn, &gy, dim, dy);
            }
            value.objective
        };
        let (mut gq, mut gy) = (vec![0.0f32; b * dim], vec![0.0f32; c * dim]);
        objective(&queries, &items, Some((&mut gq, &mut gy)));
        for k in 0..queries.len() {
            let mut f = |d: f32| {
                let mut q = queries.clone();
                q[k] += d;
                objective(&q, &items, None)
            };
            check("query", gq[k], &mut f, 2e-3, false)?;
        }
        for k in 0..items.len() {
            let mut f = |d: f32| {
                let mut y = items.clone();
                y[k] += d;
                objective(&queries, &y, None)
            };
            check("item", gy[k], &mut f, 2e-3, false)?;
        }
    }

    /// The whole model: both towers with several fields and MLPs, item normalisation before
    /// the (absent) layer, extra negatives and log-Q; gradients of embedding tables and MLP
    /// weights through `Model::compute_gradients`.
    #[test]
    fn model_gradient_end_to_end(seed in any::<u64>(), normalize in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (nq, ni) = (6, 7);
        let train: Vec<(u32, u32)> =
            (0..20).map(|_| (rng.random_range(0..nq as u32), rng.random_range(0..ni as u32))).collect();
        let mut dataset = Dataset::from_pairs(nq, ni, train, Vec::new()).unwrap();
        dataset.query_features.fields.push(random_field(&mut rng, "q_tags", nq, 5));
        dataset.item_features.fields.push(random_field(&mut rng, "i_tags", ni, 4));
        dataset.item_features.fields.push(random_field(&mut rng, "i_words", ni, 6));
        let dim = 4;
        let config = ModelConfig {
            dim,
            query: TowerConfig::all_fields(3, vec![5]),
            item: TowerConfig {
                fields: Fields::Named(vec!["i_words".into(), "item_id".into()]),
                ..TowerConfig::all_fields(2, vec![])
            },
            temperature: 0.5,
            normalize_item_before_layer: normalize,
            extra_negatives: 2,
            log_q_correction: true,
            reduction: LossReduction::Sum,
            mask_duplicates: false,
            warm_start_items: WarmStartItems::Catalogue,
            layer_update_items: LayerUpdateItems::Batches,
            seed,
        };
        let mut model = Model::new(config, None, &dataset).unwrap();
        let queries: Vec<u32> = (0..4).map(|_| rng.random_range(0..nq as u32)).collect();
        let items: Vec<u32> = (0..6).map(|_| rng.random_range(0..ni as u32)).collect();
        let mut scratch = model.new_scratch();
        model.compute_gradients(&queries, &items, &mut scratch, Par::Seq).unwrap();
        let grads = scratch.clone();

        let objective = |m: &mut Model| {
            let mut s = m.new_scratch();
            m.compute_gradients(&queries, &items, &mut s, Par::Seq).unwrap().loss.objective
        };
        let mut checked = 0;
        let mut total = 0;
        // Embedding tables of both towers (every entry, touched or not).
        for side in 0..2 {
            let n_tables = if side == 0 { model.query_tower().tables().len() } else { model.item_tower().tables().len() };
            for t in 0..n_tables {
                let table = if side == 0 { &model.query_tower().tables()[t] } else { &model.item_tower().tables()[t] };
                let (len, tdim) = (table.as_slice().len(), table.dim());
                let sparse = if side == 0 { grads.query_grads().table(t) } else { grads.item_grads().table(t) };
                for k in 0..len {
                    let analytic = sparse_value(sparse, k / tdim, k % tdim);
                    let mut f = |d: f32| {
                        let mut m = model.clone();
                        let tower = if side == 0 { m.query_tower_mut() } else { m.item_tower_mut() };
                        tower.tables_mut()[t].as_mut_slice()[k] += d;
                        objective(&mut m)
                    };
                    total += 1;
                    checked += usize::from(check("table", analytic, &mut f, 2e-3, true)?);
                }
            }
        }
        // MLP weights and biases of both towers.
        for side in 0..2 {
            let mlp = if side == 0 { model.query_tower().mlp() } else { model.item_tower().mlp() };
            let mlp_grads = if side == 0 { grads.query_grads().mlp() } else { grads.item_grads().mlp() };
            let (mlp, mlp_grads) = (mlp.unwrap().clone(), mlp_grads.unwrap());
            for l in 0..mlp.layers().len() {
                for k in 0..mlp.layers()[l].weights().len() {
                    let mut f = |d: f32| {
                        let mut m = model.clone();
                        let tower = if side == 0 { m.query_tower_mut() } else { m.item_tower_mut() };
                        tower.mlp_mut().unwrap().layers_mut()[l].weights_mut()[k] += d;
                        objective(&mut m)
                    };
                    total += 1;
                    checked += usize::from(check("weight", mlp_grads.weights(l)[k], &mut f, 2e-3, true)?);
                }
                for k in 0..mlp.layers()[l].n_out() {
                    let mut f = |d: f32| {
                        let mut m = model.clone();
                        let tower = if side == 0 { m.query_tower_mut() } else { m.item_tower_mut() };
                        tower.mlp_mut().unwrap().layers_mut()[l].biases_mut()[k] += d;
                        objective(&mut m)
                    };
                    total += 1;
                    checked += usize::from(check("bias", mlp_grads.biases(l)[k], &mut f, 2e-3, true)?);
                }
            }
        }
        prop_assert!(checked * 10 >= total * 9, "too many kinks: {checked} of {total} checked");
    }
}

/// A query with identical candidates: without masking every copy of the positive counts as a
/// negative (the reference), with masking only the positive's own column remains.
#[test]
fn duplicate_positives_follow_the_setting() {
    let dim = 2;
    let queries = [1.0f32, 0.0, 0.0, 1.0];
    let items = [0.6f32, 0.8, 0.6, 0.8];
    let ids = [5u32, 5];
    let run = |mask: bool| {
        let loss = SoftmaxLoss {
            temperature: 0.1,
            reduction: LossReduction::Sum,
            mask_duplicates: mask,
        };
        let (mut gq, mut gy) = ([0.0f32; 4], [0.0f32; 4]);
        let v = loss.forward_backward(
            &queries,
            &items,
            dim,
            &ids,
            None,
            &mut LossScratch::default(),
            &mut gq,
            &mut gy,
            Par::Seq,
        );
        (v, gq)
    };
    let (plain, _) = run(false);
    assert!((plain.sum - 2.0 * 2f64.ln()).abs() < 1e-6, "{plain:?}");
    let (masked, grad) = run(true);
    assert!(masked.sum.abs() < 1e-6, "{masked:?}");
    assert!(grad.iter().all(|g| g.abs() < 1e-6));
}

/// The loss of a batch against known values: one query, two candidates.
#[test]
fn softmax_loss_matches_closed_form() {
    let queries = [1.0f32, 0.0];
    let items = [1.0f32, 0.0, 0.0, 1.0];
    let loss = SoftmaxLoss {
        temperature: 0.5,
        reduction: LossReduction::Mean,
        mask_duplicates: false,
    };
    let (mut gq, mut gy) = ([0.0f32; 2], [0.0f32; 4]);
    let log_q = [0.25f32, -0.5];
    let v = loss.forward_backward(
        &queries,
        &items,
        2,
        &[0, 1],
        Some(&log_q),
        &mut LossScratch::default(),
        &mut gq,
        &mut gy,
        Par::Seq,
    );
    // Logits: 1/0.5 − 0.25 = 1.75 and 0/0.5 + 0.5 = 0.5.
    let expected = -(1.75f64 - (1.75f64.exp() + 0.5f64.exp()).ln());
    assert!((v.sum - expected).abs() < 1e-6 && (v.objective - expected).abs() < 1e-6);
}

/// Normalising a zero vector gives zero with a finite gradient `g / ε`; the loss of a batch
/// with a zero query is finite.
#[test]
fn zero_vectors_are_handled() {
    let x = [0.0f32; 3];
    let (mut out, mut norms) = ([1.0f32; 3], [0.0f32; 1]);
    normalize_rows(&x, 3, &mut out, &mut norms);
    assert_eq!(out, [0.0; 3]);
    assert_eq!(norms[0], NORM_EPSILON);
    let mut grad = [0.0f32; 3];
    normalize_rows_backward(&out, &norms, &[1.0, -2.0, 0.5], 3, &mut grad);
    assert!(grad.iter().all(|g| g.is_finite()));
    assert!((grad[1] - (-2.0 / NORM_EPSILON)).abs() <= 1e-3 * grad[1].abs());

    // A tiny but non-zero vector still normalises to (nearly) unit length.
    let tiny = [3e-4f32, -4e-4, 0.0];
    normalize_rows(&tiny, 3, &mut out, &mut norms);
    assert!((dot(&out, &out) - 1.0).abs() < 1e-5);

    let loss = SoftmaxLoss {
        temperature: 0.1,
        reduction: LossReduction::Sum,
        mask_duplicates: false,
    };
    let (mut gq, mut gy) = ([0.0f32; 3], [0.0f32; 6]);
    let v = loss.forward_backward(
        &[0.0, 0.0, 0.0],
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        3,
        &[0, 1],
        None,
        &mut LossScratch::default(),
        &mut gq,
        &mut gy,
        Par::Seq,
    );
    assert!((v.sum - 2f64.ln()).abs() < 1e-6);
    assert!(gq.iter().chain(&gy).all(|g| g.is_finite()));
}

/// With the id field only and no MLP, the tower's output is the id's embedding row: the
/// tutorial's model.
#[test]
fn id_only_tower_is_the_embedding_table() {
    let features = EntityFeatures::ids_only("id", 5);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let tower = Tower::new(&TowerConfig::id_only(), &features, 4, "tower", &mut rng).unwrap();
    let entities = [3u32, 0, 3];
    let mut out = vec![0.0f32; 12];
    tower.forward(
        &features,
        &entities,
        &mut TowerCache::default(),
        &mut out,
        Par::Seq,
    );
    for (row, &e) in out.chunks_exact(4).zip(&entities) {
        assert_eq!(row, tower.tables()[0].row(e as usize));
    }
    // Rows start near unit length (TensorFlow's embedding_column initialiser).
    let norm = dot(tower.tables()[0].row(0), tower.tables()[0].row(0)).sqrt();
    assert!((0.2..2.0).contains(&norm), "{norm}");
}

/// Gradients (and so training) do not depend on the thread count, including batches larger
/// than one parallel block and work large enough to be run in parallel.
#[test]
fn gradients_do_not_depend_on_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (nq, ni) = (600, 400);
    let train: Vec<(u32, u32)> = (0..1000)
        .map(|_| {
            (
                rng.random_range(0..nq as u32),
                rng.random_range(0..ni as u32),
            )
        })
        .collect();
    let mut dataset = Dataset::from_pairs(nq, ni, train, Vec::new()).unwrap();
    dataset
        .item_features
        .fields
        .push(random_field(&mut rng, "tags", ni, 30));
    let config = ModelConfig {
        dim: 32,
        item: TowerConfig::all_fields(16, vec![64]),
        extra_negatives: 17,
        log_q_correction: true,
        ..ModelConfig::tutorial()
    };
    let mut model = Model::new(config, None, &dataset).unwrap();
    let queries: Vec<u32> = (0..300).map(|_| rng.random_range(0..nq as u32)).collect();
    let items: Vec<u32> = (0..317).map(|_| rng.random_range(0..ni as u32)).collect();
    let mut seq = model.new_scratch();
    let mut par = model.new_scratch();
    let a = model
        .compute_gradients(&queries, &items, &mut seq, Par::Seq)
        .unwrap();
    let b = model
        .compute_gradients(&queries, &items, &mut par, Par::rayon(2))
        .unwrap();
    assert_eq!(a, b);
    let (gs, gp) = (seq.item_grads(), par.item_grads());
    for t in 0..2 {
        assert_eq!(gs.table(t).rows(), gp.table(t).rows());
        assert_eq!(gs.table(t).values(), gp.table(t).values());
    }
    assert_eq!(gs.mlp().unwrap().weights(0), gp.mlp().unwrap().weights(0));
    assert_eq!(
        seq.query_grads().table(0).values(),
        par.query_grads().table(0).values()
    );
}

/// The model's loss is the softmax loss of its own normalised embeddings, with the log-Q
/// correction `log(B·p_c + N/n_items)` from the training frequencies.
#[test]
fn model_loss_uses_its_embeddings_and_log_q() {
    let train = vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 2), (2, 3)];
    let dataset = Dataset::from_pairs(3, 5, train, Vec::new()).unwrap();
    let config = ModelConfig {
        dim: 3,
        temperature: 0.25,
        extra_negatives: 2,
        log_q_correction: true,
        ..ModelConfig::tutorial()
    };
    let mut model = Model::new(config, None, &dataset).unwrap();
    let queries = [0u32, 2, 1];
    let items = [0u32, 3, 0, 4, 1];
    let mut scratch = model.new_scratch();
    let value = model
        .compute_gradients(&queries, &items, &mut scratch, Par::Seq)
        .unwrap()
        .loss;

    let q = model.embed_queries(&queries, Par::Seq).unwrap();
    let y = model.embed_items(&items, Par::Seq).unwrap();
    let counts = [3.0f32, 1.0, 1.0, 1.0, 0.0];
    let log_q: Vec<f32> = items
        .iter()
        .map(|&i| (3.0 * counts[i as usize] / 6.0 + 2.0 / 5.0).ln())
        .collect();
    let loss = SoftmaxLoss {
        temperature: 0.25,
        reduction: LossReduction::Sum,
        mask_duplicates: false,
    };
    let (mut gq, mut gy) = (vec![0.0f32; 9], vec![0.0f32; 15]);
    let expected = loss.forward_backward(
        &q,
        &y,
        3,
        &items,
        Some(&log_q),
        &mut LossScratch::default(),
        &mut gq,
        &mut gy,
        Par::Seq,
    );
    assert!(
        (value.sum - expected.sum).abs() < 1e-4 * expected.sum.abs(),
        "{value:?} vs {expected:?}"
    );
}

/// A model whose layer leaves its warm-up after one step and needs `buffer_size` rows, on 50
/// items.
fn model_with_layer(warm_start_items: WarmStartItems, buffer_size: usize) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let train: Vec<(u32, u32)> = (0..200)
        .map(|_| (rng.random_range(0..30), rng.random_range(0..50)))
        .collect();
    let dataset = Dataset::from_pairs(30, 50, train, Vec::new()).unwrap();
    let config = ModelConfig {
        dim: 4,
        warm_start_items,
        ..ModelConfig::tutorial()
    };
    let layer = IndexingLayerConfig {
        n_lists: 2,
        n_subspaces: 2,
        n_bits: 2,
        warmup_steps: 1,
        buffer_size,
        ..IndexingLayerConfig::tutorial()
    };
    Model::new(config, Some(layer), &dataset).unwrap()
}

/// The layer sees each distinct item of a batch once: in its buffer and in its joint steps
/// (whose codes are those of the distinct rows), and every row of a repeated item gets the
/// same output.
#[test]
fn the_layer_sees_each_distinct_item_of_a_batch_once() {
    let mut model = model_with_layer(WarmStartItems::Batches, 8);
    let mut scratch = model.new_scratch();
    let queries = [0, 1, 2, 3, 4, 5];
    let step = |model: &mut Model, scratch: &mut _, items: &[u32]| {
        model
            .compute_gradients(&queries, items, scratch, Par::Seq)
            .unwrap()
    };
    step(&mut model, &mut scratch, &[0, 1, 2, 3, 4, 5]);
    assert_eq!(model.layer().unwrap().phase(), Phase::Buffering);
    step(&mut model, &mut scratch, &[7, 7, 8, 8, 8, 9]);
    assert_eq!(model.layer().unwrap().buffered_rows(), 3);
    step(&mut model, &mut scratch, &[10, 11, 11, 12, 13, 14, 15, 16]);
    assert_eq!(model.layer().unwrap().buffered_rows(), 8);
    let stats = step(&mut model, &mut scratch, &[20, 21, 20, 22, 21, 20]);
    assert!(stats.layer.unwrap().initialized);
    let (lists, codes) = model.layer().unwrap().pending_codes().unwrap();
    assert_eq!((lists.len(), codes.len()), (3, 6));
}

/// With `WarmStartItems::Catalogue`, buffering steps fill the buffer with the whole catalogue
/// while it is smaller than the room left, then with a uniform sample of distinct items,
/// whatever the batches hold.
#[test]
fn the_warm_start_buffer_samples_the_catalogue() {
    for (buffer_size, expected) in [(20, vec![20]), (120, vec![50, 100, 120])] {
        let mut model = model_with_layer(WarmStartItems::Catalogue, buffer_size);
        let mut scratch = model.new_scratch();
        let (queries, items) = ([0, 1, 2], [3, 3, 3]);
        model
            .compute_gradients(&queries, &items, &mut scratch, Par::Seq)
            .unwrap();
        for rows in expected {
            assert_eq!(model.layer().unwrap().phase(), Phase::Buffering);
            model
                .compute_gradients(&queries, &items, &mut scratch, Par::Seq)
                .unwrap();
            assert_eq!(model.layer().unwrap().buffered_rows(), rows);
        }
        let stats = model
            .compute_gradients(&queries, &items, &mut scratch, Par::Seq)
            .unwrap();
        assert!(stats.layer.unwrap().initialized);
        // The batches hold one item, too few for k-means; the catalogue's 50 fill both lists.
        let all: Vec<u32> = (0..50).collect();
        let x = model.embed_items(&all, Par::Seq).unwrap();
        let codec = model.item_codec().unwrap();
        let mut lists = vec![0u32; 50];
        codec
            .coarse()
            .unwrap()
            .assign_lists(&x, &mut lists, Par::Seq)
            .unwrap();
        assert!(lists.contains(&0) && lists.contains(&1));
    }
}
