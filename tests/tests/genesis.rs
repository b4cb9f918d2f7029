//! Genesis files: checked against the model directories, hashed the same wherever the
//! models live, and nodes with another genesis are refused at the first hop.

use std::path::Path;
use std::time::Duration;

use provnet_tests::{provnet, wait_until, Node};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const HOTKEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// Imports and sets up the dense_16 fixture in `dir/name`; returns (model id, vk id).
fn model(dir: &Path, name: &str) -> (String, String) {
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/dense_16.onnx");
    let out = dir.join(name);
    let (ok, stdout, err) = provnet(&[
        "model",
        "import",
        onnx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&stdout).unwrap()["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, stdout, err) = provnet(&["model", "setup", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let vk = serde_json::from_str::<Value>(&stdout).unwrap()["segments"][0]["vk_id"]
        .as_str()
        .unwrap()
        .to_string();
    (id, vk)
}

fn write_genesis(path: &Path, model_path: &str, model_id: &str, vk_id: &str, stake: u64) {
    let text = format!(
        r#"netuid = 9
epoch_secs = 30
emission_per_epoch = 1000000

[[models]]
name = "dense_16"
path = "{model_path}"
model_id = "{model_id}"
vk_ids = ["{vk_id}"]

[[validators]]
hotkey = "{HOTKEY}"
stake = {stake}
"#
    );
    std::fs::write(path, text).unwrap();
}

fn check(path: &Path) -> Result<String, String> {
    let (ok, stdout, err) = provnet(&["genesis", "check", path.to_str().unwrap()]);
    if ok {
        Ok(serde_json::from_str::<Value>(&stdout).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_string())
    } else {
        Err(err)
    }
}

#[test]
fn genesis_is_checked_and_nodes_on_another_genesis_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, vk) = model(tmp.path(), "m");
    // The same network with its model kept elsewhere: same hash.
    std::fs::create_dir(tmp.path().join("other")).unwrap();
    let (id2, vk2) = model(&tmp.path().join("other"), "m");
    assert_eq!(id, id2, "the model id is the content hash");
    let g1 = tmp.path().join("g1.toml");
    let g1_moved = tmp.path().join("g1-moved.toml");
    let g2 = tmp.path().join("g2.toml");
    write_genesis(&g1, "m", &id, &vk, 100);
    write_genesis(&g2, "m", &id, &vk, 101);

    let h1 = check(&g1).expect("g1 is valid");
    assert_ne!(
        h1,
        check(&g2).expect("g2 is valid"),
        "stake is part of the genesis"
    );
    // Keys from another setup have another vk id: a genesis naming m's keys refuses them.
    assert_ne!(vk, vk2);
    write_genesis(&g1_moved, "other/m", &id, &vk, 100);
    let err = check(&g1_moved).unwrap_err();
    assert!(err.contains("vk id"), "{err}");
    // The same model and keys copied elsewhere: the same network, the same hash.
    let copied = std::process::Command::new("cp")
        .args(["-r", "m", "copy"])
        .current_dir(tmp.path())
        .status()
        .unwrap();
    assert!(copied.success());
    write_genesis(&g1_moved, "copy", &id, &vk, 100);
    assert_eq!(
        check(&g1_moved).unwrap(),
        h1,
        "local paths are not part of the hash"
    );
    // A wrong model id is refused too.
    let bad = tmp.path().join("bad.toml");
    write_genesis(&bad, "m", &vk, &vk, 100);
    let err = check(&bad).unwrap_err();
    assert!(err.contains("holds model"), "{err}");

    // A model whose keys the network's ceremony makes: no vk ids, a .ptau pinned by hash
    // (its local path is not hashed).
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/fixtures/pot14_final.ptau");
    std::os::unix::fs::symlink(&fixture, tmp.path().join("here.ptau")).unwrap();
    let ceremony = |ptau: &str, hash: &str, vk_ids: &str| {
        let path = tmp.path().join("c.toml");
        let text = std::fs::read_to_string(&g1).unwrap().replace(
            &format!("vk_ids = [\"{vk}\"]"),
            &format!(
                "vk_ids = [{vk_ids}]\n\n[models.ceremony]\nptau = \"{ptau}\"\nptau_blake3 = \"{hash}\"\nstart_ms = 1\n"
            ),
        );
        std::fs::write(&path, text).unwrap();
        check(&path)
    };
    let h = "ab".repeat(32);
    let with_ceremony = ceremony("here.ptau", &h, "").expect("a ceremony genesis is valid");
    assert_ne!(with_ceremony, h1);
    assert_eq!(
        ceremony(fixture.to_str().unwrap(), &h, "").unwrap(),
        with_ceremony,
        "the ptau's local path is not part of the hash"
    );
    assert_ne!(
        ceremony("here.ptau", &"cd".repeat(32), "").unwrap(),
        with_ceremony,
        "the ptau's hash is"
    );
    let err = ceremony("here.ptau", &h, &format!("\"{vk}\"")).unwrap_err();
    assert!(err.contains("vk_ids must be empty"), "{err}");
    let err = ceremony("missing.ptau", &h, "").unwrap_err();
    assert!(err.contains("is not a file"), "{err}");

    // Nodes: A and C share genesis g1 (C keeps its model elsewhere); B runs g2.
    let g1s = g1.to_str().unwrap();
    let run = |genesis: &str| {
        vec![
            "run".to_string(),
            "--genesis".into(),
            genesis.into(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
        ]
    };
    let args_a = run(g1s);
    let mut a = Node::start_logging(
        "a",
        &args_a.iter().map(String::as_str).collect::<Vec<_>>(),
        "info,p2p::gossip=debug",
    );
    let ready_a = a.ready(T);
    assert_eq!(
        ready_a["genesis"],
        h1[..16],
        "the ready file names the genesis id"
    );
    let addr_a = ready_a["listen_addrs"][0].as_str().unwrap().to_string();

    let mut args_b = run(g2.to_str().unwrap());
    args_b.extend(["--bootstrap".into(), addr_a.clone()]);
    let mut b = Node::start("b", &args_b.iter().map(String::as_str).collect::<Vec<_>>());
    let id_b = b.ready(T)["peer_id"].as_str().unwrap().to_string();
    let mut args_c = run(g1_moved.to_str().unwrap());
    args_c.extend(["--bootstrap".into(), addr_a]);
    let mut c = Node::start("c", &args_c.iter().map(String::as_str).collect::<Vec<_>>());
    let id_c = c.ready(T)["peer_id"].as_str().unwrap().to_string();

    let refused = wait_until(T, || {
        a.logged(
            "rejected",
            &[("reason", "foreign_genesis"), ("peer", &id_b)],
        ) && a.logged("received", &[("kind", "announce"), ("from", &id_c)])
    });
    assert!(refused, "A:\n{}", a.log_text());
    assert!(
        !a.logged("received", &[("from", &id_b)]),
        "A accepted a message from another genesis"
    );
    for n in [&mut a, &mut b, &mut c] {
        assert!(n.terminate(T).success());
    }
}
