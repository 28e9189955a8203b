//! The container image, checked without a container engine (there is none on CI's machines;
//! `.ci/lint-deploy` lints the Dockerfile and the manifests themselves).
//!
//! - The Dockerfile's build stage compiles with one documented command. This test reads that
//!   command out of the Dockerfile, checks it is exactly `cargo build --release --locked`, runs
//!   it here (same target directory, so a warm `target/release` makes it quick), and runs the
//!   binary it produced the way the image does: `--version`, and `policy check` on the
//!   policies the image ships.
//! - The configurations in deploy/ (the Kubernetes ConfigMap's and Compose's) are accepted by
//!   the binary: `serve` starts on them and answers /healthz, `broker` answers /time, and the
//!   policy the ConfigMap carries passes `policy check`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The build command the Dockerfile must use, and README/deploy docs describe.
const BUILD_COMMAND: &str = "cargo build --release --locked";
/// A clean release build on CI's 2-core machine takes a few minutes; a warm one, seconds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// A well-formed key that signs nothing real.
const TEST_KEY: &str = "ci.dockerfile:not-a-real-secret-only-for-this-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---- reading the Dockerfile ----------------------------------------------------------------

struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

struct Stage {
    name: Option<String>,
    instructions: Vec<Instruction>,
}

/// Instructions grouped by stage, with `\` continuations joined and comments dropped (Docker
/// also drops comment lines inside a continued instruction).
fn dockerfile_stages() -> Vec<Stage> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
    let mut stages: Vec<Stage> = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if current.is_empty() {
            start = i + 1;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                let keyword = keyword.to_ascii_uppercase();
                let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
                if keyword == "FROM" {
                    let words: Vec<&str> = args.split(' ').collect();
                    let name = match words.as_slice() {
                        [.., as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                            Some(name.to_string())
                        }
                        _ => None,
                    };
                    stages.push(Stage {
                        name,
                        instructions: Vec::new(),
                    });
                }
                let stage = stages.last_mut().expect("the Dockerfile starts with FROM");
                stage.instructions.push(Instruction {
                    keyword,
                    args,
                    line: start,
                });
                current.clear();
            }
        }
    }
    stages
}

/// The shell command of a RUN, without its leading `--mount=…`-style flags.
fn run_command(args: &str) -> &str {
    let mut rest = args;
    while rest.starts_with("--") {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    rest
}

/// The `cargo build` step of the build stage: (stage name, the whole RUN command, its line).
fn cargo_build_step(stages: &[Stage]) -> (String, String, usize) {
    let found: Vec<(String, String, usize)> = stages
        .iter()
        .flat_map(|s| {
            s.instructions
                .iter()
                .filter(|i| i.keyword == "RUN" && run_command(&i.args).contains("cargo build"))
                .map(|i| {
                    (
                        s.name.clone().unwrap_or_default(),
                        run_command(&i.args).to_string(),
                        i.line,
                    )
                })
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one RUN with `cargo build` in the Dockerfile, found {}",
        found.len()
    );
    found.into_iter().next().unwrap()
}

/// Files the final (runtime) stage copies into /etc/ably-tokend/policies/.
fn shipped_policies(stages: &[Stage]) -> Vec<PathBuf> {
    let runtime = stages.last().expect("a stage");
    let mut files = Vec::new();
    for copy in runtime.instructions.iter().filter(|i| i.keyword == "COPY") {
        let words: Vec<&str> = copy
            .args
            .split(' ')
            .filter(|w| !w.starts_with("--"))
            .collect();
        let Some((dest, sources)) = words.split_last() else {
            continue;
        };
        if !dest.starts_with("/etc/ably-tokend/policies") {
            continue;
        }
        assert!(
            !copy.args.contains("--from"),
            "Dockerfile:{}: policies come from the build context",
            copy.line
        );
        for source in sources {
            let path = repo().join(source);
            if path.is_dir() {
                let mut tomls: Vec<PathBuf> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect();
                tomls.sort();
                files.extend(tomls);
            } else {
                assert!(
                    path.is_file(),
                    "Dockerfile:{}: {source} does not exist",
                    copy.line
                );
                files.push(path);
            }
        }
    }
    files
}

// ---- running things ------------------------------------------------------------------------

/// Variables `cargo test` sets for this process that must not leak into a nested `cargo build`
/// (CARGO_PRIMARY_PACKAGE, for one, would reach every dependency's rustc and change its
/// fingerprint). User configuration (CARGO_HOME, CARGO_TARGET_DIR, CARGO_BUILD_*, ...) stays.
fn is_cargo_test_variable(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_MANIFEST_",
        "__CARGO",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || [
            "CARGO",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "CARGO_MAKEFLAGS",
            "OUT_DIR",
        ]
        .contains(&name)
}

fn wait_with_deadline(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The binary cargo builds into target/<profile>: beside this test run's own binary, in the
/// `release` directory (also right when CARGO_TARGET_DIR or --target moved them).
fn release_binary() -> PathBuf {
    let debug_binary = Path::new(env!("CARGO_BIN_EXE_ably-tokend"));
    let profile_dir = debug_binary.parent().unwrap();
    profile_dir
        .parent()
        .unwrap()
        .join("release")
        .join(debug_binary.file_name().unwrap())
}

#[test]
fn the_dockerfile_build_command_builds_a_working_binary() {
    let stages = dockerfile_stages();
    let (stage, run, line) = cargo_build_step(&stages);

    // The build stage is the one the runtime stage takes the binary from.
    let runtime = stages.last().unwrap();
    assert!(
        runtime
            .instructions
            .iter()
            .any(|i| i.keyword == "COPY" && i.args.starts_with(&format!("--from={stage} "))),
        "the runtime stage copies nothing from the build stage {stage:?}"
    );
    assert_eq!(
        runtime
            .instructions
            .iter()
            .filter(|i| i.keyword == "ENTRYPOINT")
            .map(|i| i.args.as_str())
            .collect::<Vec<_>>(),
        [r#"["ably-tokend"]"#]
    );

    // The RUN is `cargo build ... && install target/release/ably-tokend ...`: the cargo part
    // must be exactly the documented command.
    let steps: Vec<&str> = run.split("&&").map(str::trim).collect();
    let cargo = steps.iter().find(|s| s.starts_with("cargo build")).unwrap();
    assert_eq!(
        *cargo, BUILD_COMMAND,
        "Dockerfile:{line}: the build stage's command"
    );
    assert!(
        run.contains("target/release/ably-tokend"),
        "Dockerfile:{line}: the binary leaves target/release/ably-tokend"
    );

    // Run it here, as the Dockerfile does, in the repository (cargo released its lock on the
    // target directory before running tests, so this shares target/ without deadlocking).
    let words: Vec<&str> = BUILD_COMMAND.split(' ').collect();
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dockerfile-build.log");
    let mut command = Command::new(&cargo_bin);
    command.args(&words[1..]).current_dir(repo());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_cargo_test_variable) {
            command.env_remove(name);
        }
    }
    let started = Instant::now();
    let output = std::fs::File::create(&log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .expect("run cargo");
    let status = wait_with_deadline(&mut child, BUILD_TIMEOUT, BUILD_COMMAND);
    assert!(
        status.success(),
        "{BUILD_COMMAND} failed ({status}); the end of {}:\n{}",
        log.display(),
        tail(&log, 40)
    );
    eprintln!("{BUILD_COMMAND}: {:.1?}", started.elapsed());

    let binary = release_binary();
    assert!(
        binary.is_file(),
        "{BUILD_COMMAND} produced no {}",
        binary.display()
    );

    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("ably-tokend {}", env!("CARGO_PKG_VERSION"))
    );

    let policies = shipped_policies(&stages);
    assert!(
        !policies.is_empty(),
        "the image ships no policy under /etc/ably-tokend/policies"
    );
    let check = Command::new(&binary)
        .args(["policy", "check"])
        .args(&policies)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "policy check on the image's policies: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .lines()
            .filter(|l| l.starts_with("ok: "))
            .count(),
        policies.len()
    );
}

// ---- the deploy/ configurations ------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.1: the status code and the body, or None when nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// Runs the binary on a deploy/ configuration, with what the container gets from outside: the
/// key in ABLY_API_KEY, and `env` (the listen address, the mounted policy's local path).
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, String)], name: &str) -> Running {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_ably-tokend"));
        command.args(args).current_dir(repo());
        for (key, _) in std::env::vars() {
            if key.starts_with("ABLY_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command.env("ABLY_API_KEY", TEST_KEY);
        for (key, value) in env {
            command.env(key, value);
        }
        let output = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        Running { child, log }
    }

    /// Waits until `path` answers 200.
    fn wait_for(&mut self, port: u16, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited with {status} before answering {path}:\n{}",
                    tail(&self.log, 20)
                );
            }
            if let Some((200, body)) = http_get(port, path) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer 200 within 30 s:\n{}",
                tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        let secret = TEST_KEY.split_once(':').unwrap().1;
        assert!(
            !output.contains(secret),
            "the key's secret appeared in the output"
        );
        output
    }
}

fn policy_check(files: &[PathBuf]) {
    let out = Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(["policy", "check"])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve_answers_on(config: &str, policy: &Path, name: &str) {
    let port = free_port();
    let mut running = Running::start(
        &["serve", "--config", config],
        &[
            ("ABLY_TOKEND_SERVER__BIND", format!("127.0.0.1:{port}")),
            ("ABLY_TOKEND_POLICY__PATH", policy.display().to_string()),
        ],
        name,
    );
    assert_eq!(running.wait_for(port, "/healthz"), r#"{"status":"ok"}"#);
    // Not ready offline (the example issuer's JWKS is a placeholder), but it answers.
    let (status, _) = http_get(port, "/readyz").expect("/readyz answers");
    assert!(status == 200 || status == 503, "/readyz answered {status}");
    running.stop();
}

#[test]
fn the_kubernetes_configmap_config_and_policy_are_accepted() {
    let policy = repo().join("deploy/kubernetes/policies/default.toml");
    policy_check(std::slice::from_ref(&policy));
    // The Deployment mounts these at /etc/ably-tokend/ably-tokend.toml and
    // /etc/ably-tokend/policies/default.toml; here they are read where they are.
    serve_answers_on(
        "deploy/kubernetes/ably-tokend.toml",
        &policy,
        "kubernetes-serve",
    );
}

#[test]
fn the_compose_config_is_accepted_by_serve_and_broker() {
    // compose.yaml mounts the repository's policies/ at /etc/ably-tokend/policies.
    serve_answers_on(
        "deploy/compose/ably-tokend.toml",
        &repo().join("policies/default.toml"),
        "compose-serve",
    );

    let port = free_port();
    let mut broker = Running::start(
        &["broker", "--config", "deploy/compose/ably-tokend.toml"],
        &[("ABLY_TOKEND_BROKER__BIND", format!("127.0.0.1:{port}"))],
        "compose-broker",
    );
    broker.wait_for(port, "/time");
    broker.stop();
}
