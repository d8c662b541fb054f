//! The image as its component builds it, proven here without EC2 Image Builder: the shipped
//! packaging files are installed into a throwaway root the way the component installs them,
//! `systemd-sysusers --root` creates the units' user there, and `systemd-analyze --root verify`
//! checks both units against that root (with a stand-in executable at the binary's path). The
//! component's own shell steps and the install commands this test mirrors are checked too.
//!
//! Needs `systemd-sysusers`, `systemd-analyze` and `shellcheck`; `make test` installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use batchgrid_provision::{environment, image};

/// Where the units' user lives, as the units say (StateDirectory=batchgrid).
const STATE_DIR: &str = "/var/lib/batchgrid";
/// The component's install commands this test mirrors; checked against the rendered component.
const INSTALL_COMMANDS: [&str; 5] = [
    "install -m 0755 /tmp/batchgrid-artifacts/batchgrid /usr/local/bin/batchgrid",
    r#"for unit in /tmp/batchgrid-artifacts/systemd/*.service; do install -m 0644 "$unit" /etc/systemd/system/; done"#,
    "install -D -m 0644 /tmp/batchgrid-artifacts/sysusers.d/batchgrid.conf /usr/lib/sysusers.d/batchgrid.conf",
    "systemd-sysusers /usr/lib/sysusers.d/batchgrid.conf",
    "install -m 0600 /tmp/batchgrid-artifacts/nftables/batchgrid-task.nft /etc/batchgrid/task-firewall.nft",
];
/// The user job tasks run as, and where the image installs the rule that keeps it from the
/// instance metadata service.
const TASK_USER: &str = "batchgrid-task";
const TASK_FIREWALL: &str = "/etc/batchgrid/task-firewall.nft";

fn project() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Runs a tool the test needs; a missing tool fails with how to install it.
fn run(tool: &str, package: &str, args: &[&str]) -> Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install it with `apt-get install -y {package}` (make test does)")
    })
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(project().join("packaging/systemd"))
        .expect("packaging/systemd")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

/// A root holding what the component installs: the stand-in binary, the units, the sysusers
/// file, then the user `systemd-sysusers` creates from it. The distribution's own units
/// (targets the batchgrid units order against) come from this machine, as on the image they
/// come with Amazon Linux.
fn install_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let at = |path: &str| root.path().join(path.trim_start_matches('/'));
    for dir in
        ["etc/systemd/system", "etc/batchgrid", "usr/local/bin", "usr/sbin", "usr/lib/sysusers.d", "usr/lib/systemd"]
    {
        std::fs::create_dir_all(at(dir)).expect("mkdir");
    }
    // Stand-ins for the binary and for nft (which Amazon Linux's nftables package installs).
    for binary in ["/usr/local/bin/batchgrid", "/usr/sbin/nft"] {
        std::fs::write(at(binary), "#!/bin/sh\nexit 0\n").expect("stand-in binary");
        set_mode(&at(binary), 0o755);
    }
    std::fs::copy(project().join("packaging").join(image::names::TASK_FIREWALL), at(TASK_FIREWALL)).expect("rule");
    for unit in units() {
        std::fs::copy(&unit, at("/etc/systemd/system").join(unit.file_name().expect("name"))).expect("unit");
    }
    std::fs::copy(project().join("packaging").join(image::names::SYSUSERS), at("/usr/lib/sysusers.d/batchgrid.conf"))
        .expect("sysusers file");
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|dir| dir.join("multi-user.target").exists())
        .expect("this machine's systemd units (multi-user.target): install systemd (make test does)");
    copy_dir(system_units, &at("/usr/lib/systemd/system"));
    // As the component runs it, on the installed file (a file named on the command line is
    // read as given, not under --root).
    let installed = at("/usr/lib/sysusers.d/batchgrid.conf");
    let created = run(
        "systemd-sysusers",
        "systemd",
        &[&format!("--root={}", root.path().display()), &installed.display().to_string()],
    );
    assert!(created.status.success(), "systemd-sysusers failed: {}", text(&created));
    root
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Copies a directory of unit files and symlinks (the targets' `.wants` links among them).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read units") {
        let entry = entry.expect("entry");
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(&source).expect("link");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else if kind.is_dir() {
            copy_dir(&source, &target);
        } else {
            std::fs::copy(&source, &target).expect("copy unit");
        }
    }
}

/// `systemd-analyze verify` of units installed under `root`, by their paths inside it.
fn verify(root: &Path, units: &[&str]) -> Output {
    let mut args = vec![format!("--root={}", root.display()), "verify".to_owned()];
    args.extend(units.iter().map(|unit| format!("/etc/systemd/system/{unit}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("systemd-analyze", "systemd", &args)
}

/// A line of the root's `/etc/passwd` or `/etc/group` for `name`, split at `:`.
fn entry(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(root.join("etc").join(file)).unwrap_or_default();
    text.lines().map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>()).find(|fields| fields[0] == name)
}

#[test]
fn the_units_user_exists_on_the_image_without_a_login_shell() {
    let root = install_root();
    let user = entry(root.path(), "passwd", "batchgrid").expect("batchgrid in the image's /etc/passwd");
    assert_eq!(user[5], STATE_DIR, "home at the state directory: {user:?}");
    assert!(user[6].ends_with("/nologin"), "no login shell: {user:?}");
    assert!(user[2].parse::<u32>().is_ok_and(|uid| (1..1000).contains(&uid)), "a system user: {user:?}");
    let group = entry(root.path(), "group", "batchgrid").expect("batchgrid in the image's /etc/group");
    assert_eq!(user[3], group[2], "its primary group is batchgrid");

    // Every service unit's User= and Group= exist in that root, and its state directory is the
    // home; each keeps its files to itself (UMask=0077) and its state directory closed.
    for unit in units() {
        let text = std::fs::read_to_string(&unit).expect("unit");
        let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_owned);
        let name = unit.display();
        assert_eq!(value("UMask=").as_deref(), Some("0077"), "{name}: files private to their writer");
        if unit.ends_with("batchgrid-task-firewall.service") {
            // A root oneshot loading the firewall: no user, no state.
            assert!(value("User=").is_none() && value("StateDirectory=").is_none(), "{name}");
            continue;
        }
        // The worker's may be traversed (not listed) so a task reaches its scratch slot.
        let mode = value("StateDirectoryMode=").unwrap_or_else(|| panic!("{name} sets StateDirectoryMode="));
        assert!(["0700", "0711"].contains(&mode.as_str()), "{name}: StateDirectoryMode={mode}");
        assert_eq!(value("LogsDirectoryMode=").as_deref(), Some("0750"), "{name}");
        let unit_user = value("User=").unwrap_or_else(|| panic!("{name} names its User="));
        assert!(entry(root.path(), "passwd", &unit_user).is_some(), "{name}: User={unit_user} is not created");
        let unit_group = value("Group=").unwrap_or_else(|| panic!("{name} names its Group="));
        assert!(entry(root.path(), "group", &unit_group).is_some(), "{name}: Group={unit_group} is not created");
        assert_eq!(value("StateDirectory=").map(|d| format!("/var/lib/{d}")).as_deref(), Some(STATE_DIR), "{name}");
    }
}

#[test]
fn systemd_analyze_verify_accepts_every_unit_and_rejects_a_broken_one() {
    let root = install_root();
    let names: Vec<String> =
        units().iter().map(|u| u.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["batchgrid-manager.service", "batchgrid-task-firewall.service", "batchgrid-worker.service"]);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let verified = verify(root.path(), &names);
    assert!(verified.status.success(), "systemd-analyze verify rejected the units: {}", text(&verified));
    // Warnings ("ignoring" a setting it cannot parse) pass verify; the shipped units have none.
    let said = text(&verified);
    assert!(!said.contains("batchgrid-"), "systemd-analyze verify warned about the units: {said}");

    // The check can fail: a unit with a broken command, and one whose binary is missing.
    let system = root.path().join("etc/systemd/system");
    let worker = std::fs::read_to_string(system.join("batchgrid-worker.service")).expect("worker unit");
    let broken = worker.replace("ExecStart=/usr/local/bin/batchgrid worker", "ExecStart=batchgrid/worker");
    assert_ne!(broken, worker, "the worker unit's ExecStart changed: update this test");
    std::fs::write(system.join("broken.service"), broken).expect("broken unit");
    let rejected = verify(root.path(), &["broken.service"]);
    assert!(!rejected.status.success(), "verify accepted a unit without an absolute ExecStart: {}", text(&rejected));
    std::fs::remove_file(root.path().join("usr/local/bin/batchgrid")).expect("remove the binary");
    let rejected = verify(root.path(), &["batchgrid-worker.service"]);
    assert!(!rejected.status.success(), "verify accepted a unit whose binary is missing");
    assert!(text(&rejected).contains("/usr/local/bin/batchgrid"), "{}", text(&rejected));
}

/// The rendered component's document: its steps' commands after `Fn::Sub`.
fn component_steps() -> Vec<(String, String)> {
    let env = environment::load(&project().join("environments"), "dev", &|_| None).expect("dev environment");
    let engine = image::engine(&project().join("templates")).expect("templates");
    let template = image::render_image(&engine, "dev", &env, "1.2.3", "abcdef0").expect("render");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&template).expect("YAML");
    let serde_yaml::Value::Tagged(sub) = &parsed["Resources"]["InstallComponent"]["Properties"]["Data"] else {
        panic!("the component's Data is a !Sub")
    };
    let document = sub.value[0].as_str().expect("document");
    // Fn::Sub: the parameters given with it, and `${!x}` for a literal `${x}`.
    let document = document
        .replace("${Bucket}", "deployment-bucket")
        .replace("${Version}", "1.2.3")
        .replace("${Revision}", "abcdef0")
        .replace("${!", "${");
    let component: serde_yaml::Value = serde_yaml::from_str(&document).expect("component YAML");
    let mut steps = Vec::new();
    for phase in component["phases"].as_sequence().expect("phases") {
        for step in phase["steps"].as_sequence().expect("steps") {
            let commands: Vec<&str> = step["inputs"]["commands"]
                .as_sequence()
                .expect("commands")
                .iter()
                .map(|c| c.as_str().expect("a command is a string"))
                .collect();
            let name = format!("{}/{}", phase["name"].as_str().unwrap_or("?"), step["name"].as_str().unwrap_or("?"));
            steps.push((name, commands.join("\n")));
        }
    }
    steps
}

#[test]
fn the_component_installs_as_this_test_does_and_its_steps_pass_shellcheck() {
    let steps = component_steps();
    let install = &steps.iter().find(|(name, _)| name == "build/Install").expect("build/Install step").1;
    for command in INSTALL_COMMANDS {
        assert!(install.lines().any(|l| l == command), "the component no longer runs `{command}`:\n{install}");
    }
    for (name, expected) in [
        ("validate/User", "id -u batchgrid"),
        ("validate/Units", "systemd-analyze verify"),
        ("build/DatabaseCa", image::DATABASE_CA_URL),
        ("validate/DatabaseCa", "openssl pkcs7 -print_certs"),
    ] {
        let step = &steps.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} step")).1;
        assert!(step.contains(expected), "{name}: {step}");
    }
    // Each ExecuteBash step runs as a script of its own.
    for (name, commands) in &steps {
        let script = format!("#!/bin/bash\n{commands}\n");
        let mut child = Command::new("shellcheck")
            .args(["--shell=bash", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run shellcheck ({e}): install it with `apt-get install -y shellcheck` (make test does)")
            });
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes()).expect("write");
        let output = child.wait_with_output().expect("shellcheck");
        assert!(output.status.success(), "shellcheck on the component's {name} step:\n{script}\n{}", text(&output));
    }
}

/// The tasks' user exists on the image beside the units' user: a system user of its own, no
/// login shell, no home of its own to write to, not in the units' group; the worker is in the
/// tasks' group (their scratch directories belong to it) and its unit holds exactly the three
/// capabilities it needs to run tasks as that user.
#[test]
fn the_tasks_user_exists_on_the_image_apart_from_the_workers() {
    let root = install_root();
    let task = entry(root.path(), "passwd", TASK_USER).expect("batchgrid-task in the image's /etc/passwd");
    let worker = entry(root.path(), "passwd", "batchgrid").expect("batchgrid in the image's /etc/passwd");
    assert!(task[2].parse::<u32>().is_ok_and(|uid| (1..1000).contains(&uid)), "a system user: {task:?}");
    assert_ne!(task[2], worker[2], "not the worker's uid");
    assert_ne!(task[3], worker[3], "not the worker's group");
    assert!(task[6].ends_with("/nologin"), "no login shell: {task:?}");
    assert_eq!(task[5], "/", "no home of its own: {task:?}");
    let group = entry(root.path(), "group", "batchgrid").expect("batchgrid group");
    assert!(!group.get(3).is_some_and(|members| members.split(',').any(|m| m == TASK_USER)), "{group:?}");
    let tasks_group = entry(root.path(), "group", TASK_USER).expect("batchgrid-task group");
    assert!(
        tasks_group.get(3).is_some_and(|members| members.split(',').any(|m| m == "batchgrid")),
        "the worker's user is in the tasks' group: {tasks_group:?}"
    );

    // The worker's unit will not start without the rule's unit, nor before it.
    let worker_unit =
        std::fs::read_to_string(project().join("packaging/systemd/batchgrid-worker.service")).expect("unit");
    for line in [
        "Requires=batchgrid-task-firewall.service",
        "After=batchgrid-task-firewall.service",
        "AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL",
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_KILL",
        "NoNewPrivileges=true",
    ] {
        assert!(worker_unit.lines().any(|l| l == line), "the worker unit lacks `{line}`");
    }
    let firewall_unit =
        std::fs::read_to_string(project().join("packaging/systemd/batchgrid-task-firewall.service")).expect("unit");
    assert!(firewall_unit.contains(&format!("ExecStart=/usr/sbin/nft -f {TASK_FIREWALL}")), "{firewall_unit}");
}

/// The shipped rule, loaded for real into a throwaway network namespace (so this machine's own
/// rules are untouched): nft accepts it, twice (a reload is idempotent), and it does what it
/// says. The image's user does not exist here, so the rule is loaded with `nobody` in its
/// place, the same shape; a listener on 169.254.169.254 on that namespace's loopback stands
/// in for the metadata service. root connects; `nobody` is refused at once.
#[test]
fn the_task_firewall_refuses_the_metadata_address_to_the_tasks_user_only() {
    let shipped = std::fs::read_to_string(project().join("packaging").join(image::names::TASK_FIREWALL)).expect("rule");
    let quoted = format!("\"{TASK_USER}\"");
    assert_eq!(
        shipped.matches(&quoted).count(),
        4,
        "every rule matches the tasks' user (IPv4 and IPv6, TCP and the rest)"
    );
    for address in ["ip daddr 169.254.169.254", "ip6 daddr fd00:ec2::254"] {
        assert!(shipped.contains(address), "the rule covers {address}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let rule = dir.path().join("rule.nft");
    std::fs::write(&rule, shipped.replace(&quoted, "\"nobody\"")).expect("write rule");

    let checked = run("nft", "nftables", &["-c", "-f", &rule.display().to_string()]);
    assert!(checked.status.success(), "nft -c rejected the rule: {}", text(&checked));

    let script = format!(
        r#"set -eu
nft -f {rule}
nft -f {rule}
test "$(nft list tables | grep -c batchgrid_task)" = 1
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
python3 -c 'import socket, time; s = socket.socket(); s.bind(("169.254.169.254", 80)); s.listen(); time.sleep(5)' &
for _ in $(seq 50); do (exec 3<>/dev/tcp/169.254.169.254/80) 2>/dev/null && break; sleep 0.1; done
(exec 3<>/dev/tcp/169.254.169.254/80) && echo "root: connected"
if setpriv --reuid=nobody --regid=nogroup --clear-groups bash -c 'exec 3<>/dev/tcp/169.254.169.254/80' 2>/dev/null; then
  echo "nobody: connected"
else
  echo "nobody: refused"
fi
kill %1
"#,
        rule = rule.display()
    );
    let output = run("unshare", "util-linux", &["--net", "bash", "-c", &script]);
    let said = text(&output);
    assert!(
        output.status.success(),
        "the rule could not be loaded in a network namespace (this test needs root, as `make test` runs it): {said}"
    );
    assert!(said.contains("root: connected"), "the worker's side must still reach the address: {said}");
    assert!(said.contains("nobody: refused"), "the tasks' user reached the metadata address: {said}");
}

/// The value `packaging/defaults.env` gives `key`.
fn default_setting(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(project().join("packaging").join(image::names::CONFIG)).expect("defaults.env");
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned)
}

/// Runs the component's validate/DatabaseCa step on `bundle` instead of the image's path.
fn check_bundle(step: &str, bundle: &Path) -> Output {
    let script = step.replace(image::DATABASE_CA_BUNDLE, &bundle.display().to_string());
    assert_ne!(script, step, "the step checks {}", image::DATABASE_CA_BUNDLE);
    run("bash", "bash", &["-c", &script])
}

/// The RDS bundle: the component downloads it from AWS's address to the very path the
/// defaults point the runtime at (with verify-full), and its validate step, run here on
/// stand-in files, accepts a PEM bundle of certificates and refuses anything else.
#[test]
fn the_rds_bundle_lands_where_the_defaults_point_and_its_check_can_fail() {
    assert_eq!(default_setting("BATCHGRID_DATABASE_SSLMODE").as_deref(), Some("verify-full"));
    assert_eq!(default_setting("BATCHGRID_DATABASE_SSLROOTCERT").as_deref(), Some(image::DATABASE_CA_BUNDLE));
    let steps = component_steps();
    let step = |name: &str| steps.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} step")).1.clone();
    let download = step("build/DatabaseCa");
    assert!(download.contains(&format!("--output /tmp/rds-ca.pem {}", image::DATABASE_CA_URL)), "{download}");
    assert!(
        download.contains("--fail") && download.contains("--proto '=https'"),
        "HTTPS only, errors fail: {download}"
    );
    let install = format!("install -m 0644 /tmp/rds-ca.pem {}", image::DATABASE_CA_BUNDLE);
    assert!(download.lines().any(|l| l == install), "{download}");
    // Installed after /etc/batchgrid exists (the Install step makes it).
    let order: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    let position = |name: &str| order.iter().position(|n| *n == name).unwrap_or_else(|| panic!("{name}"));
    assert!(position("build/Install") < position("build/DatabaseCa"), "{order:?}");

    let validate = step("validate/DatabaseCa");
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) =
        (batchgrid_testkit::tls::TestCa::new("ca one"), batchgrid_testkit::tls::TestCa::new("ca two"));
    let bundle = dir.path().join("bundle.pem");
    let pem = |ca: &batchgrid_testkit::tls::TestCa| std::fs::read_to_string(ca.cert()).expect("CA certificate");
    std::fs::write(&bundle, format!("{}{}", pem(&first), pem(&second))).expect("bundle");
    let accepted = check_bundle(&validate, &bundle);
    assert!(accepted.status.success(), "a bundle of two certificates: {}", text(&accepted));
    assert!(text(&accepted).contains("holds 2 certificates"), "{}", text(&accepted));

    let corrupt = pem(&first).replacen("\n", "\n!!", 1).replace("M", "A");
    for (name, content) in [
        ("empty", String::new()),
        ("an HTML error page", "<html><body>Access Denied</body></html>\n".to_owned()),
        ("a damaged certificate", corrupt),
        ("a private key", std::fs::read_to_string(first.issue(&["x"]).key).expect("key")),
    ] {
        std::fs::write(&bundle, content).expect("write");
        let refused = check_bundle(&validate, &bundle);
        assert!(!refused.status.success(), "the check accepted {name}: {}", text(&refused));
    }
    std::fs::remove_file(&bundle).expect("remove");
    assert!(!check_bundle(&validate, &bundle).status.success(), "the check accepted a missing bundle");
}
