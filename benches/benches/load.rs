//! Criterion benchmark of loading interaction data.
//!
//! `cargo bench -p poeem-benches --bench load`
//!
//! - `parquet_1m`: a million-row Parquet interactions table (string user ids over 50,000 users,
//!   integer item ids over 20,000 items, second timestamps), written once to a temporary
//!   directory, loaded and split by `Dataset::load`;
//! - `recbole`: with `POEEM_RECBOLE_DIR` set (and `POEEM_RECBOLE_NAME`, default `ml-100k`), a
//!   RecBole dataset directory (relative to the workspace's root) loaded with its feature files,
//!   e.g.
//!   `POEEM_RECBOLE_DIR=../shared/data/ml-100k cargo bench -p poeem-benches --bench load`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
use criterion::{Criterion, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use poeem::train::data::{DataConfig, Dataset, InteractionsSource};

const ROWS: usize = 1_000_000;

/// Writes the benchmark's Parquet table to `path`.
fn write_interactions(path: &Path) {
    let users: Vec<String> = (0..ROWS).map(|r| format!("user {}", r % 50_000)).collect();
    let items: Vec<i64> = (0..ROWS).map(|r| ((r * 7919) % 20_000) as i64).collect();
    let times: Vec<i64> = (0..ROWS as i64).collect();
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(StringArray::from(users)) as ArrayRef),
        ("item_id", Arc::new(Int64Array::from(items))),
        ("timestamp", Arc::new(TimestampSecondArray::from(times))),
    ])
    .expect("columns of one length");
    let file = std::fs::File::create(path).expect("temporary file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("Parquet writer");
    writer.write(&batch).expect("write the table");
    writer.close().expect("close the table");
}

fn bench_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("interactions.parquet");
    write_interactions(&path);
    let mut source = InteractionsSource::new(&path, "user_id", "item_id");
    source.time_column = Some("timestamp".to_owned());
    let config = DataConfig::new(source);
    let data = Dataset::load(&config).expect("the benchmark's table loads");
    assert_eq!(data.train.len() + data.test.len(), ROWS);
    group.bench_function("parquet_1m", |b| {
        b.iter(|| black_box(Dataset::load(&config).expect("loads")))
    });

    match std::env::var_os("POEEM_RECBOLE_DIR") {
        Some(dir) => {
            // Cargo runs benches in the package's directory: a relative path is the
            // workspace's.
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
            let name = std::env::var("POEEM_RECBOLE_NAME").unwrap_or_else(|_| "ml-100k".into());
            let config = DataConfig::recbole(&dir, &name);
            group.bench_function("recbole", |b| {
                b.iter(|| black_box(Dataset::load(&config).expect("the RecBole dataset loads")))
            });
        }
        None => eprintln!("load/recbole: set POEEM_RECBOLE_DIR to a RecBole dataset directory"),
    }
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
