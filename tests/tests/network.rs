//! Separate `provnet` processes on loopback: they find each other, exchange signed messages,
//! and stop cleanly; a taken port is a clear error.

use std::time::Duration;

use provnet_tests::{wait_until, Node};

const T: Duration = Duration::from_secs(60);
const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "run",
        "--netuid",
        "77",
        "--listen",
        LOOPBACK,
        "--status-every",
        "1",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn two_processes_connect_and_exchange_announces() {
    let mut a = Node::start("a", &run_args(&[]));
    let ready_a = a.ready(T);
    let addr_a = ready_a["listen_addrs"][0]
        .as_str()
        .expect("an address")
        .to_string();
    assert!(addr_a.starts_with("/ip4/127.0.0.1/tcp/"), "{addr_a}");

    let mut b = Node::start("b", &run_args(&["--bootstrap", &addr_a]));
    let ready_b = b.ready(T);
    let (id_a, id_b) = (
        ready_a["peer_id"].as_str().unwrap(),
        ready_b["peer_id"].as_str().unwrap(),
    );

    let got = wait_until(T, || {
        a.logged("received", &[("kind", "announce"), ("from", id_b)])
            && b.logged("received", &[("kind", "announce"), ("from", id_a)])
    });
    assert!(
        got,
        "no announce exchange:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );

    for n in [&mut a, &mut b] {
        let status = n.terminate(T);
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            n.name,
            n.log_text()
        );
        assert!(
            n.logged("network stopped", &[]),
            "{} did not stop its network",
            n.name
        );
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let mut a = Node::start("a", &run_args(&[]));
    let ready = a.ready(T);
    let addr = ready["listen_addrs"][0].as_str().unwrap();
    let port_addr = addr.split("/p2p/").next().unwrap().to_string();
    let mut b = Node::start("b", &["run", "--listen", &port_addr]);
    let status = b.wait_exit(T).expect("the second node exits");
    assert!(!status.success());
    let text = b.log_text();
    assert!(
        text.contains("cannot listen on") && text.contains("pass another --listen"),
        "{text}"
    );
}
