//! `provnet disputes` and `provnet dispute show ID`: a running node's court, read from its
//! admin endpoint (`--connect IP:PORT`, or `--data-dir`, whose admin.json names it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use provnet_wire::{CourtStatus, DisputeStatus};

#[derive(Args, Debug)]
pub struct Target {
    /// The node's admin endpoint.
    #[arg(long, value_name = "IP:PORT", conflicts_with = "data_dir")]
    pub connect: Option<String>,
    /// The node's data dir (its admin.json names the endpoint).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DisputeCommand {
    /// Dispute a claim by hand: the node (a challenger) runs the claim itself and, if its
    /// trace differs, disputes it and answers its rounds.
    Open {
        /// The claim's id (64 hex digits).
        claim: String,
        #[command(flatten)]
        target: Target,
        /// The node's admin token, when it has one (`--admin-token-file` of the node).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// One dispute, whole: sides, stage, clocks, verdict, time per phase.
    Show {
        /// The dispute's id, or the first hex digits of it (or of its claim's id).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

fn court(t: &Target) -> Result<CourtStatus> {
    let addr = admin_addr(t)?;
    let status = provnet_tui::client::fetch_status(&addr, Duration::from_secs(5))
        .map_err(|e| anyhow!("{addr}: {e}"))?;
    status
        .court
        .ok_or_else(|| anyhow!("{addr} keeps no court (it runs without a genesis)"))
}

fn admin_addr(t: &Target) -> Result<String> {
    Ok(match (&t.connect, &t.data_dir) {
        (Some(a), _) => a.clone(),
        (None, Some(dir)) => {
            let path = dir.join("admin.json");
            let v: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("parsing {}", path.display()))?;
            v["admin"]
                .as_str()
                .ok_or_else(|| anyhow!("{} names no admin address", path.display()))?
                .to_string()
        }
        (None, None) => bail!("say which node: --connect IP:PORT or --data-dir DIR"),
    })
}

/// POSTs a JSON body; the status code and the JSON answer.
fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, serde_json::Value)> {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let headers = format!("{auth}content-type: application/json\r\n");
    let (code, _, answer) = provnet_tui::client::request(
        addr,
        "POST",
        path,
        &headers,
        body.as_bytes(),
        Duration::from_secs(30),
    )
    .map_err(|e| anyhow!("{addr}: {e}"))?;
    Ok((
        code,
        serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null),
    ))
}

/// `provnet disputes`: the newest disputes, one line each.
pub fn list(t: &Target) -> Result<ExitCode> {
    let c = court(t)?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "claims: {} open of {}; disputes: {} open, {} shown (newest first); burned {}",
        c.claims_open,
        c.claims_total,
        c.disputes_open,
        c.disputes.len(),
        c.burned
    );
    for d in &c.disputes {
        println!(
            "  {}  claim {}  {:<9} segment {:>5}  {:<28} {}",
            &d.id[..16.min(d.id.len())],
            &d.claim[..16.min(d.claim.len())],
            d.stage,
            d.segment.map_or("-".into(), |s| s.to_string()),
            verdict(d),
            d.ms_to_verdict
                .map_or(String::new(), |ms| format!("in {ms} ms"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verdict(d: &DisputeStatus) -> String {
    match (&d.final_verdict, &d.verdict) {
        (Some(f), _) => f.clone(),
        (None, Some(v)) => format!("{v} (not final)"),
        (None, None) => "-".into(),
    }
}

pub fn run(cmd: DisputeCommand) -> Result<ExitCode> {
    match cmd {
        DisputeCommand::Open {
            claim,
            target,
            token_file,
        } => {
            let addr = admin_addr(&target)?;
            let token = match token_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let body = serde_json::json!({ "claim": claim }).to_string();
            let (code, answer) = post(&addr, "/disputes", token.as_deref(), &body)?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            }
            if code != 201 {
                let why = answer["error"].as_str().unwrap_or("no reason given");
                bail!("{addr} did not open the dispute ({code}): {why}");
            }
            if !target.json {
                println!(
                    "dispute {} opened on claim {}",
                    answer["dispute"].as_str().unwrap_or("?"),
                    answer["claim"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DisputeCommand::Show { id, target } => {
            let c = court(&target)?;
            let want = id.to_lowercase();
            let found: Vec<&DisputeStatus> = c
                .disputes
                .iter()
                .filter(|d| d.id.starts_with(&want) || d.claim.starts_with(&want))
                .collect();
            let d = match found.as_slice() {
                [d] => *d,
                [] => bail!(
                    "no dispute {id} among the {} this node shows (it keeps the newest)",
                    c.disputes.len()
                ),
                _ => bail!("{id} names {} disputes: give more digits", found.len()),
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(d)?);
                return Ok(ExitCode::SUCCESS);
            }
            let ms = |v: Option<u64>| v.map_or("-".into(), |x| format!("{x} ms"));
            println!("dispute    {}", d.id);
            println!("claim      {}", d.claim);
            println!("claimant   {}", d.claimant);
            println!("challenger {}", d.challenger);
            println!("stage      {} after {} round(s)", d.stage, d.rounds);
            if d.hi > d.lo {
                println!("cuts left  {}..{}", d.lo, d.hi);
            }
            if let Some(t) = d.deadline_ms {
                println!("clock ends {t} (Unix ms)");
            }
            println!(
                "segment    {}",
                d.segment.map_or("-".into(), |s| s.to_string())
            );
            println!("verdict    {}", verdict(d));
            if let Some(p) = &d.prover {
                println!("proved by  {p}");
            }
            println!("slashed    {}", d.slashed);
            println!(
                "time       audit {}, bisection {}, leaf {}, attestation {}; opened to final {}",
                ms(d.audit_ms),
                ms(d.bisect_ms),
                ms(d.leaf_ms),
                ms(d.attest_ms),
                ms(d.ms_to_verdict)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
