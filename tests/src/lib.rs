//! Harness for multi-process tests: builds or finds the `provnet` binary once, starts nodes
//! in their own temporary data dirs on 127.0.0.1, reads their JSON logs, and kills them on
//! drop. The harness depends on nothing of provnet's but the binary: what is tested is what
//! ships. (Tests that play an in-process attacker or read a store after a run use the
//! library crates as dev-dependencies.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `provnet` binary of this workspace, built (once per test run) if needed.
///
/// It is built the way `cargo test --workspace` builds it (every member's tests, so every
/// dev-dependency's features), plus provnet-node's `adversary` feature, which only that
/// crate has: under `cargo test` this recompiles `provnet-node` alone. Building only
/// `-p provnet-node` would resolve features differently and recompile half the dependency
/// tree (minutes on two cores) in the middle of the test run.
pub fn provnet_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Cargo sets these for the test process. Some build scripts (ring's) rerun when
        // one changes, which would make this build and the next `cargo test` each
        // recompile the TLS and libp2p stack.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k == "CARGO_MANIFEST_DIR"
                || k == "CARGO_MANIFEST_PATH"
                || k == "CARGO_CRATE_NAME"
                || k == "CARGO_BIN_NAME"
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
                || k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
            {
                cmd.env_remove(&*k);
            }
        }
        let status = cmd
            .current_dir(&root)
            // With the test-only adversaries (`--adversary`, `flood`), which a release
            // build leaves out.
            .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
            .args(["--features", "provnet-node/adversary"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building provnet failed");
        let bin = target.join("debug").join("provnet");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// Runs `provnet ARGS...` to completion: (success, stdout, stderr).
pub fn provnet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(provnet_bin())
        .args(args)
        .output()
        .expect("provnet runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `pred` every 25 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One running `provnet` process with its data dir and its log, killed on drop.
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts `provnet --log-json ARGS...` in a fresh temporary data dir (`--data-dir` is
    /// appended for commands that take one).
    pub fn start(name: &str, args: &[&str]) -> Node {
        Node::start_logging(name, args, "info")
    }

    /// [`Node::start`] with a `RUST_LOG` filter of its own.
    pub fn start_logging(name: &str, args: &[&str], filter: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut node = Node::spawn(name, args, &data_dir, filter);
        node._dir = Some(dir);
        node
    }

    /// [`Node::start`] in a data dir that outlives the process (for restarts).
    pub fn start_in(name: &str, args: &[&str], data_dir: &Path) -> Node {
        Node::spawn(name, args, data_dir, "info")
    }

    /// Sends SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node's `status.json`, once it has written one.
    pub fn status(&self) -> Option<Value> {
        let bytes = std::fs::read(self.data_dir.join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn spawn(name: &str, args: &[&str], data_dir: &Path, filter: &str) -> Node {
        let mut child = Command::new(provnet_bin())
            .arg("--log-json")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("provnet starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Node {
            name: name.into(),
            data_dir: data_dir.to_path_buf(),
            child,
            log,
            _dir: None,
        }
    }

    /// The ready file once the node listens (panics after `timeout`).
    pub fn ready(&mut self, timeout: Duration) -> Value {
        let path = self.data_dir.join("ready.json");
        let mut ready = None;
        let ok = wait_until(timeout, || {
            ready = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            ready.is_some() || self.exited()
        });
        assert!(
            ok && ready.is_some(),
            "{} never became ready:\n{}",
            self.name,
            self.log_text()
        );
        ready.expect("checked")
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// JSON log lines so far.
    pub fn log_json(&self) -> Vec<Value> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Whether some log line has message `msg` and every `(field, value)` given.
    pub fn logged(&self, msg: &str, fields: &[(&str, &str)]) -> bool {
        self.log_json().iter().any(|l| {
            let f = &l["fields"];
            f["message"] == msg && fields.iter().all(|(k, v)| f[*k] == *v)
        })
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(timeout)
            .unwrap_or_else(|| panic!("{} ignored SIGTERM:\n{}", self.name, self.log_text()))
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network prepared by `provnet devnet --setup-only`: a model with keys, a genesis, and a
/// data dir with a key per node (challenger, validator-N, miner-N).
pub struct Subnet {
    pub dir: tempfile::TempDir,
    pub genesis: PathBuf,
    /// name -> (data dir, public key hex)
    pub nodes: Vec<(String, PathBuf, String)>,
}

impl Subnet {
    pub fn setup(miners: usize, validators: usize, epoch_secs: u64) -> Subnet {
        Subnet::setup_with(miners, validators, epoch_secs, &[])
    }

    /// [`Subnet::setup`] with more `devnet` arguments (inference nodes, a model).
    pub fn setup_with(miners: usize, validators: usize, epoch_secs: u64, extra: &[&str]) -> Subnet {
        let dir = tempfile::tempdir().expect("temp dir");
        let (miners, validators, epoch_secs) = (
            miners.to_string(),
            validators.to_string(),
            epoch_secs.to_string(),
        );
        let mut args = vec![
            "devnet",
            "--setup-only",
            // These tests are about the subnet, not the ceremony (its own test runs it).
            "--dev-setup",
            "--dir",
            dir.path().to_str().expect("utf-8 temp dir"),
            "--miners",
            &miners,
            "--validators",
            &validators,
            "--epoch-secs",
            &epoch_secs,
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = provnet(&args);
        assert!(ok, "devnet --setup-only failed:\n{out}\n{err}");
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("devnet.json")).expect("devnet.json"),
        )
        .expect("devnet.json parses");
        let nodes = manifest["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().expect("name").to_string(),
                    PathBuf::from(n["data_dir"].as_str().expect("data_dir")),
                    n["public_key"].as_str().expect("key").to_string(),
                )
            })
            .collect();
        Subnet {
            genesis: PathBuf::from(manifest["genesis"].as_str().expect("genesis")),
            dir,
            nodes,
        }
    }

    pub fn node(&self, name: &str) -> (PathBuf, String) {
        let (_, d, k) = self
            .nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        (d.clone(), k.clone())
    }

    /// Starts `name` with `provnet run --role ROLE` on loopback, plus `extra` flags.
    pub fn start(&self, name: &str, role: &str, bootstrap: Option<&str>, extra: &[&str]) -> Node {
        let (data_dir, _) = self.node(name);
        self.start_at(name, &data_dir, role, bootstrap, extra)
    }

    /// [`Subnet::start`] in another data dir (a copy of a node's, say).
    pub fn start_at(
        &self,
        name: &str,
        data_dir: &Path,
        role: &str,
        bootstrap: Option<&str>,
        extra: &[&str],
    ) -> Node {
        let mut args = vec![
            "run",
            "--genesis",
            self.genesis.to_str().expect("utf-8"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--role",
            role,
            "--status-every",
            "0",
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        args.extend_from_slice(extra);
        Node::start_in(name, &args, data_dir)
    }
}

/// Copies a directory tree (a killed node's data dir, to start it again elsewhere).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's dir");
    for entry in std::fs::read_dir(from).expect("read the dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// The first listen address in a ready file.
pub fn first_addr(ready: &Value) -> String {
    ready["listen_addrs"][0]
        .as_str()
        .expect("a listen address")
        .to_string()
}
