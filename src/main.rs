//! The `batchgrid` binary: the built-in processors and the CLI.

fn main() -> std::process::ExitCode {
    batchgrid::main_with(batchgrid_core::processor::ProcessorRegistry::with_builtins())
}
