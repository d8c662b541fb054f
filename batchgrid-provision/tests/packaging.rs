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
const INSTALL_COMMANDS: [&str; 4] = [
    "install -m 0755 /tmp/batchgrid-artifacts/batchgrid /usr/local/bin/batchgrid",
    r#"for unit in /tmp/batchgrid-artifacts/systemd/*.service; do install -m 0644 "$unit" /etc/systemd/system/; done"#,
    "install -D -m 0644 /tmp/batchgrid-artifacts/sysusers.d/batchgrid.conf /usr/lib/sysusers.d/batchgrid.conf",
    "systemd-sysusers /usr/lib/sysusers.d/batchgrid.conf",
];

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
    for dir in ["etc/systemd/system", "usr/local/bin", "usr/lib/sysusers.d", "usr/lib/systemd"] {
        std::fs::create_dir_all(at(dir)).expect("mkdir");
    }
    let binary = at("/usr/local/bin/batchgrid");
    std::fs::write(&binary, "#!/bin/sh\nexit 0\n").expect("stand-in binary");
    set_mode(&binary, 0o755);
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

    // Every unit's User= and Group= exist in that root, and its state directory is the home.
    for unit in units() {
        let text = std::fs::read_to_string(&unit).expect("unit");
        let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_owned);
        let name = unit.display();
        let unit_user = value("User=").unwrap_or_else(|| panic!("{name} names its User="));
        assert!(entry(root.path(), "passwd", &unit_user).is_some(), "{name}: User={unit_user} is not created");
        let unit_group = value("Group=").unwrap_or_else(|| panic!("{name} names its Group="));
        assert!(entry(root.path(), "group", &unit_group).is_some(), "{name}: Group={unit_group} is not created");
        assert_eq!(value("StateDirectory=").map(|d| format!("/var/lib/{d}")).as_deref(), Some(STATE_DIR), "{name}");
    }
}

#[test]
fn systemd_analyze_verify_accepts_both_units_and_rejects_a_broken_one() {
    let root = install_root();
    let names: Vec<String> =
        units().iter().map(|u| u.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["batchgrid-manager.service", "batchgrid-worker.service"]);
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
    for (name, expected) in [("validate/User", "id -u batchgrid"), ("validate/Units", "systemd-analyze verify")] {
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
