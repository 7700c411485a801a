use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = artifactfs::cli::Cli::parse();
    if let Err(e) = artifactfs::faults::arm_from_env() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match artifactfs::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
