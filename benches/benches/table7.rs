//! The full benchmark report (see `vocollama bench --help` for the flags):
//!
//!     cargo bench -p vocollama-benches --bench table7 -- --shape small --backends flex,wgpu

use clap::Parser;
use vocollama_benches::BenchArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let cli = Cli::parse_from(&args);
    let command = format!("cargo bench -p vocollama-benches --bench table7 -- {}", args[1..].join(" "));
    let report = vocollama_benches::run(&cli.bench, command, &mut |m| eprintln!("{m}")).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let markdown = match &cli.bench.out {
        Some(out) => vocollama_benches::write(&report, out).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        }),
        None => report.markdown(),
    };
    print!("{markdown}");
}
