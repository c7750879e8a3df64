//! `halab`: see `halab --help`. All logic lives in the library; this only starts it.

fn main() -> std::process::ExitCode {
    halab::cli::main()
}
