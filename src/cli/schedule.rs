//! `batchgrid schedule`: check a cron expression before trusting it with month-end (`next`,
//! no grid needed), and the manager's schedules (`add`, `list`, `show`, `pause`, `resume`,
//! `trigger`, `delete`) through its API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use batchgrid_core::schedule::chrono::{DateTime, SecondsFormat, Utc};
use batchgrid_core::schedule::{self, Calendar, CronExpr, Schedule, ScheduleError};
use batchgrid_core::service::ScheduleStatus;
use batchgrid_core::spec::{schedule_document, ScheduleOverrides};
use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub(crate) struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Print the next fire times of a cron expression in a zone, one RFC 3339 time per line;
    /// needs no grid.
    Next(NextArgs),
    /// Add a schedule to the manager: a job file with a `schedule:` block, or --cron and --tz.
    Add(AddArgs),
    /// List the manager's schedules with their next fire times.
    List(super::client::Connection),
    /// Show a schedule: its next fire times and recent occurrences.
    Show(NameArgs),
    /// Pause a schedule: it fires nothing until resumed.
    Pause(NameArgs),
    /// Resume a schedule; fire times passed while it was paused are not caught up.
    Resume(NameArgs),
    /// Fire one occurrence of a schedule now (under its overlap policy).
    Trigger(NameArgs),
    /// Delete a schedule and its occurrences; jobs it started go on.
    Delete(NameArgs),
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// The job file.
    job: PathBuf,
    /// Cron expression, replacing the file's `schedule.cron`.
    #[arg(long)]
    cron: Option<String>,
    /// IANA time zone, replacing the file's `schedule.tz`.
    #[arg(long)]
    tz: Option<String>,
    #[command(flatten)]
    connection: super::client::Connection,
}

#[derive(Debug, clap::Args)]
struct NameArgs {
    /// The schedule's name (its job's name).
    name: String,
    #[command(flatten)]
    connection: super::client::Connection,
}

#[derive(Debug, clap::Args)]
struct NextArgs {
    /// Cron expression: `MIN HOUR DOM MON DOW`, or with seconds first; `L`, `W`, `LW`, `#`.
    #[arg(long)]
    cron: String,
    /// IANA time zone the expression is read in, such as Europe/Paris.
    #[arg(long)]
    tz: String,
    /// Start after this RFC 3339 time (with its offset); now by default.
    #[arg(long)]
    from: Option<String>,
    /// How many fire times to print.
    #[arg(short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    n: u16,
    /// Holiday file: one YYYY-MM-DD per line, `#` comments; may be given several times.
    #[arg(long)]
    exclude: Vec<PathBuf>,
}

/// Runs a `schedule` subcommand.
pub(crate) async fn run(args: ScheduleArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ScheduleCommand::Next(args) => next(args),
        ScheduleCommand::Add(args) => add(args).await,
        ScheduleCommand::List(connection) => {
            let schedules = connection.client().await?.schedules().await?;
            print_schedules(&schedules, connection.json)
        }
        ScheduleCommand::Show(args) => {
            let schedule = args.connection.client().await?.schedule(&args.name).await?;
            print_schedules(std::slice::from_ref(&schedule), args.connection.json)
        }
        ScheduleCommand::Pause(args) => action(args, "pause").await,
        ScheduleCommand::Resume(args) => action(args, "resume").await,
        ScheduleCommand::Delete(args) => action(args, "delete").await,
        ScheduleCommand::Trigger(args) => {
            let occurrence = args.connection.client().await?.trigger_schedule(&args.name).await?;
            if args.connection.json {
                println!("{}", serde_json::to_string(&occurrence)?);
            } else {
                let state = serde_json::to_value(occurrence.state)?;
                println!("{} {}", state.as_str().unwrap_or_default(), occurrence.job_id.unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.job).with_context(|| format!("reading {}", args.job.display()))?;
    let origin = args.job.display().to_string();
    let base_dir = args.job.parent().map(Path::to_path_buf).unwrap_or_default();
    let overrides = ScheduleOverrides { cron: args.cron, tz: args.tz };
    // Validated here, so errors name the user's file; holiday files become dates.
    let document = schedule_document(&text, &origin, &base_dir, &overrides)?;
    let status = args.connection.client().await?.add_schedule(&document, &origin).await?;
    print_schedules(std::slice::from_ref(&status), args.connection.json)
}

async fn action(args: NameArgs, action: &str) -> anyhow::Result<ExitCode> {
    args.connection.client().await?.schedule_action(&args.name, action).await?;
    eprintln!("schedule {}: {action} done", args.name);
    Ok(ExitCode::SUCCESS)
}

/// One line per schedule (name, state, expression, zone, next fire time), then any
/// occurrences; or JSON.
fn print_schedules(schedules: &[ScheduleStatus], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(schedules)?);
        return Ok(ExitCode::SUCCESS);
    }
    for schedule in schedules {
        let state = if schedule.paused { "paused" } else { "active" };
        let next = schedule.next.first().map_or("-", String::as_str);
        println!("{}  {state}  \"{}\"  {}  next {next}", schedule.name, schedule.cron, schedule.tz);
        for occurrence in &schedule.occurrences {
            let state = serde_json::to_value(occurrence.state)?;
            let time = DateTime::<Utc>::from_timestamp_millis(occurrence.fire_time)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let detail = occurrence.job_id.as_deref().or(occurrence.reason.as_deref()).unwrap_or_default();
            println!("  {time}  {}  {detail}", state.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A schedule error as the flag that carries the bad value: `--cron: ...`.
fn flag_error(error: ScheduleError) -> anyhow::Error {
    anyhow::anyhow!("--{}: {}", error.field, error.message)
}

fn next(args: NextArgs) -> anyhow::Result<ExitCode> {
    let expr = CronExpr::parse(&args.cron).map_err(flag_error)?;
    let zone = schedule::parse_zone(&args.tz).map_err(flag_error)?;
    let mut calendar = Calendar::default();
    for file in &args.exclude {
        calendar.add_holiday_file(file).map_err(flag_error)?;
    }
    let from = match &args.from {
        Some(text) => schedule::parse_instant(text).map_err(flag_error)?,
        None => DateTime::<Utc>::from(std::time::SystemTime::now()),
    };
    let schedule = Schedule::new(expr, zone, calendar);
    let mut printed = 0;
    for time in schedule.iter_after(from).take(usize::from(args.n)) {
        println!("{}", time.map_err(flag_error)?.to_rfc3339_opts(SecondsFormat::Secs, false));
        printed += 1;
    }
    if printed == 0 {
        anyhow::bail!("--cron: `{}` never fires", args.cron.trim());
    }
    if printed < args.n {
        eprintln!("note: `{}` fires only {printed} more time(s)", args.cron);
    }
    Ok(ExitCode::SUCCESS)
}
