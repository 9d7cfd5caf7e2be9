//! The training loop: learning on the synthetic tutorial, exact resume from checkpoints (with
//! and without the indexing layer, mid-epoch, in the layer's buffering phase, across thread
//! counts), refusal of corrupt checkpoints, other datasets and bad settings.

use std::path::{Path, PathBuf};

use faer::Par;
use poeem_train::checkpoint::{CHECKPOINT_FILE, checkpoint_path};
use poeem_train::layer::{CentroidInit, Phase};
use poeem_train::metrics::top_k_inner_product;
use poeem_train::synthetic::{tutorial_dataset, tutorial_is_relevant};
use poeem_train::{
    CoarseObjective, Dataset, Fields, IndexingLayerConfig, LayerUpdateItems, LrSchedule, Model,
    ModelConfig, OptimizerConfig, TowerConfig, TrainConfig, TrainError, TrainProgress, Trainer,
    WarmStartItems,
};

fn quiet() -> impl FnMut(&TrainProgress) {
    |_: &TrainProgress| {}
}

/// A small tutorial run: dimension 8, batch 64, two epochs over 3,000 pairs, sampled
/// negatives and log-Q so that every source of randomness is exercised.
fn small_config(threads: usize) -> TrainConfig {
    TrainConfig {
        model: ModelConfig {
            dim: 8,
            extra_negatives: 5,
            log_q_correction: true,
            ..ModelConfig::tutorial()
        },
        epochs: 2,
        batch_size: 64,
        schedule: LrSchedule::Linear {
            warmup_steps: 10,
            final_scale: 0.2,
        },
        threads,
        checkpoint_every_steps: 0,
        log_every_steps: 0,
        seed: 11,
        ..TrainConfig::tutorial()
    }
}

/// A layer that leaves its warm-up after 20 steps, buffers 256 rows (4 batches of 64 + 5),
/// then trains jointly.
fn small_layer() -> IndexingLayerConfig {
    IndexingLayerConfig {
        n_lists: 4,
        n_subspaces: 4,
        n_bits: 4,
        warmup_steps: 20,
        buffer_size: 256,
        seed: 5,
        ..IndexingLayerConfig::tutorial()
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Runs `config` to the end without interruption and returns the final checkpoint's bytes.
fn uninterrupted(config: TrainConfig, dataset: &Dataset, dir: &Path) -> Vec<u8> {
    let mut trainer = Trainer::new(config, dataset).unwrap();
    trainer.set_checkpoint_dir(dir).unwrap();
    let report = trainer.train(&mut quiet()).unwrap();
    assert!(report.finished());
    read(&checkpoint_path(dir))
}

/// Runs `config` stopping after each of `stops` (cumulative step counts), dropping the trainer
/// and resuming from its checkpoint each time; returns the final checkpoint's bytes.
fn interrupted(config: TrainConfig, dataset: &Dataset, dir: &Path, stops: &[u64]) -> Vec<u8> {
    let mut trainer = Trainer::new(config, dataset).unwrap();
    trainer.set_checkpoint_dir(dir).unwrap();
    for &stop in stops {
        let n = stop - trainer.step();
        let report = trainer.train_steps(n, &mut quiet()).unwrap();
        assert_eq!(report.step, stop);
        drop(trainer);
        trainer = Trainer::resume(dir, dataset).unwrap();
        assert_eq!(trainer.step(), stop);
    }
    trainer.train(&mut quiet()).unwrap();
    read(&checkpoint_path(dir))
}

/// Mean precision@100 of exact retrieval for queries `0..n_queries` of the tutorial's
/// relevance rule (a random ranking scores about 0.168).
fn tutorial_subset_precision(model: &Model, n_queries: u32) -> f64 {
    let queries: Vec<u32> = (0..n_queries).collect();
    let items: Vec<u32> = (0..model.n_items() as u32).collect();
    let q = model.embed_queries(&queries, Par::rayon(2)).unwrap();
    let y = model.embed_items(&items, Par::rayon(2)).unwrap();
    let top = top_k_inner_product(&q, &y, model.dim(), 100, Par::rayon(2));
    let hits: usize = top
        .chunks_exact(100)
        .zip(0..)
        .map(|(ranked, query)| {
            ranked
                .iter()
                .filter(|&&item| tutorial_is_relevant(query, item))
                .count()
        })
        .sum();
    hits as f64 / (100.0 * f64::from(n_queries))
}

/// The tutorial model learns the tutorial's rule. To learn it from 20,000 pairs in seconds,
/// queries are folded to their last two digits (the part the rule reads; the first two are
/// noise), so each of the 100 queries has about 200 pairs; the 10,000 items keep two each.
#[test]
fn training_learns_the_tutorial() {
    let mut dataset = tutorial_dataset(20_000, 1);
    for pair in &mut dataset.train {
        pair.0 %= 100;
    }
    let config = TrainConfig {
        model: ModelConfig {
            dim: 16,
            ..ModelConfig::tutorial()
        },
        epochs: 6,
        log_every_steps: 50,
        threads: 2,
        ..TrainConfig::tutorial()
    };
    let mut trainer = Trainer::new(config, &dataset).unwrap();
    let untrained = tutorial_subset_precision(trainer.model(), 100);
    let mut reports = Vec::new();
    let report = trainer
        .train(&mut |p: &TrainProgress| reports.push(p.clone()))
        .unwrap();
    assert!(report.finished());
    assert_eq!(report.epoch_losses.len(), 6);
    let (first, last) = (report.epoch_losses[0], report.epoch_losses[5]);
    assert!(last < 0.5 * first, "epoch losses {:?}", report.epoch_losses);
    // Progress every 50 steps plus one at the end, steps increasing to the total.
    assert_eq!(reports.len() as u64, trainer.total_steps().div_ceil(50));
    assert!(reports.windows(2).all(|w| w[0].step < w[1].step));
    assert_eq!(reports.last().unwrap().step, trainer.total_steps());
    assert!(
        reports
            .iter()
            .all(|p| p.loss.is_finite() && p.examples_per_second > 0.0 && p.layer_phase.is_none())
    );

    let precision = tutorial_subset_precision(trainer.model(), 100);
    assert!(
        untrained < 0.25 && precision > 0.45,
        "precision@100 {untrained} before training, {precision} after"
    );
}

#[test]
fn resume_is_exact_without_the_layer() {
    let dataset = tutorial_dataset(3_000, 2);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let whole = uninterrupted(small_config(2), &dataset, &a);
    // 47 steps per epoch: stop mid-epoch, at the epoch boundary, and mid-epoch again.
    let pieces = interrupted(small_config(2), &dataset, &b, &[13, 47, 70]);
    assert!(
        whole == pieces,
        "resumed run differs from the uninterrupted one"
    );

    // One thread gives the same parameters as two.
    let mut seq = Trainer::new(small_config(1), &dataset).unwrap();
    seq.set_checkpoint_dir(&c).unwrap();
    seq.train(&mut quiet()).unwrap();
    let (m2, m1) = (Model::load(&a).unwrap(), Model::load(&c).unwrap());
    assert_eq!(m1.query_tower(), m2.query_tower());
    assert_eq!(m1.item_tower(), m2.item_tower());
}

#[test]
fn resume_is_exact_with_the_layer() {
    let dataset = tutorial_dataset(3_000, 3);
    let tmp = tempfile::tempdir().unwrap();
    // Batches: the warm-up ends after 20 steps, the buffer fills at 24; step 22 stops while
    // buffering. Catalogue: step 20 fills the buffer at once, step 21 initialises. Then 30:
    // the joint phase, mid-epoch; 60: the second epoch. The last run's coarse centroids learn
    // list means from catalogue samples drawn per step.
    let mut a = PathBuf::new();
    let catalogue = LayerUpdateItems::Catalogue { rows: 100 };
    for (items, coarse, buffering_at, stops) in [
        (WarmStartItems::Batches, None, 22, [22, 30, 60]),
        (WarmStartItems::Catalogue, None, 20, [21, 30, 60]),
        (WarmStartItems::Catalogue, Some(catalogue), 20, [21, 30, 60]),
    ] {
        // Reports every 10 steps restart the layer's diagnostics counters (part of its state);
        // the reports that end each call do not, so the stops change nothing.
        let mut config = TrainConfig {
            index: Some(small_layer()),
            log_every_steps: 10,
            ..small_config(2)
        };
        config.model.warm_start_items = items;
        if let (Some(coarse), Some(layer)) = (coarse, &mut config.index) {
            config.model.layer_update_items = coarse;
            layer.coarse_objective = CoarseObjective::ListMeans;
        }
        a = tmp.path().join(format!("{items:?}-{coarse:?}-a"));
        let b = tmp.path().join(format!("{items:?}-{coarse:?}-b"));
        let whole = uninterrupted(config.clone(), &dataset, &a);
        let mut probe = Trainer::new(config.clone(), &dataset).unwrap();
        probe.train_steps(buffering_at, &mut quiet()).unwrap();
        assert_eq!(probe.model().layer().unwrap().phase(), Phase::Buffering);
        probe.train_steps(30 - buffering_at, &mut quiet()).unwrap();
        assert_eq!(probe.model().layer().unwrap().phase(), Phase::Joint);

        let pieces = interrupted(config, &dataset, &b, &stops);
        assert!(
            whole == pieces,
            "{items:?}: resumed run differs from the uninterrupted one"
        );
    }

    let model = Model::load(&a).unwrap();
    let codec = model.item_codec().expect("the layer has been initialised");
    assert_eq!(codec.dim(), 8);
    let items = model.embed_items(&[0, 1, 2], Par::Seq).unwrap();
    // Items are normalised before the layer, so the embeddings the codec encodes are unit.
    for row in items.chunks_exact(8) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn progress_reports_the_layer() {
    let dataset = tutorial_dataset(3_000, 4);
    let config = TrainConfig {
        index: Some(small_layer()),
        log_every_steps: 10,
        epochs: 1,
        ..small_config(1)
    };
    let mut trainer = Trainer::new(config, &dataset).unwrap();
    let mut reports = Vec::new();
    trainer
        .train(&mut |p: &TrainProgress| reports.push(p.clone()))
        .unwrap();
    assert_eq!(reports[0].layer_phase, Some(Phase::WarmUp));
    assert_eq!(reports[0].distortion, None);
    assert_eq!(reports[0].layer, None);
    let last = reports.last().unwrap();
    assert_eq!(last.layer_phase, Some(Phase::Joint));
    assert!(last.distortion.is_some_and(|d| d.is_finite() && d > 0.0));
    assert_eq!(last.step, 47);
    // Diagnostics per interval: the report at step 40 restarted the counters, so the last one
    // counts the distinct items (64 positives and 5 negatives a batch) of steps 41 to 47 only.
    let interval = |p: &TrainProgress| p.layer.clone().expect("joint reports have diagnostics");
    let (at_40, at_47) = (interval(&reports[3]), interval(last));
    assert_eq!(reports[3].step, 40);
    assert!(
        at_40.rows > 0 && at_40.rows <= 10 * (64 + 5),
        "{}",
        at_40.rows
    );
    assert!(
        at_47.rows > 0 && at_47.rows <= 7 * (64 + 5),
        "{}",
        at_47.rows
    );
    let coarse = at_47.coarse.expect("the layer has lists");
    assert_eq!((coarse.codewords, at_47.pq.len()), (4, 4));
    assert!(coarse.used >= 1 && coarse.used <= 4);
    assert!(at_47.pq.iter().all(|c| c.codewords == 16 && c.used <= 16));
    assert!((at_47.mean_distortion - f64::from(last.distortion.unwrap())).abs() < 1e-3);
}

#[test]
fn corrupt_or_missing_checkpoints_are_errors() {
    let dataset = tutorial_dataset(1_000, 5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");

    // No checkpoint at all.
    std::fs::create_dir_all(&dir).unwrap();
    let err = Trainer::resume(&dir, &dataset).unwrap_err();
    assert!(
        matches!(err, TrainError::Checkpoint { .. }) && err.to_string().contains("no checkpoint"),
        "{err}"
    );
    assert!(matches!(
        Model::load(&dir),
        Err(TrainError::Checkpoint { .. })
    ));

    let mut trainer = Trainer::new(small_config(1), &dataset).unwrap();
    trainer.set_checkpoint_dir(&dir).unwrap();
    trainer.train_steps(3, &mut quiet()).unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    let good = read(&path);
    assert!(Trainer::resume(&dir, &dataset).is_ok());

    // A flipped byte in each region: header, section table, model payload, trainer payload.
    for at in [3, 20, good.len() / 3, good.len() - 5] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let err = Trainer::resume(&dir, &dataset).unwrap_err();
        assert!(
            matches!(err, TrainError::Checkpoint { .. }),
            "byte {at}: {err}"
        );
    }
    // Truncated files.
    for len in [0, 10, 60, good.len() - 1] {
        std::fs::write(&path, &good[..len]).unwrap();
        let err = Trainer::resume(&dir, &dataset).unwrap_err();
        assert!(
            matches!(err, TrainError::Checkpoint { .. }),
            "length {len}: {err}"
        );
        assert!(Model::load(&dir).is_err());
    }
    // Another format version.
    let mut newer = good.clone();
    newer[8] = 2;
    std::fs::write(&path, &newer).unwrap();
    let err = Trainer::resume(&dir, &dataset).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");

    // A different dataset.
    std::fs::write(&path, &good).unwrap();
    let other = tutorial_dataset(1_000, 6);
    assert!(matches!(
        Trainer::resume(&dir, &other),
        Err(TrainError::DatasetMismatch { .. })
    ));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [CHECKPOINT_FILE]);
}

#[test]
fn loaded_model_embeds_like_the_trained_one() {
    let mut dataset = tutorial_dataset(2_000, 7);
    // An item feature field (the last digit), read through an MLP.
    let n = dataset.n_items();
    dataset.item_features.fields.push(poeem_train::Field {
        name: "last_digit".into(),
        n_tokens: 10,
        offsets: (0..=n as u32).collect(),
        tokens: (0..n as u32).map(|i| i % 10).collect(),
    });
    let config = TrainConfig {
        model: ModelConfig {
            dim: 8,
            item: TowerConfig::all_fields(4, vec![16]),
            ..ModelConfig::tutorial()
        },
        optimizer: OptimizerConfig::adam(0.01),
        epochs: 1,
        ..small_config(1)
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config, &dataset).unwrap();
    trainer.set_checkpoint_dir(tmp.path()).unwrap();
    trainer.train(&mut quiet()).unwrap();
    let loaded = Model::load(tmp.path()).unwrap();
    let ids: Vec<u32> = (0..50).collect();
    for par in [Par::Seq, Par::rayon(2)] {
        assert_eq!(
            loaded.embed_items(&ids, par).unwrap(),
            trainer.model().embed_items(&ids, Par::Seq).unwrap()
        );
        assert_eq!(
            loaded.embed_queries(&ids, par).unwrap(),
            trainer.model().embed_queries(&ids, Par::Seq).unwrap()
        );
    }
    assert_eq!(loaded.items().token(3), "3");
    assert!(loaded.item_codec().is_none());
    assert!(matches!(
        loaded.embed_items(&[n as u32], Par::Seq),
        Err(TrainError::OutOfRange { .. })
    ));
}

#[test]
fn bad_settings_are_refused() {
    let dataset = tutorial_dataset(500, 8);
    let refused = |f: &dyn Fn(&mut TrainConfig)| {
        let mut config = small_config(1);
        f(&mut config);
        match Trainer::new(config, &dataset) {
            Err(TrainError::InvalidConfig { .. }) => {}
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    };
    refused(&|c| c.model.dim = 0);
    refused(&|c| c.batch_size = 0);
    refused(&|c| c.epochs = 0);
    refused(&|c| c.model.temperature = 0.0);
    refused(&|c| c.model.temperature = -1.0);
    refused(&|c| c.model.temperature = f32::NAN);
    refused(&|c| c.optimizer = OptimizerConfig::adagrad(-0.1));
    refused(&|c| {
        c.schedule = LrSchedule::Linear {
            warmup_steps: 0,
            final_scale: 2.0,
        }
    });
    // Without an MLP the embedding must be dim wide.
    refused(&|c| c.model.query.embedding_dim = Some(4));
    refused(&|c| c.model.item.fields = Fields::Named(vec!["colour".into()]));
    refused(&|c| c.model.item = TowerConfig::all_fields(4, vec![0]));
    refused(&|c| c.model.item.fields = Fields::Named(vec!["item_id".into(), "item_id".into()]));
    refused(&|c| {
        c.index = Some(IndexingLayerConfig {
            n_subspaces: 0,
            ..small_layer()
        })
    });
    refused(&|c| {
        c.index = Some(IndexingLayerConfig {
            buffer_size: 3,
            centroid_init: CentroidInit::KMeans,
            ..small_layer()
        })
    });

    let empty = Dataset::from_pairs(10, 10, Vec::new(), Vec::new()).unwrap();
    assert!(matches!(
        Trainer::new(small_config(1), &empty),
        Err(TrainError::InvalidConfig { .. })
    ));
    let mut broken = tutorial_dataset(500, 8);
    broken.train.push((0, 10_000));
    assert!(matches!(
        Trainer::new(small_config(1), &broken),
        Err(TrainError::OutOfRange { .. })
    ));
    let trainer = Trainer::new(small_config(1), &dataset).unwrap();
    assert!(trainer.save().is_err(), "saving needs a directory");
}

#[test]
fn learning_rate_schedules() {
    let linear = LrSchedule::Linear {
        warmup_steps: 4,
        final_scale: 0.5,
    };
    assert_eq!(linear.scale(0, 104), 0.25);
    assert_eq!(linear.scale(3, 104), 1.0);
    assert_eq!(linear.scale(4, 104), 1.0);
    assert_eq!(linear.scale(54, 104), 0.75);
    assert!((linear.scale(103, 104) - 0.505).abs() < 1e-6);
    assert_eq!(LrSchedule::Constant.scale(7, 8), 1.0);
}
