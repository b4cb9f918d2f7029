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
fn a_ceremony_by_files_installs_keys_whose_proofs_check_in_snarkjs_and_an_evm() {
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
    exports_check_outside_provnet(t, &model, &p0);
}

/// The npm tools `.ci/npm-tools` installs (snarkjs, solc, @ethereumjs/evm): their
/// node_modules, or None, said loudly, where they are missing and CI does not require them.
fn npm_tools() -> Option<PathBuf> {
    let dir = std::env::var_os("PROVNET_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/npm"));
    let modules = dir.join("node_modules");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have = ["snarkjs", "solc", "@ethereumjs/evm"]
        .iter()
        .all(|p| modules.join(p).join("package.json").exists());
    if node && have {
        return Some(modules);
    }
    let why = format!(
        "the npm tools are not in {} (node found: {node}); run .ci/npm-tools",
        modules.display()
    );
    assert!(
        std::env::var_os("PROVNET_REQUIRE_NPM").is_none(),
        "PROVNET_REQUIRE_NPM is set but {why}"
    );
    eprintln!("SKIPPED the snarkjs and EVM checks: {why}");
    None
}

/// `provnet export snarkjs` and `export solidity` on a proof: the files read back into the
/// same key, proof and public inputs; snarkjs verifies them and refuses a tampered public
/// input; the contract, compiled with solc, accepts the proof in an EVM and refuses tampered
/// calls. A proof that does not verify is not exported.
fn exports_check_outside_provnet(t: &Path, model: &Path, proof: &Path) {
    use provnet_kernels::export;
    let out = t.join("snarkjs");
    let o = ok(provnet(&[
        "export",
        "snarkjs",
        "--model",
        s(model),
        "--proof",
        s(proof),
        "--out",
        s(&out),
    ]));
    assert!(
        !stderr(&o).contains("DEVELOPMENT"),
        "ceremony keys: no warning"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(summary["keys"].as_str().unwrap().contains("ceremony"));
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(f)).unwrap()).unwrap()
    };
    let vk = export::vk_from_snarkjs(&read("verification_key.json")).unwrap();
    let pi = export::proof_from_snarkjs(&read("proof.json")).unwrap();
    let public = export::public_from_snarkjs(&read("public.json")).unwrap();
    let pf = provnet_kernels::ProofFile::read(proof).unwrap();
    assert_eq!(
        public
            .iter()
            .map(provnet_kernels::proof::fr_bytes)
            .collect::<Vec<_>>(),
        pf.public_inputs
            .iter()
            .map(|b| b.to_vec())
            .collect::<Vec<_>>(),
        "public.json holds the proof file's public inputs, binding last"
    );
    let verifier = provnet_kernels::SegmentVerifier::new(0, vk, [0; 32]);
    verifier.verify_raw(&pi, &public).unwrap();
    let mut wrong = public.clone();
    *wrong.last_mut().unwrap() += ark_bn254::Fr::from(1u8);
    assert!(verifier.verify_raw(&pi, &wrong).is_err());

    let sol = t.join("Verifier.sol");
    let o = ok(provnet(&[
        "export",
        "solidity",
        "--model",
        s(model),
        "--segment",
        "0",
        "--out",
        s(&sol),
    ]));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let n = public.len();
    assert_eq!(summary["public_inputs"], n);
    assert!(std::fs::read_to_string(&sol)
        .unwrap()
        .contains(&format!("uint[{n}] calldata _pubSignals")));

    // A proof whose public inputs are consistent but whose pairing fails (another miner's
    // binding) is refused, and nothing is written.
    let mut other = pf.context();
    other.miner[0] ^= 1;
    let m = provnet_kernels::Model::load(model).unwrap();
    let vk_id: [u8; 32] = pf.vk_id.as_slice().try_into().unwrap();
    let forged = provnet_kernels::ProofFile::from_claim(
        &m, 0, &vk_id, &other, &pf.input, &pf.output, &pf.proof,
    )
    .unwrap();
    let forged_path = t.join("forged.cbor");
    std::fs::write(&forged_path, forged.to_bytes()).unwrap();
    let nothing = t.join("nothing");
    let o = provnet(&[
        "export",
        "snarkjs",
        "--model",
        s(model),
        "--proof",
        s(&forged_path),
        "--out",
        s(&nothing),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
    assert!(!nothing.exists());
    fails(
        provnet(&[
            "export",
            "snarkjs",
            "--model",
            s(model),
            "--proof",
            s(proof),
            "--segment",
            "1",
            "--out",
            s(&nothing),
        ]),
        "the proof is for segment 0",
    );

    let Some(modules) = npm_tools() else { return };
    let snarkjs = |public: &Path| {
        Command::new("node")
            .arg(modules.join("snarkjs/build/cli.cjs"))
            .args(["groth16", "verify"])
            .arg(out.join("verification_key.json"))
            .arg(public)
            .arg(out.join("proof.json"))
            .output()
            .expect("node runs")
    };
    let o = snarkjs(&out.join("public.json"));
    assert!(
        o.status.success() && stdout(&o).contains("OK!"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let tampered = out.join("tampered.json");
    let mut signals = read("public.json");
    signals[0] = serde_json::Value::String(
        ark_ff::PrimeField::into_bigint(public[0] + ark_bn254::Fr::from(1u8)).to_string(),
    );
    std::fs::write(&tampered, signals.to_string()).unwrap();
    let o = snarkjs(&tampered);
    assert!(
        !o.status.success(),
        "snarkjs accepted a tampered public input"
    );
    assert!(stdout(&o).contains("Invalid proof"), "{}", stdout(&o));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/evm_verify.cjs");
    let o = Command::new("node")
        .arg(script)
        .arg(&sol)
        .arg(out.join("proof.json"))
        .arg(out.join("public.json"))
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let evm: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    eprintln!("EVM: {evm}");
    assert_eq!(evm["accepted"], true, "{evm}");
    assert_eq!(evm["reverted"], false, "{evm}");
    for (what, accepted) in evm["tampered"].as_object().unwrap() {
        assert_eq!(
            accepted, false,
            "the contract accepted a tampered call: {what}"
        );
    }
    assert!(evm["gas"].as_u64().unwrap() > 181_000, "{evm}");
}

#[test]
fn a_closed_stdout_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    ok(provnet(&[
        "model",
        "import",
        &fixture("dense_16.onnx"),
        "--out",
        s(&model),
    ]));
    // `provnet model show m | true`: the reader is gone before the first line is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_provnet"))
        .args(["model", "show", s(&model)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
        "{:?}: {err}",
        out.status
    );
}
