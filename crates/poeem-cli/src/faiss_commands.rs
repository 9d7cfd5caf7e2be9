//! `poeem export-faiss | import-faiss`: conversion between poeem and faiss index files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use poeem::faiss::{Progress, REFINE_K_FACTOR, RefineExport, export_faiss, import_faiss};

/// Arguments of `poeem export-faiss`.
#[derive(Debug, Args)]
pub struct ExportFaissArgs {
    /// Poeem index file to convert.
    #[arg(long)]
    index: PathBuf,
    /// faiss index file to write (atomically); `faiss.read_index` loads it.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `poeem import-faiss`.
#[derive(Debug, Args)]
pub struct ImportFaissArgs {
    /// faiss index file (`IndexIVFPQ`, optionally inside an `IndexPreTransform`, optionally
    /// the base of an `IndexRefineFlat`, whose vectors become refinement data), as
    /// `faiss.write_index` writes it.
    #[arg(long)]
    input: PathBuf,
    /// Poeem index file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

/// A bar over the items converted, shown on a terminal only.
fn item_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} items, {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

fn update(bar: &ProgressBar, p: Progress) {
    bar.set_length(p.n_items as u64);
    bar.set_position(p.items_done as u64);
    bar.set_message(format!("list {}/{}", p.lists_done, p.n_lists));
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

fn rate(bytes: u64, seconds: f64) -> String {
    format!(
        "{:.1} MB in {seconds:.2} s, {:.0} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / seconds.max(1e-9)
    )
}

/// `poeem export-faiss`: writes a poeem index as a faiss `IndexIVFPQ` file.
pub fn export(args: &ExportFaissArgs) -> Result<()> {
    let start = Instant::now();
    let bar = item_bar("export");
    let report = export_faiss(&args.index, &args.out, &mut |p| update(&bar, p));
    bar.finish_and_clear();
    let report = report.with_context(|| {
        format!(
            "exporting {} to {}",
            args.index.display(),
            args.out.display()
        )
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let input = file_len(&args.index)?;
    println!(
        "wrote {} ({} items, {} lists{}): read {}",
        args.out.display(),
        report.n_items,
        report.n_lists,
        if report.pre_transform {
            ", behind an IndexPreTransform"
        } else {
            ""
        },
        rate(input, seconds)
    );
    match report.refine {
        Some(RefineExport::Written(kind)) => println!(
            "re-ranking: the {kind} refinement data as an IndexRefineFlat around the IVF-PQ \
             index (k_factor {REFINE_K_FACTOR})"
        ),
        Some(RefineExport::LeftOut(kind, why)) => {
            println!("note: the index's {kind} refinement data are not in the faiss file: {why}")
        }
        None => {}
    }
    Ok(())
}

/// `poeem import-faiss`: converts a faiss IVF-PQ file into a poeem index.
pub fn import(args: &ImportFaissArgs) -> Result<()> {
    let start = Instant::now();
    let bar = item_bar("import");
    let summary = import_faiss(&args.input, &args.out, &mut |p| update(&bar, p));
    bar.finish_and_clear();
    let summary = summary.with_context(|| {
        format!(
            "importing {} to {}",
            args.input.display(),
            args.out.display()
        )
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let input = file_len(&args.input)?;
    println!(
        "wrote {} from faiss {} (by_residual {}, {} bits): read {}",
        args.out.display(),
        summary.structure.join(" > "),
        summary.by_residual,
        summary.faiss_n_bits,
        rate(input, seconds)
    );
    if let Some(k_factor) = summary.refine_k_factor {
        println!(
            "re-ranking: the IndexRefineFlat's vectors are the index's f32 refinement data \
             (faiss's k_factor was {k_factor}; poeem search --rerank-factor sets poeem's, \
             default {})",
            poeem::search::SearchParams::DEFAULT_RERANK_FACTOR
        );
    }
    Ok(())
}
