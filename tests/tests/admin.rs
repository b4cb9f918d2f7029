//! The admin endpoint of a real node, read by the TUI's own client code: live data in,
//! a screen out; Prometheus text on /metrics; "disconnected" when the node goes away; and
//! no non-loopback bind without the operator saying so.

use std::time::Duration;

use provnet_tests::{first_addr, provnet, wait_until, Node, Subnet};
use provnet_tui::app::{App, Conn, Feed};
use provnet_tui::client::{fetch_status, get};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const T: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(2);

fn admin_addr(n: &Node) -> String {
    let path = n.data_dir.join("admin.json");
    let mut addr = None;
    assert!(
        wait_until(T, || {
            addr = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["admin"].as_str().map(String::from));
            addr.is_some()
        }),
        "{} wrote no admin.json:\n{}",
        n.name,
        n.log_text()
    );
    let addr = addr.expect("checked");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    addr
}

fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(100, 30)).expect("test terminal");
    t.draw(|f| provnet_tui::ui::render(app, f)).expect("draws");
    let buf = t.backend().buffer();
    (0..30)
        .map(|y| (0..100).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
        .collect()
}

#[test]
fn the_tui_client_sees_a_live_validator_and_then_sees_it_go() {
    let net = Subnet::setup(1, 1, 4);
    let mut v = net.start("validator-1", "validator", None, &[]);
    let boot = first_addr(&v.ready(T));
    let mut ch = net.start(
        "challenger",
        "challenger",
        Some(&boot),
        &["--rate", "2", "--deadline-ms", "2500"],
    );
    let mut m = net.start("miner-1", "miner", Some(&boot), &["--threads", "1"]);
    ch.ready(T);
    m.ready(T);
    let addr = admin_addr(&v);
    let miner_key = net.node("miner-1").1;

    // The feed the TUI runs on: snapshots whose clock moves and whose validator has
    // verified this miner's proofs.
    let mut app = App::new(vec![addr.clone()]);
    let mut last_at = 0;
    let mut fresh = 0;
    let ok = wait_until(Duration::from_secs(90), || {
        let feed = match fetch_status(&addr, POLL) {
            Ok(s) => {
                if s.at_ms > last_at {
                    fresh += 1;
                    last_at = s.at_ms;
                }
                Feed::Status(Box::new(s))
            }
            Err(e) => Feed::Error(e),
        };
        app.on_feed(0, feed, last_at);
        let verified = app
            .status()
            .and_then(|s| s.validator.as_ref())
            .and_then(|v| v.rankings.iter().find(|r| r.miner == miner_key))
            .map_or(0, |r| r.valid);
        fresh >= 3 && verified >= 2
    });
    assert!(
        ok,
        "no live data over the admin endpoint ({fresh} fresh snapshots): {:?}\n{}",
        app.status(),
        v.log_text()
    );
    let s = app.status().expect("has data");
    assert_eq!(s.roles, ["validator"]);
    assert!(s.peers.len() >= 2, "{:?}", s.peers);
    app.now_ms = s.at_ms;
    let text = screen(&app);
    assert!(text.contains("● "), "not live:\n{text}");
    assert!(
        text.contains(&miner_key[..8]),
        "the miner is not ranked:\n{text}"
    );
    let score = &app.source().trend[&miner_key];
    assert!(!score.is_empty());

    // Prometheus text, from the same node.
    let metrics = String::from_utf8(get(&addr, "/metrics", POLL).expect("metrics")).expect("utf-8");
    for name in [
        "provnet_proofs_verified_total",
        "provnet_verification_failures_total{reason=\"invalid\"}",
        "provnet_verify_queue_depth",
        "provnet_peers",
        "provnet_epoch",
        "# TYPE provnet_gossip_rejected_total counter",
        "provnet_disputes_open 0",
        "# TYPE provnet_dispute_verdict_seconds histogram",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let verified: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("provnet_proofs_verified_total "))
        .expect("a sample")
        .parse()
        .expect("a number");
    assert!(verified >= 2.0);
    // Unknown paths and methods are refused, and the endpoint keeps serving.
    assert!(get(&addr, "/nope", POLL).unwrap_err().contains("404"));
    let miner_metrics =
        String::from_utf8(get(&admin_addr(&m), "/metrics", POLL).expect("the miner's metrics"))
            .expect("utf-8");
    assert!(
        miner_metrics.contains("# TYPE provnet_proving_seconds histogram")
            && miner_metrics.contains("provnet_proving_seconds_bucket{le=\"+Inf\"}"),
        "{miner_metrics}"
    );

    // The court over the same endpoint: no claims on this network, and an unknown
    // dispute is an error that says so.
    let (ok, out, err) = provnet(&["disputes", "--connect", &addr]);
    assert!(ok && out.contains("claims: 0 open of 0"), "{out}\n{err}");
    let (ok, _, err) = provnet(&["dispute", "show", "abcdef", "--connect", &addr]);
    assert!(!ok && err.contains("no dispute abcdef"), "{err}");

    // The node goes away: the client says so and the app keeps the last data, stale.
    let status = v.terminate(T);
    assert!(status.success(), "{}", v.log_text());
    let err = fetch_status(&addr, POLL).expect_err("nothing listens any more");
    app.on_feed(0, Feed::Error(err), last_at + 1_000);
    assert!(matches!(app.source().conn, Conn::Disconnected { .. }));
    let text = screen(&app);
    assert!(
        text.contains("disconnected") && text.contains("stale"),
        "{text}"
    );
    for n in [&mut ch, &mut m] {
        assert!(n.terminate(T).success(), "{}", n.log_text());
    }
}

#[test]
fn the_admin_endpoint_refuses_non_loopback_addresses_unless_told() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, _out, err) = provnet(&[
        "run",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--admin-listen",
        "0.0.0.0:0",
    ]);
    assert!(!ok, "a node bound its admin endpoint on every interface");
    assert!(
        err.contains("not a loopback address") && err.contains("--admin-allow-remote"),
        "{err}"
    );
    assert!(
        !dir.path().join("ready.json").exists(),
        "it joined the network before refusing"
    );
}

#[test]
fn a_relay_node_serves_its_status_too_and_survives_junk_requests() {
    let mut n = Node::start("relay", &["run", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    n.ready(T);
    let addr = admin_addr(&n);
    // Junk: not HTTP, an unfinished head, a head too big.
    for junk in [
        &b"\x00\x01garbage\r\n\r\n"[..],
        b"GET /status HTTP/1.1\r\n",
        &[b'a'; 20_000],
    ] {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).expect("connects");
        let _ = s.write_all(junk);
        drop(s);
    }
    let mut s = None;
    assert!(wait_until(T, || {
        s = fetch_status(&addr, POLL).ok().filter(|s| s.at_ms > 0);
        s.is_some()
    }));
    let s = s.expect("checked");
    assert!(s.roles.is_empty() && s.validator.is_none() && !s.peer_id.is_empty());

    // The stream: a JSON snapshot per line, each newer than the last.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut sock = std::net::TcpStream::connect(&addr).expect("connects");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        sock.write_all(b"GET /status/stream HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("request");
        let mut lines = BufReader::new(sock).lines().map(|l| l.expect("a line"));
        assert_eq!(lines.next().as_deref(), Some("HTTP/1.1 200 OK"));
        let mut at = Vec::new();
        for l in lines.skip_while(|l| !l.is_empty()).skip(1).take(3) {
            let s: provnet_wire::NodeStatus = serde_json::from_str(&l).expect("a snapshot");
            at.push(s.at_ms);
        }
        assert_eq!(at.len(), 3);
        assert!(at[1] > at[0] && at[2] > at[1], "{at:?}");
    }
    assert!(n.terminate(T).success(), "{}", n.log_text());
}

/// Whether `n` has a peer in its gossip mesh on the dispute topic.
fn in_dispute_mesh(n: &Node) -> bool {
    let Some(s) = n.status() else { return false };
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    peers.iter().any(|p| {
        let mesh = p["mesh"].as_array().cloned().unwrap_or_default();
        mesh.iter()
            .any(|t| t.as_str().is_some_and(|t| t.contains("dispute")))
    })
}

/// Whether `GET path` at `addr` answers 200 (the node has it).
fn found(addr: &str, path: &str) -> bool {
    request(addr, "GET", path, "", "").0 == 200
}

/// An HTTP request with a body; the status code and the body back.
fn request(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let (code, _, body) = provnet_tui::client::request(
        addr,
        method,
        path,
        headers,
        body.as_bytes(),
        Duration::from_secs(20),
    )
    .expect("an HTTP response");
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn claims_and_proof_requests_posted_over_the_admin_endpoint_are_published_and_read_back() {
    // inference-2 is a genesis account no node runs: `provnet claim` uses its key.
    let net = Subnet::setup_with(1, 1, 4, &["--inference", "2", "--cheaters", "1"]);
    let mut v = net.start("validator-1", "validator", None, &["--rate", "0"]);
    let boot = first_addr(&v.ready(T));
    let mut inf = net.start(
        "inference-1",
        "inference",
        Some(&boot),
        &["--claim-rate", "0"],
    );
    // A challenger that audits nothing by itself, a cheater whose every claim is
    // corrupted, and a miner for the leaves.
    let quiet = ["--rate", "0", "--audit-rate", "0"];
    let mut ch = net.start("challenger", "challenger", Some(&boot), &quiet);
    let lies = ["--claim-rate", "1", "--cheat-rate", "1"];
    let mut cheater = net.start("cheater-1", "inference", Some(&boot), &lies);
    let mut m = net.start("miner-1", "miner", Some(&boot), &["--threads", "1"]);
    for n in [&mut inf, &mut ch, &mut cheater, &mut m] {
        n.ready(T);
    }
    let (iaddr, vaddr) = (admin_addr(&inf), admin_addr(&v));
    // Gossip reaches only nodes already in the dispute topic's mesh (there is no court
    // sync yet): wait until the challenger has a mesh peer there before claiming.
    assert!(
        wait_until(T, || in_dispute_mesh(&ch)),
        "the challenger never joined the dispute topic's mesh:\n{}",
        ch.log_text()
    );
    let zeros = format!("[{}]", vec!["0"; 64].join(","));
    let body = format!(r#"{{"model": "digits_mlp", "input": {zeros}}}"#);
    // Until the validator is in the inference node's mesh, a claim finds no peer (503).
    let mut posted = (0, String::new());
    assert!(
        wait_until(T, || {
            posted = request(&iaddr, "POST", "/claims", "", &body);
            posted.0 != 503
        }),
        "{posted:?}"
    );
    assert_eq!(posted.0, 201, "{}", posted.1);
    let made: serde_json::Value = serde_json::from_str(&posted.1).expect("JSON");
    let id = made["claim"].as_str().expect("a claim id").to_string();
    assert_eq!(made["cuts"], 3);
    // Read back at the claimant, and at the validator once gossip brought it there.
    let (code, got) = request(&iaddr, "GET", &format!("/claims/{id}"), "", "");
    assert_eq!(code, 200, "{got}");
    let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(
        (got["state"].as_str(), &got["output"]),
        (Some("open"), &made["output"])
    );
    assert!(wait_until(T, || found(&vaddr, &format!("/claims/{id}"))));

    // Refused, with the reason: a wrong input, an unknown model, bad JSON, a node without
    // the inference role, an unknown id, a method the endpoint does not take.
    let short = r#"{"model": "digits_mlp", "input": [1, 2, 3]}"#;
    let cases = [
        (&iaddr, "POST", "/claims", short, 400, "input"),
        (
            &iaddr,
            "POST",
            "/claims",
            r#"{"model": "nope", "input": [0]}"#,
            404,
            "no genesis model",
        ),
        (&iaddr, "POST", "/claims", "{not json", 400, "model"),
        (&vaddr, "POST", "/claims", &body, 409, "inference role"),
        (&iaddr, "GET", "/disputes/00", "", 400, "64 hex"),
        (&iaddr, "DELETE", "/claims", "", 405, "GET or POST"),
    ];
    for (addr, method, path, b, want, says) in cases {
        let (code, text) = request(addr, method, path, "", b);
        assert_eq!(code, want, "{method} {path} {b}: {text}");
        assert!(text.contains(says), "{method} {path} {b}: {text}");
    }
    let zero_id = "0".repeat(64);
    assert_eq!(
        request(&iaddr, "GET", &format!("/disputes/{zero_id}"), "", "").0,
        404
    );

    // Disputes by hand, at the challenger: the honest claim has its own trace there, so
    // there is nothing to dispute; a corrupted one is disputed and lost by the cheater.
    let caddr = admin_addr(&ch);
    let claim_path = format!("/claims/{id}");
    assert!(wait_until(T, || found(&caddr, &claim_path)));
    let (ok, _, err) = provnet(&["dispute", "open", &id, "--connect", &caddr]);
    assert!(!ok && err.contains("nothing to dispute"), "{err}");
    let mut bad = None;
    assert!(wait_until(T, || {
        bad = cheater.status().and_then(|s| {
            let c = s["court"]["corrupted"].as_object()?.keys().next()?.clone();
            found(&caddr, &format!("/claims/{c}")).then_some(c)
        });
        bad.is_some()
    }));
    let bad = bad.expect("checked");
    let (ok, out, err) = provnet(&["dispute", "open", &bad, "--connect", &caddr, "--json"]);
    assert!(ok, "{out}\n{err}");
    let opened: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let dispute = opened["dispute"]
        .as_str()
        .expect("a dispute id")
        .to_string();
    let mut verdict = serde_json::Value::Null;
    assert!(
        wait_until(T, || {
            let (code, text) = request(&caddr, "GET", &format!("/disputes/{dispute}"), "", "");
            verdict = serde_json::from_str(&text).unwrap_or_default();
            code == 200 && verdict["final_verdict"].is_string()
        }),
        "{verdict}\n{}",
        ch.log_text()
    );
    assert_eq!(verdict["final_verdict"], "claimant_wrong", "{verdict}");
    let corrupted = cheater.status().expect("status")["court"]["corrupted"][&bad].clone();
    assert_eq!(verdict["segment"], corrupted, "{verdict}");

    // A proof request over HTTP, at the challenger: the validator adopts it, the miner
    // proves, and the challenger lists the proof once it verified it itself, with all a
    // client needs to verify it again: done here with the model's own verifying key.
    let ask = format!(
        r#"{{"model": "digits_mlp", "segment": 0, "input": {zeros}, "deadline_ms": 20000}}"#
    );
    let (code, text) = request(&caddr, "POST", "/requests", "", &ask);
    assert_eq!(code, 201, "{text}");
    let made: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let rid = made["request"].as_str().expect("a request id").to_string();
    let mut view = serde_json::Value::Null;
    assert!(
        wait_until(T, || {
            let (code, text) = request(&caddr, "GET", &format!("/requests/{rid}"), "", "");
            view = serde_json::from_str(&text).unwrap_or_default();
            code == 200 && view["valid"].as_u64() > Some(0)
        }),
        "{view}\n{}",
        ch.log_text()
    );
    assert_eq!(
        view["adopted_by"][0],
        net.node("validator-1").1.as_str(),
        "{view}"
    );
    assert_eq!(view["invalid"], 0, "{view}");
    let p = &view["proofs"][0];
    assert_eq!(p["miner"], net.node("miner-1").1.as_str(), "{view}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(net.dir.path().join("devnet.json")).expect("devnet.json"),
    )
    .expect("JSON");
    let model_dir = manifest["model_dir"].as_str().expect("model_dir");
    let vm = provnet_validator::VerifyingModel::load(model_dir.as_ref()).expect("the model");
    let hex32 = |k: &str| -> [u8; 32] {
        hex::decode(p[k].as_str().expect(k))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    };
    let ctx = provnet_kernels::ProofContext {
        challenge: hex32("challenge"),
        nonce: hex32("nonce"),
        miner: hex32("miner"),
    };
    let ints = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .expect("ints")
            .iter()
            .map(|x| x.as_i64().expect("int"))
            .collect()
    };
    let proof = hex::decode(p["proof"].as_str().expect("proof")).expect("hex");
    assert_eq!(proof.len(), 128);
    let check = |output: &[i64]| {
        provnet_kernels::ProofFile::from_claim(
            &vm.model,
            0,
            &hex32("vk_id"),
            &ctx,
            &ints(&view["input"]),
            output,
            &proof,
        )
        .and_then(|f| vm.verifiers[0].verify(&vm.model, &f, &ctx))
    };
    let output = ints(&p["output"]);
    assert!(check(&output).is_ok(), "{:?}", check(&output));
    let mut tampered = output.clone();
    tampered[0] = if tampered[0] > 0 {
        tampered[0] - 1
    } else {
        tampered[0] + 1
    };
    assert!(check(&tampered).is_err(), "a tampered output verified");
    // Refused, with the reason: no challenger role here, a segment the model lacks, an
    // input of the wrong shape, an unknown request.
    let cases = [
        (&iaddr, ask.clone(), 409, "challenger role"),
        (
            &caddr,
            ask.replace(r#""segment": 0"#, r#""segment": 9"#),
            400,
            "segment",
        ),
        (
            &caddr,
            r#"{"model": "digits_mlp", "segment": 0, "input": [1]}"#.to_string(),
            400,
            "input",
        ),
    ];
    for (addr, b, want, says) in cases {
        let (code, text) = request(addr, "POST", "/requests", "", &b);
        assert_eq!(code, want, "{b}: {text}");
        assert!(text.contains(says), "{b}: {text}");
    }
    let (code, _) = request(&caddr, "GET", &format!("/requests/{zero_id}"), "", "");
    assert_eq!(code, 404);

    // `provnet claim`, a process of its own under inference-2's key, cheating in its one
    // claim: the challenger disputes it by hand, the process answers the rounds and gives
    // the referee the leaf state, and exits 1 once the claim is overturned.
    let key = net.node("inference-2").0.join("keys").join("node.key");
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels/fixtures/digits_mlp_input.json");
    let mut claimant = Node::start(
        "claim",
        &[
            "claim",
            "--genesis",
            net.genesis.to_str().expect("utf-8"),
            "--bootstrap",
            &boot,
            "--model",
            "digits_mlp",
            "--input",
            input.to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
            "--cheat-rate",
            "1",
        ],
    );
    let mut cid = None;
    assert!(
        wait_until(T, || {
            cid = claimant.log_json().iter().find_map(|l| {
                let f = &l["fields"];
                (f["message"]
                    .as_str()?
                    .starts_with("claim published: standing behind it"))
                .then(|| f["claim"].as_str().map(String::from))?
            });
            cid.is_some()
        }),
        "provnet claim published nothing:\n{}",
        claimant.log_text()
    );
    let cid = cid.expect("checked");
    assert!(wait_until(T, || found(&caddr, &format!("/claims/{cid}"))));
    let (ok, out, err) = provnet(&["dispute", "open", &cid, "--connect", &caddr, "--json"]);
    assert!(ok, "{out}\n{err}");
    let exit = claimant
        .wait_exit(T)
        .expect("provnet claim exits once its claim is final");
    assert_eq!(exit.code(), Some(1), "{}", claimant.log_text());
    let (_, got) = request(&caddr, "GET", &format!("/claims/{cid}"), "", "");
    let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(got["state"], "overturned", "{got}");
    assert_eq!(
        got["disputes"][0]["final_verdict"], "claimant_wrong",
        "{got}"
    );
    // A node that was down for all of it (inference-2's own, started only now, with an
    // empty court) catches up from its peers' signed archives: the claim it never heard,
    // overturned, and its own balance short of the slashed bond, as every court has it.
    let mut late = net.start(
        "inference-2",
        "inference",
        Some(&boot),
        &["--claim-rate", "0"],
    );
    late.ready(T);
    assert!(
        wait_until(T, || late
            .status()
            .is_some_and(|s| s["court"]["synced"].as_u64() > Some(0))),
        "inference-2 never caught up on the court:\n{}",
        late.log_text()
    );
    let laddr = admin_addr(&late);
    let (code, text) = request(&laddr, "GET", &format!("/claims/{cid}"), "", "");
    assert_eq!(code, 200, "{text}");
    let seen: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(seen["state"], "overturned", "{seen}");
    assert_eq!(
        seen["disputes"][0]["final_verdict"], "claimant_wrong",
        "{seen}"
    );
    let genesis = std::fs::read_to_string(&net.genesis).expect("genesis");
    let hotkey = format!("hotkey = \"{}\"", net.node("inference-2").1);
    let opening: u64 = genesis
        .split(&hotkey)
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("balance = ")))
        .and_then(|b| b.trim().parse().ok())
        .expect("inference-2's opening balance in the genesis");
    let bond = seen["bond"].as_u64().expect("bond");
    let balance = late.status().expect("status")["court"]["balance"].as_u64();
    assert_eq!(balance, Some(opening - bond), "{}", late.log_text());
    assert!(late.terminate(T).success(), "{}", late.log_text());
    // A key that is no genesis account is refused up front, saying why.
    let outsider = net.node("miner-1").0.join("keys").join("node.key");
    let (ok, _, err) = provnet(&[
        "claim",
        "--genesis",
        net.genesis.to_str().expect("utf-8"),
        "--model",
        "digits_mlp",
        "--input",
        input.to_str().expect("utf-8"),
        "--key",
        outsider.to_str().expect("utf-8"),
    ]);
    assert!(!ok && err.contains("not a genesis account"), "{err}");
    for n in [&mut inf, &mut ch, &mut cheater, &mut m, &mut v] {
        assert!(n.terminate(T).success(), "{}", n.log_text());
    }
}
