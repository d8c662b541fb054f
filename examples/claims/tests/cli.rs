//! End-to-end tests of the `batchgrid-claims` binary: the grid flow and its error exits.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Result};

fn claims(args: &[&Path]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_batchgrid-claims")).args(args).output()?)
}

fn ok(args: &[&Path]) -> Result<Output> {
    let out = claims(args)?;
    ensure!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out)
}

#[test]
fn generate_validate_merge_matches_reference() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let csv = d.join("claims.csv");
    let gen = |out: &Path| {
        ok(&[
            Path::new("generate"),
            Path::new("--rows"),
            Path::new("3000"),
            Path::new("--seed"),
            Path::new("9"),
            Path::new("--out"),
            out,
        ])
    };
    let out = gen(&csv)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rows=3000"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    gen(&d.join("again.csv"))?;
    assert_eq!(fs::read(&csv)?, fs::read(d.join("again.csv"))?);

    // Split by lines: header copied into the first chunk only.
    let text = fs::read_to_string(&csv)?;
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(1500);
    fs::write(d.join("c0.csv"), first.join("\n") + "\n")?;
    fs::write(d.join("c1.csv"), second.join("\n") + "\n")?;
    ok(&[Path::new("validate"), &d.join("c0.csv"), &d.join("parts/0")])?;
    ok(&[Path::new("validate"), &d.join("c1.csv"), &d.join("parts/1")])?;
    ok(&[Path::new("merge"), &d.join("parts"), &d.join("grid")])?;
    ok(&[Path::new("reference"), &csv, &d.join("ref")])?;
    for name in ["totals.csv", "rejects.csv", "summary.txt"] {
        assert_eq!(fs::read(d.join("grid").join(name))?, fs::read(d.join("ref").join(name))?, "{name}");
    }
    Ok(())
}

#[test]
fn errors_exit_non_zero_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();

    let out = claims(&[Path::new("validate"), &d.join("absent.csv"), &d.join("o")])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.csv"));

    fs::create_dir_all(d.join("parts/7"))?;
    fs::write(d.join("parts/7/aggregates.csv"), "provider_id,claims,amount_cents\nP0001,1,100\nP0002,one,100\n")?;
    let out = claims(&[Path::new("merge"), &d.join("parts"), &d.join("m")])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("parts/7/aggregates.csv:3"), "{stderr}");
    Ok(())
}
