//! `plexus-agent`: the Plexus node agent and its tools. The work is in the library
//! (`plexus_agent`); this parses the command line and reports the outcome.

use std::process::ExitCode;

use clap::Parser;
use plexus_agent::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.log_settings().and_then(|settings| plexus_agent::logging::init(&settings)) {
        eprintln!("plexus-agent: {e:#}");
        return ExitCode::from(2);
    }
    match cli::exec(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined by ": ".
            eprintln!("plexus-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
