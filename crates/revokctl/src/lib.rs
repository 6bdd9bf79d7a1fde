//! `revokctl`: the revokd admin CLI, as a library the binary (and tests) call.
//!
//! # Layout
//! - [`cli`]: the command line (clap).
//! - [`cmd`]: one module per subcommand.
//! - [`output`]: the one output layer (table or JSON lines).
//! - [`time`]: the time forms flags accept.
//! - [`error`]: failures and their exit codes.

pub mod cli;
pub mod cmd;
pub mod error;
pub mod output;
pub mod time;
