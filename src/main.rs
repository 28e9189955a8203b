fn main() -> std::process::ExitCode {
    ably_tokend::cli::run()
}
