//! A small R1CS builder with one code path for setup, proving and checking.
//!
//! Circuits are written once against [`R1cs`]. In `Setup` mode it records each constraint's
//! linear combinations (the matrices, replayed into arkworks for key generation); in `Prove`
//! mode it records only values: the assignment and, per constraint, the values of A·z, B·z and
//! C·z, which is all the Groth16 prover needs (no sparse matrix-vector products at prove
//! time). `Check` records both so tests can prove the two paths agree. Every constraint has a
//! [`Label`], so an unsatisfied witness is reported by name, MockProver style.

use ark_bn254::Fr;
use ark_ff::{One, Zero};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystemRef, LinearCombination, SynthesisError, Variable,
};

use crate::error::KernelError;

/// A variable: the constant one, a public input, or a private witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Var {
    One,
    Instance(u32),
    Witness(u32),
}

/// What the builder records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Setup,
    Prove,
    Check,
}

impl Mode {
    fn terms(self) -> bool {
        self != Mode::Prove
    }
    fn values(self) -> bool {
        self != Mode::Setup
    }
}

/// A linear combination with (depending on mode) its terms and its value.
#[derive(Clone, Debug, Default)]
pub struct Lc {
    pub terms: Vec<(Var, Fr)>,
    pub value: Fr,
}

/// Names a constraint: `what` with up to two indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub what: &'static str,
    pub i: u32,
    pub j: u32,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.what {
            "input bit" => write!(f, "input[{}] range bit {} is boolean", self.i, self.j),
            "output bit" => write!(
                f,
                "output[{}] accumulator bit {} is boolean",
                self.i, self.j
            ),
            "relu" => write!(f, "output[{}] = relu(requantized accumulator)", self.i),
            "pack input" => write!(f, "public input word {} packs inputs", self.i),
            "pack output" => write!(f, "public output word {} packs outputs", self.i),
            "erf y = sign |y|" => write!(f, "output[{}]: erf y = sign |y|", self.i),
            other => write!(f, "{other}"),
        }
    }
}

/// The constraint system under construction.
pub struct R1cs {
    pub mode: Mode,
    pub instance: Vec<Fr>,
    pub witness: Vec<Fr>,
    num_instance: u32,
    num_witness: u32,
    /// Setup/Check: the constraints' linear combinations.
    pub constraints: Vec<[Vec<(Var, Fr)>; 3]>,
    /// Prove/Check: the values of A·z, B·z, C·z per constraint.
    pub abc: Vec<[Fr; 3]>,
    pub labels: Vec<Label>,
}

impl R1cs {
    pub fn new(mode: Mode) -> Self {
        R1cs {
            mode,
            instance: Vec::new(),
            witness: Vec::new(),
            num_instance: 0,
            num_witness: 0,
            constraints: Vec::new(),
            abc: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn wants_values(&self) -> bool {
        self.mode.values()
    }

    pub fn wants_terms(&self) -> bool {
        self.mode.terms()
    }

    pub fn num_constraints(&self) -> usize {
        self.labels.len()
    }

    pub fn num_instance(&self) -> usize {
        self.num_instance as usize
    }

    pub fn num_witness(&self) -> usize {
        self.num_witness as usize
    }

    /// A new public input; `value` is only called when values are recorded.
    pub fn instance(&mut self, value: impl FnOnce() -> Fr) -> Var {
        if self.mode.values() {
            self.instance.push(value());
        }
        self.num_instance += 1;
        Var::Instance(self.num_instance - 1)
    }

    /// A new private witness; `value` is only called when values are recorded.
    pub fn witness(&mut self, value: impl FnOnce() -> Fr) -> Var {
        if self.mode.values() {
            self.witness.push(value());
        }
        self.num_witness += 1;
        Var::Witness(self.num_witness - 1)
    }

    pub fn value(&self, v: Var) -> Fr {
        match v {
            Var::One => Fr::one(),
            Var::Instance(i) => self.instance[i as usize],
            Var::Witness(i) => self.witness[i as usize],
        }
    }

    /// A linear combination of one variable.
    pub fn var(&self, v: Var) -> Lc {
        let mut lc = Lc::default();
        self.add(&mut lc, v, Fr::one());
        lc
    }

    /// The constant `c`.
    pub fn constant(&self, c: Fr) -> Lc {
        let mut lc = Lc::default();
        self.add(&mut lc, Var::One, c);
        lc
    }

    /// lc += coeff * v.
    pub fn add(&self, lc: &mut Lc, v: Var, coeff: Fr) {
        if self.mode.terms() {
            lc.terms.push((v, coeff));
        }
        if self.mode.values() {
            lc.value += self.value(v) * coeff;
        }
    }

    /// A linear combination whose value the caller already knows (computed natively). The
    /// terms are only built when recorded, so proving skips them entirely. Checking
    /// evaluates the terms instead, as a proof would: a witness that disagrees with what
    /// the caller expected then fails the constraints that read it, by name.
    pub fn known(&self, value: impl FnOnce() -> Fr, terms: impl FnOnce(&mut Vec<(Var, Fr)>)) -> Lc {
        let mut lc = Lc::default();
        if self.mode.terms() {
            terms(&mut lc.terms);
        }
        if self.mode == Mode::Check {
            lc.value = lc
                .terms
                .iter()
                .fold(Fr::zero(), |acc, (v, c)| acc + self.value(*v) * c);
        } else if self.mode.values() {
            lc.value = value();
        }
        lc
    }

    /// Enforces a * b = c.
    pub fn enforce(&mut self, a: Lc, b: Lc, c: Lc, label: Label) {
        if self.mode.values() {
            self.abc.push([a.value, b.value, c.value]);
        }
        if self.mode.terms() {
            self.constraints
                .push([compact(a.terms), compact(b.terms), compact(c.terms)]);
        }
        self.labels.push(label);
    }

    /// Enforces that `lc` is 0 or 1: lc * (1 - lc) = 0.
    pub fn boolean(&mut self, lc: Lc, label: Label) {
        let mut one_minus = self.constant(Fr::one());
        if self.mode.terms() {
            one_minus
                .terms
                .extend(lc.terms.iter().map(|(v, c)| (*v, -*c)));
        }
        one_minus.value -= lc.value;
        self.enforce(lc, one_minus, Lc::default(), label);
    }

    /// The first constraint whose recorded values do not satisfy a * b = c.
    pub fn first_unsatisfied(&self) -> Option<KernelError> {
        use rayon::prelude::*;
        self.abc
            .par_iter()
            .with_min_len(1 << 12)
            .position_first(|[a, b, c]| *a * b != *c)
            .map(|index| KernelError::Unsatisfied {
                index,
                label: self.labels[index].to_string(),
                detail: "a * b != c for this witness".into(),
            })
    }

    /// Check mode only: every constraint's terms, evaluated on the assignment, give the values
    /// recorded for proving. Returns the first constraint where they differ.
    pub fn first_inconsistent(&self) -> Option<usize> {
        let eval = |terms: &[(Var, Fr)]| -> Fr {
            terms
                .iter()
                .fold(Fr::zero(), |acc, (v, c)| acc + self.value(*v) * c)
        };
        self.constraints
            .iter()
            .zip(&self.abc)
            .position(|(lcs, vals)| (0..3).any(|k| eval(&lcs[k]) != vals[k]))
    }

    /// Full assignment in arkworks' column order: one, public inputs, witnesses.
    pub fn full_assignment(&self) -> Vec<Fr> {
        let mut z = Vec::with_capacity(1 + self.instance.len() + self.witness.len());
        z.push(Fr::one());
        z.extend_from_slice(&self.instance);
        z.extend_from_slice(&self.witness);
        z
    }
}

/// Merges repeated variables and drops zero coefficients, so each variable appears once.
fn compact(mut terms: Vec<(Var, Fr)>) -> Vec<(Var, Fr)> {
    terms.sort_by_key(|(v, _)| *v);
    let mut out: Vec<(Var, Fr)> = Vec::with_capacity(terms.len());
    for (v, c) in terms {
        match out.last_mut() {
            Some((last, acc)) if *last == v => *acc += c,
            _ => out.push((v, c)),
        }
    }
    out.retain(|(_, c)| !c.is_zero());
    out
}

/// Replays recorded constraints into an arkworks constraint system (for key generation).
pub struct Replay(pub R1cs);

impl ConstraintSynthesizer<Fr> for Replay {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let r = self.0;
        if !r.wants_terms() {
            return Err(SynthesisError::AssignmentMissing);
        }
        let value = |vals: &[Fr], i: usize| vals.get(i).copied().unwrap_or_else(Fr::zero);
        let inst: Vec<Variable> = (0..r.num_instance())
            .map(|i| cs.new_input_variable(|| Ok(value(&r.instance, i))))
            .collect::<Result<_, _>>()?;
        let wit: Vec<Variable> = (0..r.num_witness())
            .map(|i| cs.new_witness_variable(|| Ok(value(&r.witness, i))))
            .collect::<Result<_, _>>()?;
        let map = |terms: &[(Var, Fr)]| -> LinearCombination<Fr> {
            LinearCombination(
                terms
                    .iter()
                    .map(|(v, c)| {
                        let var = match v {
                            Var::One => Variable::One,
                            Var::Instance(i) => inst[*i as usize],
                            Var::Witness(i) => wit[*i as usize],
                        };
                        (*c, var)
                    })
                    .collect(),
            )
        };
        for [a, b, c] in &r.constraints {
            cs.enforce_r1cs_constraint(|| map(a), || map(b), || map(c))?;
        }
        Ok(())
    }
}
