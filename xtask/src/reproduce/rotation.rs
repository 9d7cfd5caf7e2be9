//! `cargo xtask reproduce rotation`: learning the rotation of a product quantizer on fixed
//! embeddings (the fixed-embedding experiment of Jiang et al., ICLR 2022).
//!
//! Every method starts from the same PQ, fitted on the unrotated vectors, and runs the same
//! mini-batch loop: encode a batch, move each used codeword toward its residuals (mini-batch
//! k-means, per-codeword step 1/count), then update the rotation:
//!
//! - plain PQ: never (R = I);
//! - OPQ (SVD): `R ← argmin ‖X_b R − Z_b‖` by Procrustes on the batch;
//! - Givens (random, greedy, steepest): one block Givens step on the batch distortion.
//!
//! The table reports the mean squared distortion of all vectors after 0, 10, 100 and 1000 steps
//! (the plot more points in between).
//! A second table times one rotation update (given the d×d gradient) against the dimension.

use std::time::Instant;

use anyhow::Result;
use poeem::pipeline::{markdown_table, median};
use poeem::pq::{KMeansSettings, Par, PqConfig, ProductQuantizer, mean_squared_norm};
use poeem::rotation::faer;
use poeem::rotation::{
    GivensConfig, GivensOptimizer, PairSelection, Rotation, procrustes, procrustes_from_cross,
};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::meta::DataHash;
use super::plot::{LineChart, Series};
use super::{Args, DataInfo, Experiment, Outcome, Progress};
use crate::bench_faiss_search::standardise_columns;

/// Checkpoints of the distortion table.
const CHECKPOINTS: [usize; 4] = [0, 10, 100, 1000];

/// Steps at which the distortion is plotted (log scale).
const PLOTTED: [usize; 7] = [10, 20, 50, 100, 200, 500, 1000];

#[derive(Clone, Copy)]
enum Method {
    Plain,
    OpqSvd,
    Givens(PairSelection),
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Plain,
        Method::OpqSvd,
        Method::Givens(PairSelection::Random),
        Method::Givens(PairSelection::Greedy),
        Method::Givens(PairSelection::Steepest),
    ];

    fn name(self) -> String {
        match self {
            Method::Plain => "plain PQ (R = I)".into(),
            Method::OpqSvd => "OPQ (SVD Procrustes)".into(),
            Method::Givens(s) => format!("Givens ({s})"),
        }
    }
}

/// The experiment's settings.
struct Setup {
    n_subspaces: usize,
    n_bits: u32,
    batch: usize,
    seed: u64,
    givens_lr: f32,
}

/// The dimensions at which one rotation update is timed.
fn timed_dims(quick: bool) -> &'static [usize] {
    if quick {
        &[64, 128, 256, 512]
    } else {
        &[64, 128, 256, 512, 1024]
    }
}

pub(crate) fn run(args: &Args, progress: &Progress) -> Result<Outcome> {
    let (n, dim) = if args.quick {
        (8_000, 32)
    } else {
        (50_000, 64)
    };
    let seed = args.seed_list(Experiment::Rotation)[0];
    let setup = Setup {
        n_subspaces: 8,
        n_bits: if args.quick { 6 } else { 8 },
        batch: if args.quick { 512 } else { 1024 },
        seed,
        givens_lr: args.givens_lr,
    };
    let n_sets = 1 + usize::from(args.vectors.is_some());
    progress.jobs(n_sets * Method::ALL.len() + timed_dims(args.quick).len());
    let mut report = format!(
        "Mean squared distortion (all vectors) after t mini-batch steps; PQ{}x{}, batch {}, \
         Givens lr {} (relative to the mean squared norm), max angle 0.1 rad.\n\n",
        setup.n_subspaces, setup.n_bits, setup.batch, setup.givens_lr
    );
    let mut hash = DataHash::default();
    let synthetic = poeem::synthetic::anisotropic_gaussian(n, dim, 30.0, seed);
    hash.floats(&synthetic);
    let mut description = format!(
        "synthetic anisotropic Gaussian, {n} × {dim} (std decaying 1 → 1/30, randomly rotated; \
         seed {seed})"
    );
    let mut sets = vec![distortion_section(
        "synthetic",
        &description,
        &synthetic,
        dim,
        &setup,
        progress,
    )?];
    if let Some(path) = &args.vectors {
        hash.file(path)?;
        let vectors = poeem::io::read_vectors(path)?;
        let mut data = vectors.data;
        standardise_columns(&mut data, vectors.dim)?;
        let title = format!(
            "{} ({} × {}, standardised)",
            path.display(),
            data.len() / vectors.dim,
            vectors.dim
        );
        description += &format!(", and {title}");
        sets.push(distortion_section(
            "vectors",
            &title,
            &data,
            vectors.dim,
            &setup,
            progress,
        )?);
    }
    let (timing_report, timing) = timing_section(args.quick, progress)?;
    let mut results = json!({ "checkpoints": CHECKPOINTS, "timing": timing });
    let mut plots = Vec::new();
    for set in sets {
        report += &set.report;
        results[set.key] = set.results;
        plots.push((format!("distortion_{}", set.key), set.chart));
    }
    report += &timing_report;
    Ok(Outcome {
        title: "Rotation learning on fixed embeddings".to_owned(),
        seeds: vec![seed],
        data: DataInfo {
            description,
            sha256: hash.hex(),
        },
        settings: json!({
            "n_subspaces": setup.n_subspaces,
            "n_bits": setup.n_bits,
            "batch": setup.batch,
            "givens_lr": setup.givens_lr,
            "max_angle": 0.1,
        }),
        results,
        report,
        plots,
    })
}

/// One data set's table, numbers and plot.
struct DistortionSet {
    key: &'static str,
    report: String,
    results: Value,
    chart: LineChart,
}

fn distortion_section(
    key: &'static str,
    title: &str,
    data: &[f32],
    dim: usize,
    setup: &Setup,
    progress: &Progress,
) -> Result<DistortionSet> {
    // PQ needs whole subspaces: zero-pad (the rotation may then move energy into the padding).
    let padded = poeem::pq::padded_dim(dim, setup.n_subspaces);
    let padded_data: Vec<f32>;
    let (data, dim) = if padded == dim {
        (data, dim)
    } else {
        padded_data = data
            .chunks_exact(dim)
            .flat_map(|x| {
                x.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0.0, padded - dim))
            })
            .collect();
        (&padded_data[..], padded)
    };
    let mean_sq_norm = mean_squared_norm(data, dim);
    let config = PqConfig {
        n_subspaces: setup.n_subspaces,
        n_bits: setup.n_bits,
        kmeans: KMeansSettings::default(),
        seed: setup.seed,
    };
    let initial = ProductQuantizer::train(data, dim, &config, Par::Seq, &mut |_| {})?;

    let steps = *CHECKPOINTS.last().unwrap_or(&0);
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut methods = Vec::new();
    for method in Method::ALL {
        progress.job(format!("{key}: {}", method.name()));
        let mut run = Run::new(data, dim, &initial, method, setup, mean_sq_norm)?;
        let mut row = vec![method.name()];
        let mut curve = Vec::new();
        let mut at_checkpoints = Vec::new();
        for step in 0..=steps {
            let table = CHECKPOINTS.contains(&step);
            if table || PLOTTED.contains(&step) {
                let relative = run.distortion()? / mean_sq_norm;
                if table {
                    row.push(format!("{relative:.4}"));
                    at_checkpoints.push(relative);
                }
                if PLOTTED.contains(&step) {
                    curve.push((step as f64, relative));
                }
            }
            if step < steps {
                run.step()?;
            }
        }
        let update_ms = run.update_seconds * 1e3 / steps as f64;
        row.push(format!("{:.2e}", run.rotation.orthogonality_error()));
        row.push(format!("{update_ms:.2}"));
        rows.push(row);
        methods.push(json!({
            "method": method.name(),
            "relative_distortion": at_checkpoints,
            "curve": curve,
            "orthogonality_error": run.rotation.orthogonality_error(),
            "update_ms_per_step": update_ms,
        }));
        series.push(Series {
            name: method.name(),
            points: curve,
            spread: None,
        });
        progress.job_done();
    }
    let mut header: Vec<String> = CHECKPOINTS.iter().map(|t| format!("t = {t}")).collect();
    header.insert(0, "method".into());
    header.push("‖RᵀR − I‖max".into());
    header.push("rotation update (ms/step)".into());
    let report = format!(
        "## {title}\n\nDistortion relative to the mean squared norm ({mean_sq_norm:.3}):\n\n{}\n",
        markdown_table(&header, &rows)
    );
    Ok(DistortionSet {
        key,
        report,
        results: json!({
            "title": title,
            "mean_squared_norm": mean_sq_norm,
            "methods": methods,
        }),
        chart: LineChart {
            title: format!("Rotation learning: {title}"),
            x_label: "mini-batch steps".to_owned(),
            y_label: "distortion / mean squared norm".to_owned(),
            log2_x: true,
            series,
        },
    })
}

/// One method's mini-batch run.
struct Run<'a> {
    data: &'a [f32],
    dim: usize,
    method: Method,
    setup: &'a Setup,
    rotation: Rotation,
    codebooks: Vec<f32>,
    counts: Vec<f64>,
    givens: GivensOptimizer,
    rng: ChaCha8Rng,
    update_seconds: f64,
}

impl<'a> Run<'a> {
    fn new(
        data: &'a [f32],
        dim: usize,
        initial: &ProductQuantizer,
        method: Method,
        setup: &'a Setup,
        mean_sq_norm: f64,
    ) -> Result<Self> {
        let selection = match method {
            Method::Givens(s) => s,
            _ => PairSelection::Random,
        };
        let givens = GivensOptimizer::new(GivensConfig {
            learning_rate: (f64::from(setup.givens_lr) / mean_sq_norm) as f32,
            max_angle: 0.1,
            selection,
            reorthonormalize_every: 1000,
            seed: setup.seed,
        });
        Ok(Self {
            data,
            dim,
            method,
            setup,
            rotation: Rotation::identity(dim),
            codebooks: initial.codebooks_flat(),
            counts: vec![0.0; setup.n_subspaces << setup.n_bits],
            givens,
            rng: ChaCha8Rng::seed_from_u64(setup.seed ^ 0xBA7C4),
            update_seconds: 0.0,
        })
    }

    fn quantizer(&self) -> Result<ProductQuantizer> {
        Ok(ProductQuantizer::from_codebooks(
            self.dim,
            self.setup.n_subspaces,
            self.setup.n_bits,
            &self.codebooks,
        )?)
    }

    /// Rotates `x`, encodes, decodes: returns (rotated, codes, reconstruction).
    fn encode(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<u8>, Vec<f32>)> {
        let pq = self.quantizer()?;
        let mut y = vec![0.0f32; x.len()];
        self.rotation.apply(x, &mut y, Par::Seq);
        let mut codes = vec![0u8; x.len() / self.dim * self.setup.n_subspaces];
        pq.encode(&y, &mut codes, Par::Seq)?;
        let mut z = vec![0.0f32; x.len()];
        pq.decode(&codes, &mut z)?;
        Ok((y, codes, z))
    }

    fn distortion(&self) -> Result<f64> {
        let (y, _, z) = self.encode(self.data)?;
        Ok(y.iter()
            .zip(&z)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / (self.data.len() / self.dim) as f64)
    }

    fn step(&mut self) -> Result<()> {
        let n = self.data.len() / self.dim;
        let rows = sample(&mut self.rng, n, self.setup.batch.min(n));
        let batch: Vec<f32> = rows
            .iter()
            .flat_map(|r| &self.data[r * self.dim..(r + 1) * self.dim])
            .copied()
            .collect();
        let (y, codes, z) = self.encode(&batch)?;
        self.update_codebooks(&y, &codes);
        let start = Instant::now();
        match self.method {
            Method::Plain => {}
            Method::OpqSvd => self.rotation = procrustes(&batch, &z, self.dim, Par::Seq)?,
            Method::Givens(_) => {
                let b = (batch.len() / self.dim) as f32;
                let dy: Vec<f32> = y.iter().zip(&z).map(|(a, c)| 2.0 * (a - c) / b).collect();
                self.givens
                    .step_with_batch_gradient(&mut self.rotation, &y, &dy, Par::Seq)?;
            }
        }
        self.update_seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Mini-batch k-means: each codeword moves toward each sub-vector assigned to it with step
    /// 1/(times it has been assigned).
    fn update_codebooks(&mut self, y: &[f32], codes: &[u8]) {
        let m_count = self.setup.n_subspaces;
        let k = 1usize << self.setup.n_bits;
        let sub = self.dim / m_count;
        for (x, code) in y.chunks_exact(self.dim).zip(codes.chunks_exact(m_count)) {
            for (m, &c) in code.iter().enumerate() {
                let slot = m * k + usize::from(c);
                self.counts[slot] += 1.0;
                let eta = (1.0 / self.counts[slot]) as f32;
                let word = &mut self.codebooks[slot * sub..(slot + 1) * sub];
                for (w, &v) in word.iter_mut().zip(&x[m * sub..(m + 1) * sub]) {
                    *w += eta * (v - *w);
                }
            }
        }
    }
}

/// Median time of one rotation update given the d×d gradient information, per dimension: the
/// report's table and the numbers.
fn timing_section(quick: bool, progress: &Progress) -> Result<(String, Value)> {
    let mut rows = Vec::new();
    let mut numbers = Vec::new();
    for &d in timed_dims(quick) {
        progress.job(format!("timing rotation updates at d = {d}"));
        let mut rng = ChaCha8Rng::seed_from_u64(d as u64);
        let raw: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let skew: Vec<f64> = (0..d * d)
            .map(|k| raw[k] - raw[(k % d) * d + k / d])
            .collect();
        let cross = faer_cross(&raw, d);
        let repeats = if quick { 3 } else { 7 };
        let time = |f: &mut dyn FnMut()| -> f64 {
            let mut t = Vec::new();
            for _ in 0..repeats {
                let s = Instant::now();
                f();
                t.push(s.elapsed().as_secs_f64());
            }
            median(&t)
        };
        let svd = time(&mut || {
            let _ = procrustes_from_cross(cross.as_ref());
        });
        let mut cells = vec![d.to_string(), format!("{:.3}", svd * 1e3)];
        let mut givens = serde_json::Map::new();
        for selection in PairSelection::ALL {
            if selection == PairSelection::Steepest && d > if quick { 256 } else { 512 } {
                cells.push("—".into());
                continue;
            }
            let mut rotation = Rotation::identity(d);
            let mut opt = GivensOptimizer::new(GivensConfig {
                learning_rate: 1e-3,
                selection,
                reorthonormalize_every: 0,
                ..GivensConfig::default()
            });
            let t = time(&mut || {
                let _ = opt.step_with_skew(&mut rotation, &skew, Par::Seq);
            });
            cells.push(format!("{:.3} ({:.0}×)", t * 1e3, svd / t));
            givens.insert(selection.to_string(), json!(t * 1e3));
        }
        rows.push(cells);
        numbers.push(json!({"dim": d, "svd_ms": svd * 1e3, "givens_ms": givens}));
        progress.job_done();
    }
    let table = format!(
        "## Time of one rotation update\n\nMedian ms per update from a d×d gradient (one thread); in brackets the speed-up over the SVD.\n\n{}",
        markdown_table(
            &[
                "d",
                "SVD Procrustes (ms)",
                "Givens random",
                "Givens greedy",
                "Givens steepest"
            ],
            &rows
        )
    );
    Ok((table, Value::Array(numbers)))
}

fn faer_cross(raw: &[f64], d: usize) -> faer::Mat<f64> {
    faer::Mat::from_fn(d, d, |r, c| raw[r * d + c])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On rotated anisotropic data, learning the rotation (SVD or Givens) lowers the distortion
    /// below plain PQ's within 200 steps, and every rotation stays orthonormal.
    #[test]
    fn learned_rotations_beat_plain_pq() {
        let (n, dim) = (3_000, 16);
        let data = poeem::synthetic::anisotropic_gaussian(n, dim, 30.0, 4);
        let setup = Setup {
            n_subspaces: 4,
            n_bits: 4,
            batch: 256,
            seed: 4,
            givens_lr: 8.0,
        };
        let mean_sq_norm = mean_squared_norm(&data, dim);
        let config = PqConfig {
            n_subspaces: 4,
            n_bits: 4,
            kmeans: KMeansSettings::default(),
            seed: 4,
        };
        let initial = ProductQuantizer::train(&data, dim, &config, Par::Seq, &mut |_| {}).unwrap();
        let final_distortion = |method| {
            let mut run = Run::new(&data, dim, &initial, method, &setup, mean_sq_norm).unwrap();
            for _ in 0..200 {
                run.step().unwrap();
            }
            assert!(run.rotation.orthogonality_error() < 1e-5);
            run.distortion().unwrap()
        };
        let plain = final_distortion(Method::Plain);
        for method in [
            Method::OpqSvd,
            Method::Givens(PairSelection::Greedy),
            Method::Givens(PairSelection::Steepest),
        ] {
            let learned = final_distortion(method);
            assert!(
                learned < 0.9 * plain,
                "{}: {learned} vs plain {plain}",
                method.name()
            );
        }
    }
}
