use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .is_some_and(|a| artifactfs::mount_helper::invoked_as_helper(a))
    {
        return artifactfs::mount_helper::run(&args[1..]);
    }
    let cli = artifactfs::cli::parse(args);
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
