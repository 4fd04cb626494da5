//! The `ocelot` binary: everything lives in the library; see `ocelot::cli`.

fn main() -> std::process::ExitCode {
    ocelot::cli::main()
}
