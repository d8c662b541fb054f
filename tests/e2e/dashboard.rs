//! The dashboard in a real browser: headless Chromium (the Debian package; `make tools`
//! installs it) driven through its DevTools protocol over `--remote-debugging-pipe`, which
//! needs no WebSocket client and no open port, against `batchgrid run --dashboard` of a running
//! job. It logs in through the form, sees the job listed and its progress advance, opens the
//! job and checks that its chart was drawn from data. With BATCHGRID_SCREENSHOTS=DIR it also
//! saves the pages as PNG (`make screenshots` writes the README's into docs/).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{batchgrid, write_lines};

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "dashboard-e2e-token";
/// How long any one wait in the browser may take.
const WAIT: Duration = Duration::from_secs(40);

/// A headless Chromium spoken to over its DevTools pipe: commands go in on its fd 3, answers
/// and events come out on its fd 4, each a JSON message ending in a NUL byte.
struct Browser {
    child: Child,
    input: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: `make tools` installs it (apt-get install chromium)"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        // The shell hands the pipes to Chromium as fds 3 and 4 (what --remote-debugging-pipe
        // reads and writes) and keeps its own stdout away from the protocol.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let input = child.stdin.take().expect("stdin");
        let mut output = child.stdout.take().expect("stdout");
        let (sender, messages) = channel();
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(read) = output.read(&mut chunk) {
                if read == 0 {
                    return;
                }
                buffer.extend_from_slice(&chunk[..read]);
                while let Some(end) = buffer.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = buffer.drain(..=end).collect();
                    if let Ok(value) = serde_json::from_slice::<Value>(&message[..end]) {
                        if sender.send(value).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser { child, input, messages, next_id: 0, session: String::new(), _profile: profile };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }), false).expect("target");
        let target_id = target["targetId"].as_str().expect("target id").to_owned();
        let attached = browser
            .call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }), false)
            .expect("attach");
        browser.session = attached["sessionId"].as_str().expect("session id").to_owned();
        browser.call("Page.enable", json!({}), true).expect("page domain");
        browser
    }

    /// Sends one command (to the page's session when `in_page`) and returns its result, or
    /// its error message.
    fn call(&mut self, method: &str, params: Value, in_page: bool) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if in_page {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("encode");
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.messages.recv_timeout(left).map_err(|_| format!("no answer to {method}"))?;
            if answer["id"].as_u64() == Some(id) {
                return match answer.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// The value of a JavaScript expression in the page (an error while the page reloads).
    fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }), true)?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(exception.to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `expression` until `accept` takes its value, and returns it.
    fn wait_for(&mut self, what: &str, expression: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(value) = self.eval(expression) {
                if accept(&value) {
                    return value;
                }
                last = value;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("waited {WAIT:?} for {what}; last value {last}");
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }), true).expect("navigate");
    }

    /// Waits for a loaded page at `path` (or under it, for a path ending in `/`).
    fn wait_for_page(&mut self, path: &str) {
        let expression = "document.readyState === 'complete' ? location.pathname : ''";
        let path = path.to_owned();
        self.wait_for(&format!("the page {path}"), expression, |value| {
            let at = value.as_str().unwrap_or("");
            if path.ends_with('/') {
                at.starts_with(&path) && at.len() > path.len()
            } else {
                at == path
            }
        });
    }

    /// Saves the page as a PNG into `dir/name` when `dir` is given.
    fn screenshot(&mut self, dir: Option<&Path>, name: &str) {
        let Some(dir) = dir else { return };
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true }), true)
            .expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        std::fs::create_dir_all(dir).expect("screenshot dir");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `batchgrid run --dashboard` of a slow job, and the dashboard's base URL.
struct Run {
    child: Child,
    base: String,
}

impl Drop for Run {
    /// Stops the run as Ctrl-C would (it cancels the job and stops its workers), and kills it
    /// only if it does not stop.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_run(dir: &Path, tasks: usize) -> Run {
    write_lines(&dir.join("input.txt"), tasks);
    let job = format!(
        "name: dashboard-demo\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: \
         [sh, -c, 'sleep 0.4; cp \"$0\" \"$1/\"', \"{{input}}\", \"{{output}}\"]\noutput:\n  path: {output}\n",
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
    );
    let job_path = dir.join("job.yaml");
    std::fs::write(&job_path, job).expect("write job");
    let mut child = batchgrid()
        .env("BATCHGRID_API_TOKEN", TOKEN)
        .arg("run")
        .arg(&job_path)
        .args(["--json", "--workers", "1", "--concurrency", "2", "--dashboard", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run batchgrid");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, address) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("dashboard: ") {
                let _ = sender.send(url.trim_end_matches("/ui/").to_owned());
            }
        }
    });
    let base = address.recv_timeout(WAIT).expect("the run printed its dashboard's address");
    Run { child, base }
}

#[test]
fn a_browser_logs_in_and_watches_a_running_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let screenshots: Option<PathBuf> = std::env::var_os("BATCHGRID_SCREENSHOTS").map(PathBuf::from);
    let run = start_run(dir.path(), 120);
    let mut browser = Browser::start();

    // Without a session the dashboard sends the browser to the login form.
    browser.open(&format!("{}/ui/jobs", run.base));
    browser.wait_for_page("/ui/login");
    browser.screenshot(screenshots.as_deref(), "dashboard-login.png");
    browser
        .eval(&format!(
            "document.querySelector('#token').value = '{TOKEN}'; document.querySelector('form.login').submit(); true"
        ))
        .expect("log in");
    browser.wait_for_page("/ui/jobs");

    // The job is listed, and its progress advances as the page refreshes itself.
    let done = "(() => { const row = document.querySelector('tr.job'); \
                return row ? Number(row.dataset.done) : -1 })()";
    let first = browser.wait_for("the job in the list", done, |v| v.as_i64().is_some_and(|n| n >= 1));
    let first = first.as_i64().unwrap_or(0);
    browser.wait_for("the progress to advance", done, |v| v.as_i64().is_some_and(|n| n > first));
    let name = browser.eval("document.querySelector('tr.job a').textContent").expect("name");
    assert_eq!(name, "dashboard-demo");
    browser.screenshot(screenshots.as_deref(), "dashboard-jobs.png");

    // The job's page: its chart is a line through the completions recorded so far.
    browser.eval("document.querySelector('tr.job a').click(); true").expect("open the job");
    browser.wait_for_page("/ui/jobs/");
    let chart = "(() => { const line = document.querySelector('#done-over-time svg path.line'); \
                 if (!line) return null; const box = line.getBBox(); \
                 return { tasks: Number(line.dataset.tasks), segments: line.getAttribute('d').split(' L').length, \
                          width: box.width, height: box.height } })()";
    let drawn = browser.wait_for("a drawn chart", chart, |v| v["tasks"].as_u64().is_some_and(|n| n >= 2));
    assert!(drawn["segments"].as_u64().unwrap_or(0) >= 3, "a line through the points: {drawn}");
    assert!(drawn["width"].as_f64().unwrap_or(0.0) > 10.0, "drawn with a width: {drawn}");
    let bars = browser.eval("document.querySelectorAll('#task-times svg rect.bar').length").expect("bars");
    assert!(bars.as_u64().is_some_and(|n| n >= 1), "the task-time histogram has bars: {bars}");
    let state = browser.eval("document.querySelector('#state').textContent").expect("state");
    assert_eq!(state, "running");
    browser.screenshot(screenshots.as_deref(), "dashboard-job.png");

    browser.open(&format!("{}/ui/grid", run.base));
    browser.wait_for_page("/ui/grid");
    let workers = browser.eval("document.querySelectorAll('#workers tbody tr').length").expect("workers");
    assert!(workers.as_u64().is_some_and(|n| n >= 1), "{workers}");
    browser.screenshot(screenshots.as_deref(), "dashboard-grid.png");
    drop(run);
}
