//! `splitter`: the command line. See `splitter --help`.

fn main() -> std::process::ExitCode {
    splitter_user::cli::main()
}
