// Compiles a verifier from `provnet export solidity` with solc, deploys it in an EVM
// (@ethereumjs/evm, Prague rules: EIP-196/197 precompiles at EIP-1108 prices) and calls
// verifyProof with the calldata snarkjs builds from `provnet export snarkjs` files: as
// exported, and tampered (the binding + 1, a public signal not below r, and C replaced by
// A). Prints one JSON line.
//
// usage: node evm_verify.cjs Verifier.sol proof.json public.json
// The npm packages solc, snarkjs and @ethereumjs/evm are found through NODE_PATH.
"use strict";

const fs = require("fs");
const solc = require("solc");
const snarkjs = require("snarkjs");
const { createEVM } = require("@ethereumjs/evm");

const R = 21888242871839275222246405745257275088548364400416034343698204186575808495617n;

function compile(source) {
  const input = {
    language: "Solidity",
    sources: { "Verifier.sol": { content: source } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      outputSelection: {
        "*": { "*": ["evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"] },
      },
    },
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  if (errors.length) {
    throw new Error("solc: " + errors.map((e) => e.formattedMessage).join("\n"));
  }
  return out.contracts["Verifier.sol"].Groth16Verifier.evm;
}

function hexToBytes(h) {
  return Uint8Array.from(Buffer.from(h.replace(/^0x/, ""), "hex"));
}

function word(v) {
  return BigInt(v).toString(16).padStart(64, "0");
}

// EIP-2028 calldata price, for the transaction total (21000 + calldata + execution).
function calldataGas(bytes) {
  let g = 0;
  for (const b of bytes) g += b === 0 ? 4 : 16;
  return g;
}

async function main() {
  const [solPath, proofPath, publicPath] = process.argv.slice(2);
  const evmOut = compile(fs.readFileSync(solPath, "utf8"));
  const proof = JSON.parse(fs.readFileSync(proofPath, "utf8"));
  const pub = JSON.parse(fs.readFileSync(publicPath, "utf8"));
  const sig = Object.keys(evmOut.methodIdentifiers).find((k) => k.startsWith("verifyProof("));
  const selector = evmOut.methodIdentifiers[sig];

  const evm = await createEVM();
  const deploy = await evm.runCall({ data: hexToBytes(evmOut.bytecode.object), gasLimit: 30000000n });
  if (deploy.execResult.exceptionError) {
    throw new Error("deploy failed: " + deploy.execResult.exceptionError.error);
  }
  const to = deploy.createdAddress;

  async function call(p, signals) {
    // snarkjs' own calldata for these files: [a, b, c, signals], G2 imaginary part first.
    const text = await snarkjs.groth16.exportSolidityCallData(p, signals);
    const [a, b, c, s] = JSON.parse("[" + text + "]");
    const words = [...a, ...b[0], ...b[1], ...c, ...s].map(word).join("");
    const data = hexToBytes(selector + words);
    const res = await evm.runCall({ to, data, gasLimit: 10000000n });
    const ret = res.execResult.returnValue;
    const ok = !res.execResult.exceptionError && ret.length === 32 && ret[31] === 1;
    const gas = Number(res.execResult.executionGasUsed);
    return { ok, reverted: !!res.execResult.exceptionError, gas, tx_gas: 21000 + calldataGas(data) + gas };
  }

  const good = await call(proof, pub);
  const bumped = pub.slice();
  bumped[bumped.length - 1] = ((BigInt(bumped[bumped.length - 1]) + 1n) % R).toString();
  const bindingPlusOne = await call(proof, bumped);
  const unreduced = pub.slice();
  unreduced[0] = (BigInt(unreduced[0]) + R).toString();
  const signalNotBelowR = await call(proof, unreduced);
  const swapped = { ...proof, pi_c: proof.pi_a };
  const otherC = await call(swapped, pub);

  console.log(
    JSON.stringify({
      function: sig,
      deployed_bytes: evmOut.deployedBytecode.object.length / 2,
      deploy_gas: Number(deploy.execResult.executionGasUsed),
      accepted: good.ok,
      gas: good.gas,
      tx_gas: good.tx_gas,
      tampered: {
        binding_plus_one: bindingPlusOne.ok,
        signal_not_below_r: signalNotBelowR.ok,
        other_c: otherC.ok,
      },
      reverted: good.reverted || bindingPlusOne.reverted || signalNotBelowR.reverted || otherC.reverted,
    }),
  );
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(2);
  },
);
