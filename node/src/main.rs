//! The `provnet` binary: command-line interface and wiring for the provnet prover subnet.

mod admin;
mod bench;
mod bench_dispute;
mod bench_msm;
mod bench_verify;
mod ceremony_cli;
mod ceremony_net;
mod challenge;
mod claim;
mod cli;
mod demo;
mod devnet;
mod disputes_cli;
mod export_cli;
#[cfg(feature = "adversary")]
mod flood;
mod genesis;
mod identity;
mod inputs;
mod logring;
mod prove;
mod roles;
mod run;
mod sync;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if cli.is_filter() {
        default_sigpipe();
    }
    init_tracing(cli.log_json, cli.default_log_level(), cli.log_sink());
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets SIGPIPE end the process, as it ends `cat` or `grep`, instead of `println!`
/// panicking on a closed pipe. Rust starts programs with SIGPIPE ignored.
#[cfg(unix)]
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL only resets the disposition of SIGPIPE; it runs before
    // any other thread exists, and no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn init_tracing(json: bool, default_level: &str, sink: cli::LogSink) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let discard = matches!(sink, cli::LogSink::Discard);
    let file = match sink {
        cli::LogSink::File(path) => {
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                });
            match opened {
                Ok(f) => Some(std::sync::Arc::new(f)),
                Err(e) => {
                    eprintln!("cannot open the log file {}: {e}", path.display());
                    None
                }
            }
        }
        _ => None,
    };
    let ansi = file.is_none();
    let writer = move || -> BoxMakeWriter {
        match (&file, discard) {
            (Some(f), _) => BoxMakeWriter::new(f.clone()),
            (None, true) => BoxMakeWriter::new(std::io::sink),
            (None, false) => BoxMakeWriter::new(std::io::stderr),
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| fmt::layer().json().with_writer(writer())))
        .with((!json).then(|| fmt::layer().with_ansi(ansi).with_writer(writer())))
        .with(logring::RingLayer(logring::LogRing::global()))
        .init();
}
