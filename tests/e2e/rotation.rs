//! The analytics credentials rotate while a job runs on the local stack: the grid's login
//! password changes on a PostgreSQL that checks passwords and in the emulator's Secrets
//! Manager, the grid's sessions are ended, and the job still completes with every task
//! recorded exactly once.

use std::time::{Duration, Instant};

use batchgrid_core::analytics::{AnalyticsStore, AttemptOutcome, JobState, PgAnalytics};

use crate::harness::write_lines;
use crate::local_stack::{secrets_client, Credentials, LocalStack, FIRST_PASSWORD, GRID_USER};

/// Tasks of the job: with 2 workers running 2 tasks each, 0.3 s apiece, it runs for several
/// seconds, long enough to rotate in the middle of it.
const TASKS: u64 = 60;
/// The password after the rotation (characters a URL would need escaped, as managed ones have).
const SECOND_PASSWORD: &str = "second-pass:@/?#%";
/// What a process logs when it has read the credentials again.
const REFRESHED: &str = "database credentials refreshed";
/// The longest the test may take once the stack is up: it fails rather than hangs.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotated_while_a_job_runs_are_read_again_and_every_task_is_recorded_once() {
    let stack = tokio::task::spawn_blocking(|| LocalStack::start_with_credentials(2, Credentials::Secret))
        .await
        .expect("stack");
    let started = Instant::now();
    let dir = stack.dir.path().to_path_buf();
    write_lines(&dir.join("input.txt"), TASKS as usize);
    let job = dir.join("slow.yaml");
    let text = format!(
        "name: slow\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: [sh, -c, 'sleep 0.3; cp \"$0\" \"$1/\"', \"{{input}}\", \"{{output}}\"]\noutput:\n  path: out\n",
        dir.join("input.txt").display()
    );
    std::fs::write(&job, text).expect("write job");

    // Submitting reads the database settings too (host and secret, not a URL).
    let submitted = {
        let mut command = stack.command();
        command.args(["submit", "--env", "local", "--json"]).args(stack.place_args()).arg(&job);
        tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run submit")
    };
    assert!(submitted.status.success(), "submit: {}", String::from_utf8_lossy(&submitted.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&submitted.stdout).expect("submit prints JSON");
    let job_id = answer["job_id"].as_str().expect("job id").to_owned();
    let client = stack.client(crate::local_stack::TOKEN);

    // Rotate once some tasks are recorded and most are still to run.
    let done_at_rotation = loop {
        let status = client.status(&job_id).await.expect("status");
        let done = status.stages.first().map_or(0, |s| s.done);
        if done >= 4 {
            break done;
        }
        assert!(!status.state.is_terminal(), "the job ended before the rotation: {status:?}");
        assert!(started.elapsed() < DEADLINE, "no task done within {DEADLINE:?}:\n{}", logs(&stack));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done_at_rotation < TASKS / 2, "the rotation comes while the job runs ({done_at_rotation} done)");
    rotate(&stack).await;

    let status = loop {
        let status = client.status(&job_id).await.expect("status through the API (the manager's pool)");
        if status.state.is_terminal() {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "the job did not end within {DEADLINE:?}: {status:?}\n{}", logs(&stack));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.state, JobState::Completed, "{status:?}\n{}", logs(&stack));
    let stage = &status.stages[0];
    assert_eq!((stage.expected, stage.done, stage.failed), (Some(TASKS), TASKS, 0), "{status:?}");

    // Every task has exactly one successful attempt on record.
    let store = PgAnalytics::connect(&stack.database.url(), 1).await.expect("analytics as the superuser");
    for task in 0..TASKS {
        let task_id = format!("{task:06}");
        let attempts = store.attempts(&job_id, 0, &task_id).await.expect("attempts");
        let succeeded = attempts.iter().filter(|a| a.outcome == AttemptOutcome::Succeeded).count();
        assert_eq!(succeeded, 1, "task {task_id}: {attempts:?}");
    }

    // The rotation path ran in the manager and in both workers, and no password was logged.
    for name in ["manager", "worker-0", "worker-1"] {
        let log = stack.read_log(name);
        assert!(log.contains(REFRESHED), "{name} re-read its credentials:\n{log}");
        for password in [FIRST_PASSWORD, SECOND_PASSWORD] {
            assert!(!log.contains(password), "{name} logged a password:\n{log}");
        }
    }
    eprintln!("rotation test: {:?} from the stack being up to the asserts", started.elapsed());
    tokio::task::spawn_blocking(move || drop(stack)).await.expect("stop");
}

/// Changes the grid login's password in PostgreSQL, then in Secrets Manager, and ends the grid's
/// sessions.
async fn rotate(stack: &LocalStack) {
    let alter = format!("ALTER ROLE {GRID_USER} PASSWORD '{}'", SECOND_PASSWORD.replace('\'', "''"));
    let arn = stack.secret_arn.as_deref().expect("the stack keeps its credentials in a secret");
    let (host, port) = stack.database.address();
    let secret = serde_json::json!({
        "username": GRID_USER, "password": SECOND_PASSWORD, "host": host, "port": port, "dbname": stack.database.name(),
    });
    // Sessions opened before a password change stay open, in PostgreSQL as on RDS; a pool
    // replaces them over time (idle timeout, maximum lifetime) and every replacement has to
    // authenticate anew. Ending them all here stands in for that recycling, at once.
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{GRID_USER}' AND pid <> pg_backend_pid()"
    );
    let database = &stack.database;
    tokio::task::block_in_place(|| database.execute(&[&alter])).expect("change the password");
    secrets_client(&stack.moto)
        .await
        .put_secret_value()
        .secret_id(arn)
        .secret_string(secret.to_string())
        .send()
        .await
        .expect("put the new password in the secret");
    tokio::task::block_in_place(|| database.execute(&[&terminate])).expect("end the grid's sessions");
}

/// The processes' logs, for failure messages.
fn logs(stack: &LocalStack) -> String {
    ["manager", "worker-0", "worker-1"]
        .iter()
        .map(|name| format!("--- {name} ---\n{}", stack.read_log(name)))
        .collect::<Vec<_>>()
        .join("\n")
}
