//! Command-line entry point of `batchgrid-claims`: `generate`, `validate`, `merge`, `reference`.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use batchgrid_claims::generate::DEFAULT_MALFORMED_PER_MILLION;
use batchgrid_claims::{generate, merge_dir, reference, validate_chunk, GenerateOptions, Summary};

/// Synthetic insurance claims: generator, per-chunk validation, merge and reference.
#[derive(Debug, Parser)]
#[command(name = "batchgrid-claims", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a deterministic claims CSV (header + N rows) with planted malformed rows.
    Generate {
        /// Number of data rows.
        #[arg(long)]
        rows: u64,
        /// PRNG seed; same rows/seed/rate give the same bytes everywhere.
        #[arg(long)]
        seed: u64,
        /// Output CSV file.
        #[arg(long)]
        out: PathBuf,
        /// Expected malformed rows per million (0..=1000000).
        #[arg(long, default_value_t = DEFAULT_MALFORMED_PER_MILLION,
              value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        malformed_per_million: u32,
    },
    /// Stage 1: validate one chunk; writes aggregates.csv and rejects.csv to OUTPUT_DIR.
    Validate {
        /// A chunk of the claims CSV (with or without the header line).
        input_file: PathBuf,
        /// Directory for aggregates.csv and rejects.csv (created if missing).
        output_dir: PathBuf,
    },
    /// Stage 2: merge every aggregates.csv/rejects.csv under INPUT_DIR into OUTPUT_DIR.
    Merge {
        /// Directory searched recursively for partial results.
        input_dir: PathBuf,
        /// Directory for totals.csv, rejects.csv and summary.txt (created if missing).
        output_dir: PathBuf,
    },
    /// Compute totals.csv, rejects.csv and summary.txt from the whole file in one process.
    Reference {
        /// The whole claims CSV.
        input_file: PathBuf,
        /// Directory for totals.csv, rejects.csv and summary.txt (created if missing).
        output_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("batchgrid-claims: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    let started = Instant::now();
    match command {
        Command::Generate { rows, seed, out, malformed_per_million } => {
            let opts = GenerateOptions { rows, seed, malformed_per_million };
            let file = File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            let stats = generate(&opts, &mut writer).with_context(|| format!("cannot write {}", out.display()))?;
            writer
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "generate: rows={} malformed={} bytes={} seed={seed} out={} ({:.2}s)",
                stats.rows,
                stats.malformed,
                stats.bytes,
                out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Validate { input_file, output_dir } => {
            let s = validate_chunk(&input_file, &output_dir)?;
            report("validate", &s, started);
        }
        Command::Merge { input_dir, output_dir } => {
            let s = merge_dir(&input_dir, &output_dir)?;
            report("merge", &s, started);
        }
        Command::Reference { input_file, output_dir } => {
            let s = reference(&input_file, &output_dir)?;
            report("reference", &s, started);
        }
    }
    Ok(())
}

fn report(what: &str, s: &Summary, started: Instant) {
    eprintln!(
        "{what}: valid_rows={} rejected_rows={} providers={} ({:.2}s)",
        s.valid_rows,
        s.rejected_rows,
        s.providers,
        started.elapsed().as_secs_f64()
    );
}
