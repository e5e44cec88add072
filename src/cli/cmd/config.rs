//! `voicerag config check`: validate the configuration and print the effective one.

use std::process::ExitCode;

use voicerag::config::Config;

pub fn config_check(config: &Config) -> anyhow::Result<ExitCode> {
    config.check_files()?;
    let text = config.to_toml_redacted()?;
    print!("{text}");
    eprintln!("config: ok");
    Ok(ExitCode::SUCCESS)
}
