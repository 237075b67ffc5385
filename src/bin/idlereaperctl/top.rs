//! `idlereaperctl top` (placeholder while the live view is built).

use std::path::Path;

use idlereaper::ctl::Failure;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Stop after this many refreshes (default: until q, Ctrl-C or the end of input).
    #[arg(short = 'n', long, value_name = "COUNT")]
    pub count: Option<u64>,
}

pub fn run(_socket: &Path, _options: &Options) -> Result<(), Failure> {
    Err(Failure::Refused("top: not yet".into()))
}
