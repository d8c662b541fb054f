//! `batchgrid report ID [--html FILE] [--json] [--compare previous|ID]`: a job's report through
//! the manager's API, as text, as JSON or as one self-contained HTML file, with the comparison of
//! two runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use batchgrid_core::report::html;
use batchgrid_core::service::compare::{reports, Against};

use super::client::Connection;

/// Arguments of `batchgrid report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The job's id.
    job: String,
    /// Write the report as one self-contained HTML file here (no script, nothing fetched).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Compare with `previous` (the latest earlier ended run of the same job name) or a job id.
    #[arg(long, value_name = "previous|ID")]
    compare: Option<Against>,
    #[command(flatten)]
    connection: Connection,
}

/// Prints or writes the report.
pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client().await?;
    let (report, compared) = reports(&client, &args.job, args.compare.as_ref()).await?;
    if let Some(path) = &args.html {
        let page = html::render(&report, compared.as_ref().map(|(c, before)| (c, before)));
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    } else if args.connection.json {
        // The earlier run's whole report as well as the figures, so tools can compare more.
        let value = serde_json::json!({
            "report": report,
            "compared_with": compared.as_ref().map(|(_, before)| before),
            "comparison": compared.as_ref().map(|(comparison, _)| comparison),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render_text());
        if let Some((comparison, _)) = &compared {
            print!("{}", comparison.render_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}
