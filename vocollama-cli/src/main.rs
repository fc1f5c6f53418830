//! The `vocollama` command line: argument parsing and printing only; the
//! model logic lives in `vocollama-model`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vocollama_model::{LoadOptions, backend, info};

#[derive(Parser)]
#[command(name = "vocollama", version, about = "VoCo-LLaMA: vision compression with LLaVA-1.5 models, on Burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory (config.json + weights): LLaVA, llava-hf or plain LLaMA layout.
    #[arg(long)]
    model: PathBuf,
    /// CLIP vision tower directory, overriding `mm_vision_tower` of config.json.
    #[arg(long)]
    vision_tower: Option<PathBuf>,
}

impl ModelArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions { vision_tower: self.vision_tower.clone() }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture, parameter counts, dtypes and KV-cache size per token.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// List the backends compiled into this build.
    Backends,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info { model } => {
            println!("{}", info::describe(&model.model, &model.options())?);
        }
        Command::Backends => {
            for name in backend::compiled_backends() {
                println!("{name}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
