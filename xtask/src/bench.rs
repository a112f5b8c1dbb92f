//! `cargo xtask bench`.

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Options {}

/// Runs `cargo xtask bench`.
pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
