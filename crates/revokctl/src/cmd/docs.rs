//! `completions` and `man`: generated from the clap definition, so they never drift.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{CliError, EXIT_OK};

/// Prints completions for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<i32, CliError> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "revokctl",
        &mut std::io::stdout(),
    );
    Ok(EXIT_OK)
}

/// Prints the man page.
pub fn man() -> Result<i32, CliError> {
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        // `revokctl man | head` is fine.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(EXIT_OK),
    }
}
