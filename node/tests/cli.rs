//! The `provnet` command line, end to end: keygen, model import/setup/run, prove, verify,
//! and every bad input the issue names (clear error, non-zero exit, nothing left behind).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn provnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provnet"))
        .args(args)
        .output()
        .expect("provnet runs")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}\n{}", stdout(&o), stderr(&o));
    o
}

fn fails(o: Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains(needle), "expected '{needle}' in: {text}");
    assert!(!text.contains("panicked"), "{text}");
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = ok(provnet(&["keygen", "--out", s(&path)]));
    let pubkey = stdout(&out).trim().to_string();
    (path, pubkey)
}

fn import_and_setup(dir: &Path, name: &str) -> PathBuf {
    let model = dir.join(name);
    let out = ok(provnet(&[
        "model",
        "import",
        &fixture(&format!("{name}.onnx")),
        "--out",
        s(&model),
    ]));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["segments"][0]["constraints"].as_u64().unwrap() > 0);
    let out = ok(provnet(&["model", "setup", s(&model)]));
    assert!(stderr(&out).contains("DEVELOPMENT SETUP ONLY"));
    model
}

const CH: &str = "abababababababababababababababababababababababababababababababab";
const CH2: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

#[test]
fn keygen_writes_a_private_key_and_prints_the_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, pubkey) = keygen(tmp.path(), "k");
    assert_eq!(pubkey.len(), 64);
    assert!(pubkey.chars().all(|c| c.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    fails(provnet(&["keygen", "--out", s(&path)]), "already exists");
}

#[test]
fn a_two_segment_model_proves_segment_by_segment_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = import_and_setup(t, "digits_mlp");
    let (key, miner) = keygen(t, "miner.key");
    let (_, other_miner) = keygen(t, "other.key");
    let p0 = t.join("p0.cbor");
    let out = ok(provnet(&[
        "prove",
        "--model",
        s(&model),
        "--segment",
        "0",
        "--input",
        &fixture("digits_mlp_input.json"),
        "--challenge",
        CH,
        "--key",
        s(&key),
        "--out",
        s(&p0),
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["proof_bytes"], 128);
    assert!(report["prove_ms"].as_f64().unwrap() > 0.0);
    // Segment 1 takes segment 0's proof file as its input.
    let p1 = t.join("p1.cbor");
    let out = ok(provnet(&[
        "prove",
        "--model",
        s(&model),
        "--segment",
        "1",
        "--input",
        s(&p0),
        "--challenge",
        CH,
        "--key",
        s(&key),
        "--out",
        s(&p1),
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("digits_mlp_expected.json")).unwrap())
            .unwrap();
    for (a, b) in report["output"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["output_data"][0].as_array().unwrap())
    {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 2e-3);
    }
    for p in [&p0, &p1] {
        ok(provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(p),
            "--challenge",
            CH,
            "--miner",
            &miner,
        ]));
    }
    ok(provnet(&[
        "verify",
        "--model",
        s(&model),
        "--proof",
        s(&p0),
        "--challenge",
        CH,
        "--miner",
        &miner,
        "--input",
        &fixture("digits_mlp_input.json"),
    ]));
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&p0),
            "--challenge",
            CH2,
            "--miner",
            &miner,
        ]),
        "challenge",
    );
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&p0),
            "--challenge",
            CH,
            "--miner",
            &other_miner,
        ]),
        "miner",
    );
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&p0),
            "--challenge",
            CH,
            "--miner",
            &miner,
            "--nonce",
            CH2,
        ]),
        "nonce",
    );
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&p1),
            "--challenge",
            CH,
            "--miner",
            &miner,
            "--input",
            &fixture("digits_mlp_input.json"),
        ]),
        "",
    );
    // Without --input, verify says the input is the file's own choice.
    let out = ok(provnet(&[
        "verify",
        "--model",
        s(&model),
        "--proof",
        s(&p0),
        "--challenge",
        CH,
        "--miner",
        &miner,
    ]));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        said["input"]
            .as_str()
            .unwrap()
            .contains("as written in the proof file"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --input"));
    // A previous segment's proof with a forged output is no input: it is verified first.
    let mut forged = provnet_kernels::ProofFile::from_bytes(&std::fs::read(&p0).unwrap()).unwrap();
    forged.output[0] += 1;
    let forged_path = t.join("forged.cbor");
    std::fs::write(&forged_path, forged.to_bytes()).unwrap();
    fails(
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "1",
            "--input",
            s(&forged_path),
            "--challenge",
            CH,
            "--key",
            s(&key),
            "--out",
            s(&t.join("p1-forged.cbor")),
        ]),
        "does not verify",
    );
    // A tampered proof byte.
    let mut bytes = std::fs::read(&p0).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x04;
    let bad = t.join("bad.cbor");
    std::fs::write(&bad, &bytes).unwrap();
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&bad),
            "--challenge",
            CH,
            "--miner",
            &miner,
        ]),
        "invalid proof",
    );
    // The wrong segment's proof as input.
    fails(
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "0",
            "--input",
            s(&p1),
            "--challenge",
            CH,
            "--key",
            s(&key),
            "--out",
            s(&t.join("x.cbor")),
        ]),
        "segment",
    );
    let out = ok(provnet(&[
        "model",
        "run",
        s(&model),
        "--input",
        &fixture("digits_mlp_input.json"),
    ]));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["trace_leaves"].as_array().unwrap().len(), 3);
    assert_eq!(run["output_quantized"], report["output_quantized"]);
}

#[test]
fn bad_inputs_are_clear_errors_that_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Corrupt ONNX.
    let junk = t.join("junk.onnx");
    std::fs::write(&junk, b"\x08\x07garbage\xff\xff\xff").unwrap();
    let out_dir = t.join("junk-model");
    fails(
        provnet(&["model", "import", s(&junk), "--out", s(&out_dir)]),
        "ONNX",
    );
    assert!(!out_dir.exists());

    let model = t.join("dense_16");
    ok(provnet(&[
        "model",
        "import",
        &fixture("dense_16.onnx"),
        "--out",
        s(&model),
    ]));
    let (key, miner) = keygen(t, "k");
    let proof = t.join("p.cbor");
    let prove = |input: &str| {
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "0",
            "--input",
            input,
            "--challenge",
            CH,
            "--key",
            s(&key),
            "--out",
            s(&proof),
        ])
    };
    // Missing keys.
    fails(
        prove(&fixture("dense_16_input.json")),
        "provnet model setup",
    );
    assert!(!proof.exists());
    ok(provnet(&["model", "setup", s(&model)]));
    // Wrong input length, out-of-range input, malformed input file.
    fails(prove(&fixture("dense_64_input.json")), "takes 16 values");
    let wide = t.join("wide.json");
    std::fs::write(
        &wide,
        format!("{{\"input_data\": [[{}]]}}", vec!["1000.0"; 16].join(",")),
    )
    .unwrap();
    fails(prove(s(&wide)), "outside its range");
    let broken = t.join("broken.json");
    std::fs::write(&broken, "{\"input_data\": [[1, 2,").unwrap();
    fails(prove(s(&broken)), "not JSON");
    // Segment that does not exist, bad challenge hex, missing key file.
    fails(
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "3",
            "--input",
            &fixture("dense_16_input.json"),
            "--challenge",
            CH,
            "--key",
            s(&key),
            "--out",
            s(&proof),
        ]),
        "segment 3 does not exist",
    );
    fails(
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "0",
            "--input",
            &fixture("dense_16_input.json"),
            "--challenge",
            "xyz",
            "--key",
            s(&key),
            "--out",
            s(&proof),
        ]),
        "64 hex characters",
    );
    fails(
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "0",
            "--input",
            &fixture("dense_16_input.json"),
            "--challenge",
            CH,
            "--key",
            s(&t.join("nokey")),
            "--out",
            s(&proof),
        ]),
        "provnet keygen",
    );
    assert!(!proof.exists());
    // Corrupt and truncated proof files.
    ok(prove(&fixture("dense_16_input.json")));
    let bytes = std::fs::read(&proof).unwrap();
    let cut = t.join("cut.cbor");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&cut),
            "--challenge",
            CH,
            "--miner",
            &miner,
        ]),
        "proof file",
    );
    std::fs::write(&cut, b"not cbor").unwrap();
    fails(
        provnet(&[
            "verify",
            "--model",
            s(&model),
            "--proof",
            s(&cut),
            "--challenge",
            CH,
            "--miner",
            &miner,
        ]),
        "proof file",
    );
    // Nothing but what we made is in the directory (no temp files).
    let mut names: Vec<String> = std::fs::read_dir(t)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "broken.json",
            "cut.cbor",
            "dense_16",
            "junk.onnx",
            "k",
            "p.cbor",
            "wide.json"
        ]
    );
}

#[test]
fn demo_runs_the_whole_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = ok(provnet(&["demo", "--dir", s(&dir)]));
    let text = stdout(&out);
    assert_eq!(
        text.matches("for another challenge: rejected").count(),
        2,
        "{text}"
    );
    assert!(dir.join("segment-1.proof").exists());
    // The files it leaves are real: the CLI verifies them.
    let miner_key = std::fs::read_to_string(dir.join("miner.key")).unwrap();
    assert_eq!(miner_key.trim().len(), 64);
}

/// `--backend cuda` without a usable GPU is a clear error; `auto` then proves on the CPU.
/// Where a GPU is usable (the device machine), both prove on it instead.
#[test]
fn backend_choice_falls_back_or_fails_clearly() {
    let gpu = provnet_kernels::gpu::select(provnet_kernels::gpu::BackendChoice::Cuda).is_ok();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = import_and_setup(t, "digits_mlp");
    let (key, _) = keygen(t, "miner.key");
    let prove = |backend: &str, out: &str| {
        provnet(&[
            "prove",
            "--model",
            s(&model),
            "--segment",
            "0",
            "--input",
            &fixture("digits_mlp_input.json"),
            "--challenge",
            CH,
            "--key",
            s(&key),
            "--out",
            s(&t.join(out)),
            "--backend",
            backend,
        ])
    };
    let report =
        |o: Output| -> serde_json::Value { serde_json::from_slice(&ok(o).stdout).unwrap() };
    assert_eq!(report(prove("cpu", "cpu.cbor"))["backend"], "cpu");
    let want = if gpu { "cuda" } else { "cpu" };
    assert_eq!(report(prove("auto", "auto.cbor"))["backend"], want);
    if gpu {
        assert_eq!(report(prove("cuda", "cuda.cbor"))["backend"], "cuda");
    } else {
        fails(prove("cuda", "cuda.cbor"), "--backend cuda");
        assert!(
            !t.join("cuda.cbor").exists(),
            "a failed prove leaves no file"
        );
    }
    let o = prove("tpu", "tpu.cbor");
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&o).contains("unknown backend \"tpu\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ptau_reports_the_file_and_which_segments_it_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let ptau = fixture("pot14_final.ptau");
    let o = ok(provnet(&["ptau", &ptau]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["power"], 14);
    assert_eq!(v["prepared_for_phase2"], true);
    // digits_mlp's segments fit 2^14; transformer_block with --merge has a 2^15 segment.
    let small = tmp.path().join("digits");
    ok(provnet(&[
        "model",
        "import",
        &fixture("digits_mlp.onnx"),
        "--out",
        s(&small),
    ]));
    let o = ok(provnet(&["ptau", &ptau, "--model", s(&small)]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["segments"].as_array().unwrap().len(), 2);
    let big = tmp.path().join("tb");
    ok(provnet(&[
        "model",
        "import",
        &fixture("transformer_block.onnx"),
        "--out",
        s(&big),
        "--merge",
    ]));
    fails(
        provnet(&["ptau", &ptau, "--model", s(&big)]),
        "power 15 or more",
    );
    fails(
        provnet(&["ptau", &fixture("dense_16.onnx")]),
        "not a snarkjs .ptau file",
    );
}

#[test]
fn a_ceremony_by_files_installs_keys_that_prove_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ptau = fixture("pot14_final.ptau");
    let model = t.join("digits");
    ok(provnet(&[
        "model",
        "import",
        &fixture("digits_mlp.onnx"),
        "--out",
        s(&model),
    ]));
    let tr = |i: usize| t.join(format!("t{i}"));
    ok(provnet(&[
        "ceremony",
        "init",
        "--model",
        s(&model),
        "--ptau",
        &ptau,
        "--out",
        s(&tr(0)),
    ]));
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        let o = ok(provnet(&[
            "ceremony",
            "contribute",
            "--in",
            s(&tr(i)),
            "--out",
            s(&tr(i + 1)),
            "--name",
            name,
            "--entropy",
            "keyboard mashing",
        ]));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["contribution"], i);
        assert_eq!(v["contribution_hash"].as_str().unwrap().len(), 64);
    }
    ok(provnet(&[
        "ceremony",
        "beacon",
        "--in",
        s(&tr(2)),
        "--beacon",
        "0badc0ffee",
        "--iterations-exp",
        "3",
        "--out",
        s(&tr(3)),
    ]));
    let o = ok(provnet(&[
        "ceremony",
        "verify",
        "--model",
        s(&model),
        "--ptau",
        &ptau,
        s(&tr(3)),
    ]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["contributions"].as_array().unwrap().len(), 3);
    assert_eq!(v["ends_with_beacon"], true);

    // A transcript with a byte changed in its last point is refused; nothing is installed.
    let mut bytes = std::fs::read(tr(3)).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 1;
    let bad = t.join("bad");
    std::fs::write(&bad, &bytes).unwrap();
    fails(
        provnet(&[
            "ceremony",
            "verify",
            "--model",
            s(&model),
            "--ptau",
            &ptau,
            s(&bad),
        ]),
        "ceremony",
    );
    fails(
        provnet(&[
            "ceremony",
            "finalize",
            "--model",
            s(&model),
            "--ptau",
            &ptau,
            s(&bad),
        ]),
        "ceremony",
    );
    assert!(!model.join("keys").exists());

    // The ptau path recorded at init is used when --ptau is left out.
    let o = ok(provnet(&[
        "ceremony",
        "finalize",
        "--model",
        s(&model),
        s(&tr(3)),
    ]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["ceremony"].as_str().unwrap().contains("3 contributions"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("keys/index.json")).unwrap()).unwrap();
    assert!(index["warning"].as_str().unwrap().contains("one honest"));
    let (key, miner) = keygen(t, "miner.key");
    let p0 = t.join("p0.cbor");
    ok(provnet(&[
        "prove",
        "--model",
        s(&model),
        "--segment",
        "0",
        "--input",
        &fixture("digits_mlp_input.json"),
        "--challenge",
        CH,
        "--key",
        s(&key),
        "--out",
        s(&p0),
    ]));
    ok(provnet(&[
        "verify",
        "--model",
        s(&model),
        "--proof",
        s(&p0),
        "--challenge",
        CH,
        "--miner",
        &miner,
    ]));
}
