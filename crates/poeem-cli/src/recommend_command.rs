//! `poeem recommend`: each user's top-k items through an index, as TSV or Parquet.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use poeem::pipeline::{
    DataSource, IdMap, RecommendRequest, read_token_indices, recommend_to_file, seen_ids,
};
use poeem::search::{Index, Probe, SearchIndex, SearchParams};

use crate::index_commands::Threads;
use crate::outputs::{Named, check_outputs, optional};
use crate::train_commands::{check_index, data_inputs, load_model, model_files};

/// Arguments of `poeem recommend`.
#[derive(Debug, Args)]
#[command(after_help = "\
The output is TSV (a header, then one line per recommendation: user id, item id, rank from 1, \
score; ids as the data spelled them) or, for OUT ending in .parquet, a Parquet file with the \
same columns. With --exclude-seen, the items each user has in the model's data (training and \
held-out pairs) are filtered inside the search, and a user whose probed lists hold fewer than \
k other items is searched again with twice the lists until k are found or every list is \
probed.")]
pub struct RecommendArgs {
    /// Model directory written by `poeem train` (its query tower embeds the users).
    #[arg(long, value_name = "MODEL_DIR")]
    model: PathBuf,
    /// The index to search: `poeem export` of the model, or `poeem build` over its item
    /// embeddings (with --ids F.ids.txt so that the index knows the items' ids).
    #[arg(long)]
    index: PathBuf,
    /// Users to recommend to, one id per line.
    #[arg(
        long,
        value_name = "F",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    users: Option<PathBuf>,
    /// Recommend to every user the model knows.
    #[arg(long)]
    all: bool,
    /// Items per user.
    #[arg(short = 'k', long = "k")]
    k: usize,
    /// Lists probed per user.
    #[arg(long, default_value_t = 1)]
    nprobe: usize,
    /// How lists are chosen: auto (by the index's metric), l2 or ip.
    #[arg(long, default_value = "auto")]
    probe: Probe,
    /// Leave out the items each user already interacted with (reloads the model's data).
    #[arg(long)]
    exclude_seen: bool,
    #[command(flatten)]
    threads: Threads,
    /// Recommendations to write (atomically): .tsv (or any other name) or .parquet.
    #[arg(long)]
    out: PathBuf,
}

/// `poeem recommend`.
pub fn recommend(args: &RecommendArgs) -> Result<()> {
    let source = DataSource::read(&args.model)?;
    let mut inputs = model_files(&args.model);
    inputs.push(Named::new("--index", &args.index));
    inputs.extend(optional("--users", args.users.as_deref()));
    inputs.extend(data_inputs(&source));
    check_outputs(&inputs, &[Named::new("--out", &args.out)])?;
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let model = load_model(&args.model)?;
    let index = Index::open(&args.index)?;
    let ids = IdMap::for_index(&index, model.items(), None)?;
    check_index(&index, &model, ids.kind(), &args.index)?;
    let users: Vec<u32> = match &args.users {
        Some(path) => read_token_indices(path, model.queries(), "user")?,
        None => (0..model.n_queries() as u32).collect(),
    };
    let seen = if args.exclude_seen {
        let start = Instant::now();
        let dataset = source
            .load()
            .context("reloading the model's data for --exclude-seen")?;
        if dataset.queries != *model.queries() || dataset.items != *model.items() {
            bail!(
                "the model's data files changed since training (their ids differ from the \
                 model's): --exclude-seen cannot tell what each user saw"
            );
        }
        let seen = seen_ids(&dataset, &ids);
        eprintln!(
            "loaded {} seen pairs in {:.2} s",
            dataset.train.len() + dataset.test.len(),
            start.elapsed().as_secs_f64()
        );
        Some(seen)
    } else {
        None
    };
    let (user_col, item_col) = match &source {
        DataSource::Files(config) => (
            config.interactions.query_column.clone(),
            config.interactions.item_column.clone(),
        ),
        DataSource::Tutorial { .. } => ("user_id".to_owned(), "item_id".to_owned()),
    };
    let request = RecommendRequest {
        users: &users,
        params: SearchParams::new(args.k, args.nprobe).with_probe(args.probe),
        exclude: seen.as_deref(),
        columns: [&user_col, &item_col],
    };
    let searchable = SearchIndex::new(index.view());
    let bar = ProgressBar::new(users.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "recommending [{bar:30}] {pos}/{len} users ({elapsed}, eta {eta})",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let report = recommend_to_file(
        &args.out,
        &model,
        &searchable,
        &ids,
        &request,
        args.threads.par(),
        &mut |done, _| bar.set_position(done as u64),
    );
    bar.finish_and_clear();
    let report = report.with_context(|| format!("writing {}", args.out.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    outln!(
        "wrote {} recommendations for {} users to {} in {seconds:.2} s ({:.0} users/s; k {}, \
         nprobe {}{}{})",
        report.n_rows,
        report.n_users,
        args.out.display(),
        report.n_users as f64 / seconds.max(1e-9),
        args.k,
        args.nprobe,
        if args.exclude_seen {
            ", seen items excluded"
        } else {
            ""
        },
        if report.n_widened > 0 {
            format!(
                "; {} users searched again with more lists to reach k",
                report.n_widened
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
