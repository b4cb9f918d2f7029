//! Times the phases of one segment proof and one verification (development aid).
//! Usage: cargo run --release -p provnet-kernels --example phases -- MODEL_DIR INPUT.json
use std::time::Instant;

use ark_bn254::{Bn254, Fr, G1Projective};
use ark_ec::VariableBaseMSM;
use ark_ff::Field;
use ark_groth16::Groth16;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use provnet_kernels::{
    binding, circuit, prover, r1cs::Mode, trace, CpuBackend, Model, ModelKeys, ProofContext,
    ProverBackend,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&args[2]).unwrap()).unwrap();
    let x: Vec<f64> = v["input_data"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let t = Instant::now();
    let model = Model::load(dir).unwrap();
    println!("model load {:?}", t.elapsed());
    let t = Instant::now();
    let id = model.id();
    println!("model id {:?}", t.elapsed());
    let keys = ModelKeys::open(dir, &model).unwrap();
    let tr = trace::run(&model, &model.quantize(&x)).unwrap();
    let ctx = ProofContext {
        challenge: [1; 32],
        nonce: [2; 32],
        miner: [3; 32],
    };
    for seg in &model.segments {
        let t = Instant::now();
        let key = keys.proving_key(seg.index).unwrap();
        println!("seg {} pk load {:?}", seg.index, t.elapsed());
        let h_query = key.h_table.plain_bases();
        for c in [8u32, 10, 11, 12, 13, 14, 15] {
            let table = provnet_kernels::msm::FixedBaseTable::new(&h_query, c);
            let sc: Vec<Fr> = (0..h_query.len())
                .map(|i| Fr::from(i as u64 + 1) * Fr::from(0x1234_5678_9abc_def1u64).pow([7]))
                .collect();
            let t = Instant::now();
            let a = table.msm(&sc).unwrap();
            let fixed = t.elapsed();
            let t = Instant::now();
            let b = G1Projective::msm_unchecked(&h_query, &sc);
            println!(
                "  h msm c={c}: fixed-base {fixed:?}, arkworks {:?}, equal {}",
                t.elapsed(),
                a == b
            );
        }
        println!(
            "  best window for {}: {}",
            h_query.len(),
            provnet_kernels::msm::FixedBaseTable::best_window(h_query.len(), 2)
        );
        for _ in 0..3 {
            let bind = binding(&id, seg.index, &ctx);
            let t = Instant::now();
            let cs = circuit::synthesize(
                seg,
                Mode::Prove,
                bind,
                Some(circuit::Assignment {
                    input: &tr.tensors[seg.index],
                    claimed_output: None,
                }),
            );
            let synth = t.elapsed();
            let z = cs.full_assignment();
            let size = (cs.num_constraints() + 1 + cs.num_instance()).next_power_of_two();
            let mut a = vec![Fr::from(0u64); size];
            let mut b = a.clone();
            let mut c = a.clone();
            for (i, [x, y, w]) in cs.abc.iter().enumerate() {
                a[i] = *x;
                b[i] = *y;
                c[i] = *w;
            }
            let t = Instant::now();
            let h = CpuBackend.quotient(a, b, c).unwrap();
            let q = t.elapsed();
            let t = Instant::now();
            let _ = CpuBackend.msm_g1_many(key.a_query(), &[&z]).unwrap();
            let ma = t.elapsed();
            let t = Instant::now();
            let _ = CpuBackend.msm_g1_many(key.b_g1_query(), &[&z]).unwrap();
            let mb1 = t.elapsed();
            let t = Instant::now();
            let _ = CpuBackend.msm_g2_many(key.b_g2_query(), &[&z]).unwrap();
            let mb2 = t.elapsed();
            let t = Instant::now();
            let _ = CpuBackend
                .msm_g1_many(key.l_query(), &[&z[1 + cs.num_instance()..]])
                .unwrap();
            let ml = t.elapsed();
            let n = key.h_table.bases;
            let t = Instant::now();
            let _ = CpuBackend.msm_g1_fixed(&key.h_table, &h[..n]).unwrap();
            let mh = t.elapsed();
            let t = Instant::now();
            let proof =
                prover::prove(&CpuBackend, &key, &cs, &mut ark_std::rand::thread_rng()).unwrap();
            let total = t.elapsed();
            println!("  synth {synth:?} quotient {q:?} msm A {ma:?} B1 {mb1:?} B2 {mb2:?} L {ml:?} H {mh:?} | prove {total:?} (constraints {}, domain {size})", cs.num_constraints());
            let (vk, _) = keys.verifying_key(seg.index).unwrap();
            let pvk = ark_groth16::prepare_verifying_key(&vk);
            let mut bytes = Vec::new();
            proof.serialize_compressed(&mut bytes).unwrap();
            let t = Instant::now();
            let p2 = ark_groth16::Proof::<Bn254>::deserialize_compressed(bytes.as_slice()).unwrap();
            let de = t.elapsed();
            let t = Instant::now();
            let pi = circuit::public_inputs(
                seg,
                &tr.tensors[seg.index],
                &tr.tensors[seg.index + 1],
                bind,
            );
            let pack = t.elapsed();
            let t = Instant::now();
            let prep = G1Projective::msm_unchecked(&vk.gamma_abc_g1[1..], &pi) + vk.gamma_abc_g1[0];
            let msm = t.elapsed();
            let t = Instant::now();
            assert!(Groth16::<Bn254>::verify_proof_with_prepared_inputs(&pvk, &p2, &prep).unwrap());
            let pair = t.elapsed();
            println!("  verify: deserialize {de:?} pack {pack:?} input msm {msm:?} ({} inputs) pairing {pair:?}", pi.len());
        }
    }
}
