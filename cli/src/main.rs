//! `skjoldctl`: Skjold's command line. `inject` and `explain` run the webhook's own injection
//! library offline, so what they print is exactly what the webhook would do.

mod check;
mod offline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Skjold: Istio-compatible sidecar injection.
#[derive(Parser, Debug)]
#[command(name = "skjoldctl", version = offline::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the injected YAML of Pods and workloads (like `istioctl kube-inject`).
    Inject(offline::InjectArgs),
    /// Explain, step by step, whether and why a pod would be injected.
    Explain(offline::ExplainArgs),
    /// Check an installation through the current kubeconfig (like `linkerd check`).
    Check(check::CheckArgs),
    /// Print the version and the git commit it was built from.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inject(args) => offline::run_inject(&args),
        Command::Explain(args) => offline::run_explain(&args),
        Command::Check(args) => run_check(&args),
        Command::Version => {
            println!("{}", offline::version_line());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the async `check` on a small runtime; only this command needs one.
fn run_check(args: &check::CheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(check::run(args))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
