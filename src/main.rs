fn main() -> std::process::ExitCode {
    voicerag::cli::main()
}
