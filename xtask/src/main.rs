//! `cargo xtask`: the project's own tasks, one module per subcommand.

mod bench;
mod build;
mod ebpf;
mod install;
mod package;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "splitter's build, benchmark, install and package tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the splitter against HAProxy and the bare backend (SPEC section 8).
    Bench(bench::Options),
    /// Build the release splitter, optimised with the profile of its demo load (PGO); prints
    /// the binary's path.
    Build(build::BuildOptions),
    /// Build release and install the binary, the systemd unit and a default configuration.
    Install(install::Options),
    /// Build release and a Debian package (.deb) of the same files; prints its path.
    Package(package::Options),
    /// Install the eBPF toolchain when missing: the pinned nightly with rust-src, and bpf-linker.
    SetupEbpf(ebpf::Options),
    /// Minutes of checked load on the splitter, its RSS and descriptors sampled; with --chaos,
    /// backends killed, blackholed, slowed and made hostile meanwhile (SPEC section 9).
    Soak(soak::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(opts) => bench::run(opts),
        Command::Build(opts) => build::run(opts),
        Command::Install(opts) => install::run(opts),
        Command::Package(opts) => package::run(opts),
        Command::SetupEbpf(opts) => ebpf::run(opts),
        Command::Soak(opts) => soak::run(opts),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap's own checks of the command line (unique names and groups, valid defaults), which
    /// it otherwise makes only when a command is parsed.
    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
