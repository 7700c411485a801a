use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = artifactfs::cli::Cli::parse();
    match artifactfs::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
