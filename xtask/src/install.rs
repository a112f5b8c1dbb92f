//! `cargo xtask install`.

/// Options of `cargo xtask install`.
#[derive(clap::Args)]
pub struct Options {}

/// Runs `cargo xtask install`.
pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
