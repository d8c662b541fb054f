//! The dashboard over HTTP on the embedded grid: every page and action refuses a caller
//! without the token (the login page for a browser, 401 otherwise); the login form sets an
//! HttpOnly, SameSite=Strict cookie that does not hold the token; pages show the job, its
//! charts, its stragglers and its failures, escaped; an action without its session's CSRF token gets 403.

use std::sync::Arc;
use std::time::Duration;

use batchgrid_core::analytics::{
    AttemptOutcome, AttemptRecord, GridSample, JobRecord, JobState, RunningTask, StageRecord, WorkerRecord,
};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::metering::ComputePrice;
use batchgrid_core::scaling::{GroupError, InstanceList, InstanceView};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::{InputPolicy, StageKind};
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};

const TOKEN: &str = "dashboard-test-token";

fn attempt(task: &str, ended_at: i64, outcome: AttemptOutcome, error: Option<&str>) -> AttemptRecord {
    AttemptRecord {
        job_id: "claims-1".into(),
        stage: 0,
        task_id: task.into(),
        attempt: 1,
        worker_id: "w1".into(),
        started_at: ended_at - 300,
        ended_at,
        outcome,
        exit_status: Some(if outcome == AttemptOutcome::Succeeded { 0 } else { 1 }),
        bytes_in: 0,
        bytes_out: 0,
        error: error.map(str::to_owned),
    }
}

/// A grid with one running job: three tasks done, one failed with an error holding markup.
async fn seeded(state: &std::path::Path) -> Grid {
    let grid = Grid::open_embedded(state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let now = batchgrid_core::db::now_millis();
    let job = JobRecord {
        id: "claims-1".into(),
        name: "claims-<b>monthly</b>".into(),
        state: JobState::Submitted,
        spec: "{}".into(),
        submitted_at: now - 10_000,
        started_at: None,
        finished_at: None,
        error: None,
    };
    let stages = [StageRecord { stage: 0, name: "validate".into(), kind: StageKind::Map }];
    grid.analytics.create_job(&job, &stages).await.expect("job");
    grid.analytics.transition("claims-1", JobState::Running, None, "manager").await.expect("running");
    grid.analytics.set_stage_expected("claims-1", 0, 10).await.expect("expected");
    grid.analytics
        .record_attempts(&[
            attempt("t1", now - 3_000, AttemptOutcome::Succeeded, None),
            attempt("t2", now - 2_000, AttemptOutcome::Succeeded, None),
            attempt("t3", now - 1_000, AttemptOutcome::Succeeded, None),
            attempt("t4", now - 500, AttemptOutcome::Failed, Some("line 1\n<script>alert(1)</script> exit 3")),
        ])
        .await
        .expect("attempts");
    grid.tasks.send_batch(&["a".to_owned(), "b".to_owned()]).await.expect("send");
    grid.analytics
        .upsert_worker(&WorkerRecord {
            id: "worker-7".into(),
            host: "h".into(),
            pid: 1,
            started_at: now - 20_000,
            last_seen: now,
            state: "running".into(),
            tasks_done: 3,
            tasks_failed: 1,
            current_tasks: 2,
            running: Vec::new(),
        })
        .await
        .expect("worker");
    grid
}

/// A worker group of one instance, running worker-7's host.
struct OneInstance;

#[async_trait::async_trait]
impl InstanceList for OneInstance {
    async fn instances(&self) -> Result<Vec<InstanceView>, GroupError> {
        Ok(vec![InstanceView {
            id: "worker".into(),
            instance_type: "m7g.xlarge".into(),
            lifecycle: "InService".into(),
            health: "Healthy".into(),
            protected: true,
        }])
    }
}

struct Dashboard {
    base: String,
    http: reqwest::Client,
    service: std::sync::Arc<JobService>,
    _dir: tempfile::TempDir,
}

async fn start() -> Dashboard {
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state");
    let grid = seeded(&state).await;
    let price = ComputePrice { instance_type: "m7g.xlarge".into(), hourly_usd: 0.1632, tasks_per_instance: 4 };
    let manager = Manager::new(grid, spool_dir(&state)).with_compute_price(price).with_instances(Arc::new(OneInstance));
    let service = JobService::new(manager, Duration::from_millis(100), dir.path().to_path_buf(), InputPolicy::Operator);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(api::serve(listener, service.clone(), Secret::new(TOKEN.to_owned()), std::future::pending()));
    // Redirects are what is under test: never followed.
    let http = batchgrid_core::aws::https::builder()
        .expect("TLS")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    Dashboard { base, http, service, _dir: dir }
}

impl Dashboard {
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base)).header(ACCEPT, "text/html");
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request")
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &str) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(ACCEPT, "text/html")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request")
    }

    /// Logs in; returns the `name=value` cookie.
    async fn login(&self) -> String {
        let response = self.post("/ui/login", None, &format!("token={TOKEN}")).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()[LOCATION], "/ui/jobs");
        let set = response.headers()[SET_COOKIE].to_str().expect("ascii").to_owned();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(!set.contains(TOKEN), "the cookie must not hold the token: {set}");
        set.split(';').next().expect("pair").to_owned()
    }

    async fn job_state(&self) -> JobState {
        self.service.status("claims-1").await.expect("status").state
    }
}

/// The value of the first `name="csrf"` hidden input on a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("value").to_owned()
}

const PAGES: [&str; 6] =
    ["/ui", "/ui/jobs", "/ui/jobs?state=running", "/ui/jobs/claims-1", "/ui/jobs/claims-1/cancel", "/ui/grid"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_action_wants_the_token() {
    let dashboard = start().await;
    let downloads = ["/ui/jobs/claims-1/results/totals.csv", "/ui/jobs/claims-1/logs/validate/t4/stderr"];
    for path in PAGES.iter().chain(&downloads) {
        let browser = dashboard.get(path, None).await;
        assert_eq!(browser.status(), 303, "{path}");
        assert_eq!(browser.headers()[LOCATION], "/ui/login", "{path}");
        let script = dashboard.http.get(format!("{}{path}", dashboard.base)).send().await.expect("request");
        assert_eq!(script.status(), 401, "{path}");
        let forged = dashboard.get(path, Some("batchgrid_session=9999999999.00.00")).await;
        assert_eq!(forged.status(), 303, "a forged cookie is no session: {path}");
        let wrong = dashboard.http.get(format!("{}{path}", dashboard.base)).bearer_auth("guess").send().await;
        assert_eq!(wrong.expect("request").status(), 401, "{path}");
    }
    for action in ["/ui/jobs/claims-1/cancel", "/ui/jobs/claims-1/pause", "/ui/jobs/claims-1/retry", "/ui/logout"] {
        assert_eq!(dashboard.post(action, None, "csrf=x").await.status(), 401, "{action}");
    }
    assert_eq!(dashboard.job_state().await, JobState::Running);
    // The login page and its stylesheet are open; a wrong token is refused there.
    assert_eq!(dashboard.get("/ui/login", None).await.status(), 200);
    assert_eq!(dashboard.get("/ui/style.css", None).await.status(), 200);
    let wrong = dashboard.post("/ui/login", None, "token=guess").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_the_grid_escaped_and_behind_a_content_policy() {
    let dashboard = start().await;
    let cookie = dashboard.login().await;
    for path in PAGES {
        let response = dashboard.get(path, Some(&cookie)).await;
        assert!(response.status() == 200 || (path == "/ui" && response.status() == 303), "{path}");
        let policy = response.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
        assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    }
    let jobs = dashboard.get("/ui/jobs", Some(&cookie)).await.text().await.expect("body");
    assert!(jobs.contains("claims-&lt;b&gt;monthly&lt;/b&gt;"), "the name, escaped: {jobs}");
    assert!(!jobs.contains("<b>monthly"), "{jobs}");
    assert!(jobs.contains("data-done=\"3\"") && jobs.contains("3 / 10"), "{jobs}");
    assert!(jobs.contains("http-equiv=\"refresh\""), "a running job's list refreshes itself");
    let filtered = dashboard.get("/ui/jobs?state=completed", Some(&cookie)).await.text().await.expect("body");
    assert!(!filtered.contains("claims-1") && filtered.contains("No jobs match"), "{filtered}");
    let by_name = dashboard.get("/ui/jobs?state=&name=MONTHLY", Some(&cookie)).await.text().await.expect("body");
    assert!(by_name.contains("claims-1"), "{by_name}");
    let other = dashboard.get("/ui/jobs?name=nightly", Some(&cookie)).await.text().await.expect("body");
    assert!(!other.contains("data-job="), "{other}");

    let job = dashboard.get("/ui/jobs/claims-1", Some(&cookie)).await.text().await.expect("body");
    assert!(job.contains("data-tasks=\"3\""), "tasks over time from three completions: {job}");
    assert!(job.contains("<rect class=\"bar\""), "a histogram: {job}");
    assert!(job.contains("&lt;script&gt;alert(1)&lt;/script&gt; exit 3"), "the failure's tail, escaped: {job}");
    assert!(!job.contains("<script>"), "{job}");
    assert!(job.contains("validate") && job.contains("p50 "), "{job}");
    assert!(job.contains("$0.00 (0.0 task-h)") && job.contains("m7g.xlarge"), "cost so far, priced: {job}");
    assert!(jobs.contains("$0.00 (0.0 task-h)"), "cost so far in the list: {jobs}");
    assert!(job.contains("href=\"/ui/jobs/claims-1/logs/validate/t4/stderr\""), "the failure's output: {job}");
    let no_log = dashboard.get("/ui/jobs/claims-1/logs/validate/t4/stderr", Some(&cookie)).await;
    assert_eq!(no_log.status(), 404, "a task that captured nothing has no log");
    assert!(job.contains("running") && job.contains("/ui/jobs/claims-1/cancel"), "history and the cancel link");
    // The grid over time: two samples draw each series; a schedule shows its next fire times.
    let now = batchgrid_core::db::now_millis();
    for (at, visible) in [(now - 60_000, 7), (now - 30_000, 3)] {
        let sample = GridSample { at, visible, in_flight: 1, dead: 0, workers: 1, tasks_held: 2 };
        dashboard.service.manager().grid().analytics.record_grid_sample(&sample, 0).await.expect("sample");
    }
    let schedule =
        "name: month-end\ninput:\n  path: \"{period}.csv\"\nstages:\n  - name: copy\n    command: [cat, \"{input}\"]\n\
                    output:\n  path: out/{period}\nschedule:\n  cron: 0 2 L * *\n  tz: Europe/Paris\n";
    let utc_now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    dashboard.service.add_schedule(schedule, "month-end.yaml", utc_now).await.expect("schedule");
    let grid = dashboard.get("/ui/grid", Some(&cookie)).await.text().await.expect("body");
    assert!(grid.contains("worker-7") && grid.contains("<td>running</td><td>2</td>"), "state, current tasks: {grid}");
    assert!(grid.contains("<td>input</td><td>2</td>"), "the input queue's depth: {grid}");
    let queue_chart = grid.split("id=\"queue-over-time\"").nth(1).unwrap_or_default();
    assert_eq!(
        queue_chart.split("</figure>").next().unwrap_or_default().matches("data-points=\"2\"").count(),
        3,
        "visible, in flight, dead: {grid}"
    );
    assert!(grid.contains("id=\"workers-over-time\""), "{grid}");
    assert!(
        grid.contains("month-end") && grid.contains("0 2 L * *") && grid.contains("Europe/Paris"),
        "the schedule: {grid}"
    );
    assert!(grid.contains("none yet"), "no run yet: {grid}");
    let instances = grid.split("id=\"instances\"").nth(1).unwrap_or_default();
    assert!(
        instances.contains("m7g.xlarge") && instances.contains("InService") && instances.contains("yes (busy)"),
        "{grid}"
    );
    assert!(instances.contains("worker-7 (running)"), "the instance's worker: {grid}");
    assert_eq!(dashboard.get("/ui/jobs/nope", Some(&cookie)).await.status(), 404);

    // The bearer header opens the pages too, for scripts and proxies that hold the token.
    let bearer = dashboard.http.get(format!("{}/ui/jobs", dashboard.base)).bearer_auth(TOKEN).send().await;
    assert_eq!(bearer.expect("request").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_sessions_csrf_token_and_logout_ends_the_session() {
    let dashboard = start().await;
    let cookie = dashboard.login().await;
    let other = dashboard.login().await;
    let confirm = dashboard.get("/ui/jobs/claims-1/cancel", Some(&cookie)).await.text().await.expect("body");
    let csrf = csrf_of(&confirm);
    let other_csrf = csrf_of(&dashboard.get("/ui/jobs", Some(&other)).await.text().await.expect("body"));
    assert_ne!(csrf, other_csrf, "one token per session");

    for form in ["", "csrf=", "csrf=0000", &format!("csrf={other_csrf}")] {
        let refused = dashboard.post("/ui/jobs/claims-1/cancel", Some(&cookie), form).await;
        assert_eq!(refused.status(), 403, "{form:?}");
    }
    let no_form = dashboard
        .http
        .post(format!("{}/ui/jobs/claims-1/cancel", dashboard.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(no_form.status(), 403, "no body, no token");
    assert_eq!(dashboard.job_state().await, JobState::Running, "nothing refused was done");

    // Pause and resume, each behind its confirmation and the same token.
    assert_eq!(dashboard.post("/ui/jobs/claims-1/pause", Some(&cookie), "").await.status(), 403);
    let job_page = dashboard.get("/ui/jobs/claims-1", Some(&cookie)).await.text().await.expect("body");
    assert!(job_page.contains("/ui/jobs/claims-1/pause") && !job_page.contains("/ui/jobs/claims-1/resume"));
    let confirm_pause = dashboard.get("/ui/jobs/claims-1/pause", Some(&cookie)).await.text().await.expect("body");
    assert!(confirm_pause.contains("action=\"/ui/jobs/claims-1/pause\""), "{confirm_pause}");
    let paused = dashboard.post("/ui/jobs/claims-1/pause", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(paused.status(), 303);
    assert!(dashboard.service.status("claims-1").await.expect("status").paused);
    let job_page = dashboard.get("/ui/jobs/claims-1", Some(&cookie)).await.text().await.expect("body");
    assert!(job_page.contains("id=\"paused\"") && job_page.contains("/ui/jobs/claims-1/resume"), "{job_page}");
    let resumed = dashboard.post("/ui/jobs/claims-1/resume", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(resumed.status(), 303);
    assert!(!dashboard.service.status("claims-1").await.expect("status").paused);
    assert_eq!(dashboard.get("/ui/jobs/claims-1/explode", Some(&cookie)).await.status(), 404);

    let done = dashboard.post("/ui/jobs/claims-1/cancel", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(done.status(), 303);
    assert_eq!(dashboard.job_state().await, JobState::Cancelled);
    let history = dashboard.service.history("claims-1").await.expect("history");
    assert_eq!(history.last().map(|h| h.actor.as_str()), Some("operator"));

    assert_eq!(dashboard.post("/ui/logout", Some(&cookie), "").await.status(), 403, "logout wants the token too");
    let out = dashboard.post("/ui/logout", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(out.status(), 303);
    assert!(out.headers()[SET_COOKIE].to_str().expect("ascii").contains("Max-Age=0"));
    assert_eq!(dashboard.get("/ui/jobs", Some(&cookie)).await.status(), 303, "the old cookie opens nothing");
    assert_eq!(dashboard.get("/ui/jobs", Some(&other)).await.status(), 200, "other sessions live on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_far_past_its_stages_p99_is_listed_as_a_straggler() {
    let dashboard = start().await;
    let cookie = dashboard.login().await;
    let analytics = &dashboard.service.manager().grid().analytics;
    let now = batchgrid_core::db::now_millis();
    // Enough done tasks (300 ms each) for the stage's p99 to count.
    let done: Vec<AttemptRecord> =
        (0..25).map(|n| attempt(&format!("d{n}"), now - 5_000 + n, AttemptOutcome::Succeeded, None)).collect();
    analytics.record_attempts(&done).await.expect("attempts");
    let running = |task: &str, started_at: i64| RunningTask {
        job_id: "claims-1".into(),
        stage: 0,
        task_id: task.into(),
        started_at,
    };
    analytics
        .upsert_worker(&WorkerRecord {
            id: "worker-<i>8</i>".into(),
            host: "h".into(),
            pid: 2,
            started_at: now - 600_000,
            last_seen: now,
            state: "running".into(),
            tasks_done: 25,
            tasks_failed: 0,
            current_tasks: 2,
            // One started ten minutes ago, one just now (not a straggler).
            running: vec![running("<slow>", now - 600_000), running("quick", now - 10)],
        })
        .await
        .expect("worker");

    let job = dashboard.get("/ui/jobs/claims-1", Some(&cookie)).await.text().await.expect("body");
    let at = job.find("<table id=\"stragglers\">").unwrap_or_else(|| panic!("a stragglers table: {job}"));
    let table = &job[at..at + job[at..].find("</table>").expect("table end")];
    assert!(table.contains("<td>&lt;slow&gt;</td>"), "the task, escaped: {table}");
    assert!(table.contains("<td>worker-&lt;i&gt;8&lt;/i&gt;</td>"), "its worker, escaped: {table}");
    assert!(table.contains("<td>validate</td>") && table.contains("×"), "stage and ratio: {table}");
    assert!(!table.contains("quick"), "a task running less than 2× the p99 is no straggler: {table}");
    assert!(!job.contains("<slow>") && !job.contains("<i>8"), "{job}");

    let grid = dashboard.get("/ui/grid", Some(&cookie)).await.text().await.expect("body");
    assert!(grid.contains("stage 0 / &lt;slow&gt;"), "the grid page lists what each worker runs: {grid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_done_tasks_show_no_stragglers() {
    let dashboard = start().await;
    let cookie = dashboard.login().await;
    let now = batchgrid_core::db::now_millis();
    dashboard
        .service
        .manager()
        .grid()
        .analytics
        .upsert_worker(&WorkerRecord {
            id: "worker-9".into(),
            host: "h".into(),
            pid: 3,
            started_at: now - 600_000,
            last_seen: now,
            state: "running".into(),
            tasks_done: 0,
            tasks_failed: 0,
            current_tasks: 1,
            running: vec![RunningTask {
                job_id: "claims-1".into(),
                stage: 0,
                task_id: "t9".into(),
                started_at: now - 600_000,
            }],
        })
        .await
        .expect("worker");
    let job = dashboard.get("/ui/jobs/claims-1", Some(&cookie)).await.text().await.expect("body");
    assert!(job.contains("<p id=\"stragglers\">None.</p>"), "three done tasks are too few for a p99: {job}");
}
