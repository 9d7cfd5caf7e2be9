//! Side-by-side benchmarks against faiss, run through a Python interpreter that can
//! `import faiss` (for example a virtual environment with `pip install faiss-cpu numpy`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use poeem::pq::{
    KMeans, KMeansConfig, KMeansInit, KMeansSettings, Par, PqConfig, ProductQuantizer,
};

use poeem::pipeline::{markdown_table as markdown, median};

/// Arguments of `bench-faiss quantizers`.
#[derive(clap::Args)]
pub(crate) struct QuantizerArgs {
    /// Number of vectors (synthetic, clustered Gaussian; seeded).
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// k-means centroids.
    #[arg(long, default_value_t = 1024)]
    k: usize,
    /// k-means iterations (both sides run all of them).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// PQ subspaces (8 bits each).
    #[arg(long, default_value_t = 16)]
    n_subspaces: usize,
    /// Threads for both sides.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed repetitions; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Python interpreter with faiss (default: $POEEM_PYTHON, /tmp/faiss-venv/bin/python, python3).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Finds a Python that can import faiss, or `None`.
pub(crate) fn find_faiss_python(explicit: Option<&Path>) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = explicit.map(Path::to_owned).into_iter().collect();
    if let Some(p) = std::env::var_os("POEEM_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push("/tmp/faiss-venv/bin/python".into());
    candidates.push("python3".into());
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import faiss, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// A Python command with the OpenBLAS overrides of these machines removed, so that the peer runs
/// at its best (they select a slower kernel for numpy).
pub(crate) fn python_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE");
    cmd
}

fn par_for(threads: usize) -> Par {
    if threads <= 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

pub(crate) fn quantizers(args: &QuantizerArgs) -> Result<()> {
    let Some(python) = find_faiss_python(args.python.as_deref()) else {
        println!("faiss is missing: no Python that can `import faiss, numpy` was found; skipping.");
        println!(
            "Install one with: python3 -m venv /tmp/faiss-venv && /tmp/faiss-venv/bin/pip install faiss-cpu==1.15.1 numpy"
        );
        return Ok(());
    };
    if args.threads > 1 {
        rayon_pool(args.threads)?;
    }
    let par = par_for(args.threads);
    let repeats = args.repeats.max(1);
    println!(
        "data: {} × {} clustered Gaussian (seed 7); k-means → {} centroids, {} iterations; PQ{}x8; {} thread(s)",
        args.n, args.dim, args.k, args.iters, args.n_subspaces, args.threads
    );
    let data = poeem::synthetic::clustered_gaussian(args.n, args.dim, 4 * args.k, 0.3, 7);
    let dir = crate::target_dir().join("bench-faiss");
    std::fs::create_dir_all(&dir)?;
    let data_path = dir.join("quantizers.npy");
    poeem::io::write_npy(&data_path, &data, args.dim)?;

    // faiss first, then poeem, on the same file.
    let script = dir.join("faiss_quantizers.py");
    std::fs::write(&script, include_str!("faiss_quantizers.py"))?;
    let output = python_command(&python)
        .arg(&script)
        .arg(&data_path)
        .args([args.k, args.iters, args.n_subspaces, args.threads, repeats].map(|v| v.to_string()))
        .output()
        .context("running the faiss script")?;
    if !output.status.success() {
        bail!(
            "the faiss script failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let faiss: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading the faiss script's JSON")?;
    let seconds = |key: &str| -> Vec<f64> {
        faiss[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default()
    };

    let settings = KMeansSettings {
        max_iter: args.iters,
        tolerance: 0.0,
        init: KMeansInit::RandomSample,
        max_points_per_centroid: None,
    };
    let mut kmeans_times = Vec::new();
    let mut inertia = 0.0;
    for r in 0..repeats {
        let config = KMeansConfig {
            n_clusters: args.k,
            settings: settings.clone(),
            seed: 1234 + r as u64,
        };
        let start = Instant::now();
        let km = KMeans::train(&data, args.dim, &config, par)?;
        kmeans_times.push(start.elapsed().as_secs_f64());
        inertia = km.report.inertia.last().copied().unwrap_or(f64::NAN);
    }

    let pq_config = PqConfig {
        n_subspaces: args.n_subspaces,
        n_bits: 8,
        kmeans: KMeansSettings::default(),
        seed: 1,
    };
    let pq = ProductQuantizer::train(&data, args.dim, &pq_config, par, &mut |_| {})?;
    let mut codes = vec![0u8; args.n * args.n_subspaces];
    let mut encode_times = Vec::new();
    for _ in 0..repeats {
        let start = Instant::now();
        pq.encode(&data, &mut codes, par)?;
        encode_times.push(start.elapsed().as_secs_f64());
    }
    let mut recon = vec![0.0f32; data.len()];
    pq.decode(&codes, &mut recon)?;
    let mse = data
        .iter()
        .zip(&recon)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / args.n as f64;

    let (fk, pk) = (median(&seconds("kmeans_seconds")), median(&kmeans_times));
    let (fe, pe) = (median(&seconds("encode_seconds")), median(&encode_times));
    let rate = |s: f64| format!("{:.0}k/s", args.n as f64 / s / 1e3);
    let rows = vec![
        vec![
            format!(
                "k-means {}×{} → {}, {} it",
                args.n, args.dim, args.k, args.iters
            ),
            format!("{fk:.2} s"),
            format!("{pk:.2} s"),
            format!("{:.2}×", fk / pk),
            format!(
                "{:.4e} / {:.4e}",
                faiss["kmeans_final_inertia"].as_f64().unwrap_or(f64::NAN),
                inertia
            ),
        ],
        vec![
            format!("PQ{}x8 encode {} vectors", args.n_subspaces, args.n),
            format!("{fe:.3} s ({})", rate(fe)),
            format!("{pe:.3} s ({})", rate(pe)),
            format!("{:.2}×", fe / pe),
            format!(
                "MSE {:.4} / {:.4}",
                faiss["pq_mse"].as_f64().unwrap_or(f64::NAN),
                mse
            ),
        ],
    ];
    println!(
        "faiss {} ({}), medians of {repeats}",
        faiss["faiss_version"].as_str().unwrap_or("?"),
        python.display()
    );
    print!(
        "{}",
        markdown(
            &[
                "task",
                "faiss",
                "poeem",
                "speed-up (faiss time / poeem time)",
                "quality faiss / poeem"
            ],
            &rows
        )
    );
    Ok(())
}

/// Sizes rayon's global pool (used by `Par::rayon`) to `threads`.
pub(crate) fn rayon_pool(threads: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("configuring the thread pool")
}
