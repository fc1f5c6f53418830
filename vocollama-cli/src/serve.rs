//! `vocollama serve`: the model loaded once and served over HTTP (`vocollama-server`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use vocollama_server::ServerConfig;
use vocollama_server::store::parse_size;

use crate::ModelArgs;
use crate::run::load;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default: only this machine can connect).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every API request.
    #[arg(long, env = "VOCOLLAMA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model's name in `/v1/models` and requests (default: the model directory's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// VoCo tokens per image (default: `voco_num` of config.json, else 2).
    #[arg(long)]
    pub voco_tokens: Option<usize>,
    /// Requests decoded together at most.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Requests waiting for a place in the batch at most (beyond: 429).
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Largest request body (beyond: 413).
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Seconds a request may run before it ends with an error.
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Memory for VoCo caches, least recently used out first.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    pub cache_memory: u64,
    /// Keep every VoCo cache as a `.voco` file here too (survives restarts).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    if args.max_batch == 0 {
        anyhow::bail!("--max-batch: expected at least 1");
    }
    if args.request_timeout == 0 {
        anyhow::bail!("--request-timeout: expected at least 1 second");
    }
    let max_body = usize::try_from(args.max_body).map_err(|_| anyhow::anyhow!("--max-body: too large"))?;
    let loaded = load(&args.model)?;
    let voco_tokens = loaded.voco_tokens(args.voco_tokens)?;
    let model_id = match &args.served_model_name {
        Some(name) => name.clone(),
        None => std::fs::canonicalize(&args.model.model)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "vocollama".into()),
    };
    let config = ServerConfig {
        addr: SocketAddr::new(args.host, args.port),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_batch: args.max_batch,
        queue: args.queue,
        max_body,
        request_timeout: Duration::from_secs(args.request_timeout),
        cache_memory: args.cache_memory,
        cache_dir: args.cache_dir.clone(),
        voco_tokens,
        model_id: model_id.clone(),
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .try_init();
    let backend = args.model.backend.clone();
    let key = if config.api_key.is_some() { ", API key required" } else { "" };
    vocollama_server::serve(config, loaded.model, loaded.tokenizer, |addr| {
        eprintln!(
            "vocollama serve: {model_id} on {backend}, {voco_tokens} VoCo tokens per image{key}; listening on http://{addr}"
        );
    })
    .map_err(anyhow::Error::msg)
}
