//! `cargo xtask fuzz-smoke --target T --runs N`: a deterministic random-mutation loop over the
//! fuzz targets' checks, for machines without cargo-fuzz.
//!
//! Each execution takes one of the target's seed inputs (valid files of several shapes), applies
//! one to eight random mutations (bit flips, random or boundary bytes, boundary 32/64-bit
//! integers, insertions, deletions, truncation, repeated chunks) and calls the same function the
//! fuzz target calls ([`poeem::fuzzing`]). Inputs come from a ChaCha8 stream seeded by `--seed`,
//! so a run is repeatable; a panic stops the run, writes the input to `--crash-dir` and fails.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use poeem::build::{ReferenceFile, encode_reference};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The fuzz targets with a smoke loop.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `fuzz/fuzz_targets/read_npy.rs`: `.npy` vectors and ids.
    Npy,
    /// `fuzz/fuzz_targets/read_fvecs.rs`: `.fvecs` vectors.
    Fvecs,
    /// `fuzz/fuzz_targets/import_reference.rs`: reference-implementation index files.
    Reference,
}

/// Arguments of `cargo xtask fuzz-smoke`.
#[derive(clap::Args, Debug)]
pub(crate) struct FuzzSmokeArgs {
    /// The target.
    #[arg(long, value_enum)]
    target: Target,
    /// Executions.
    #[arg(long, default_value_t = 100_000)]
    runs: u64,
    /// Seed of the mutation stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where a crashing input is written.
    #[arg(long, default_value = "target/fuzz-smoke-crashes")]
    crash_dir: PathBuf,
}

/// Runs the loop and prints the executions, time and rate.
pub(crate) fn run(args: &FuzzSmokeArgs) -> Result<()> {
    let check: fn(&[u8]) = match args.target {
        Target::Npy => poeem::fuzzing::npy,
        Target::Fvecs => poeem::fuzzing::fvecs,
        Target::Reference => poeem::fuzzing::reference,
    };
    let seeds = seed_inputs(args.target)?;
    // Panics are expected to be caught and reported here, not printed for each one.
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    for execution in 0..args.runs {
        let input = mutate(&seeds[rng.random_range(0..seeds.len())], &mut rng);
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let _ = std::panic::take_hook();
            std::fs::create_dir_all(&args.crash_dir)
                .with_context(|| format!("creating {}", args.crash_dir.display()))?;
            let path = args
                .crash_dir
                .join(format!("{:?}-{}-{execution}", args.target, args.seed).to_lowercase());
            poeem_fs::write_atomically(&path, |w| std::io::Write::write_all(w, &input))?;
            // Rerun with the default hook so the panic message is printed.
            let _ = catch_unwind(AssertUnwindSafe(|| check(&input)));
            bail!(
                "{:?}: execution {execution} panicked; input written to {}",
                args.target,
                path.display()
            );
        }
    }
    let _ = std::panic::take_hook();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{:?}: {} executions without a crash in {seconds:.1} s ({:.0}/s), seed {}",
        args.target,
        args.runs,
        args.runs as f64 / seconds.max(1e-9),
        args.seed
    );
    Ok(())
}

/// Valid inputs of the target, of several shapes.
fn seed_inputs(target: Target) -> Result<Vec<Vec<u8>>> {
    let mut seeds = Vec::new();
    for (n, dim) in [(1usize, 1usize), (3, 4), (17, 5)] {
        let data: Vec<f32> = (0..n * dim).map(|i| i as f32 * 0.25 - 1.0).collect();
        match target {
            Target::Npy => {
                seeds.push(npy_bytes(&data, &[n as u64, dim as u64])?);
                let ids: Vec<i64> = (0..n as i64).collect();
                seeds.push(npy_bytes(&ids, &[n as u64])?);
            }
            Target::Fvecs => seeds.push(
                data.chunks_exact(dim)
                    .flat_map(|row| {
                        let head = (dim as i32).to_le_bytes();
                        head.into_iter()
                            .chain(row.iter().flat_map(|v| v.to_le_bytes()))
                    })
                    .collect(),
            ),
            Target::Reference => {
                let (n_lists, k, m) = (2usize, 4usize, 1usize.max(dim / 2));
                let dim = m * (dim / m).max(1);
                let file = ReferenceFile {
                    use_residual: 1,
                    dim,
                    n_lists,
                    n_codewords: k,
                    n_subspaces: m,
                    codebooks: (0..k * dim).map(|i| i as f32 * 0.5).collect(),
                    ids: (0..n as i64).map(|i| 10 + i).collect(),
                    norms: (0..n).map(|i| (i % 3) as f32).collect(),
                    codes: (0..n * m).map(|i| (i % k) as u16).collect(),
                    coarse_centroids: (0..n_lists * dim).map(|i| i as f32).collect(),
                    assignments: (0..n as u32).map(|i| i % n_lists as u32).collect(),
                };
                seeds.push(encode_reference(&file)?);
            }
        }
    }
    Ok(seeds)
}

/// The bytes of a C-order `.npy` of `data` with `shape`.
fn npy_bytes<T: npyz::AutoSerialize + Copy>(data: &[T], shape: &[u64]) -> Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut out = Vec::new();
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()?;
    Ok(out)
}

/// Boundary values written by the integer mutations.
const INTERESTING: [i64; 10] = [
    0,
    1,
    -1,
    2,
    255,
    256,
    65_536,
    i32::MAX as i64,
    i64::MAX,
    i64::MIN,
];

/// `seed` with one to eight random mutations.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = data.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        match rng.random_range(0..9) {
            0 if len > 0 => data[at] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => data[at] = rng.random(),
            2 if len > 0 => data[at] = [0, 0x7f, 0x80, 0xff][rng.random_range(0..4)],
            3 if len >= 4 => {
                let at = rng.random_range(0..=len - 4);
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())] as i32;
                data[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            4 if len >= 8 => {
                let at = rng.random_range(0..=len - 8);
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                data[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            5 => {
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            6 if len > 0 => {
                let end = (at + rng.random_range(1..=16)).min(len);
                data.drain(at..end);
            }
            7 => data.truncate(at),
            _ if len > 0 => {
                let end = (at + rng.random_range(1..=32)).min(len);
                let chunk = data[at..end].to_vec();
                let to = rng.random_range(0..=len);
                data.splice(to..to, chunk);
            }
            _ => data.push(rng.random()),
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_their_checks_and_mutations_are_repeatable() {
        for (target, check) in [
            (Target::Npy, poeem::fuzzing::npy as fn(&[u8])),
            (Target::Fvecs, poeem::fuzzing::fvecs),
            (Target::Reference, poeem::fuzzing::reference),
        ] {
            let seeds = seed_inputs(target).unwrap();
            assert!(seeds.len() >= 3, "{target:?}");
            for seed in &seeds {
                check(seed);
            }
            let mut a = ChaCha8Rng::seed_from_u64(9);
            let mut b = ChaCha8Rng::seed_from_u64(9);
            let mutated: Vec<_> = (0..50).map(|_| mutate(&seeds[0], &mut a)).collect();
            assert_eq!(
                mutated,
                (0..50)
                    .map(|_| mutate(&seeds[0], &mut b))
                    .collect::<Vec<_>>()
            );
            assert!(mutated.iter().any(|m| m != &seeds[0]));
        }
        assert!(poeem::io::parse_npy(&seed_inputs(Target::Npy).unwrap()[2]).is_ok());
        assert!(poeem::io::parse_fvecs(&seed_inputs(Target::Fvecs).unwrap()[2]).is_ok());
        assert!(
            poeem::build::parse_reference(
                &seed_inputs(Target::Reference).unwrap()[2],
                poeem::search::Metric::L2
            )
            .is_ok()
        );
    }
}
