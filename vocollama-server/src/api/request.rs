//! A chat completion request, read from its JSON field by field so that
//! every refusal names the field (`messages[0].content[1].image_url.url`) and
//! what was expected. What the model cannot honour is refused, never ignored.

use serde_json::{Map, Value};
use vocollama_model::SamplingConfig;

use super::error::ApiError;
use super::image_url::{ImageSource, parse_url};

/// What a chat completion asks for, checked.
#[derive(Debug)]
pub struct ChatRequest {
    /// A system prompt in place of the template's own (a first `system` or `developer` message).
    pub system: Option<String>,
    /// Questions and answers in order; the last question is unanswered.
    pub turns: Vec<(String, Option<String>)>,
    /// The first user message's images, in order: one image, or the frames of a clip.
    pub images: Vec<ImageSource>,
    pub sampling: SamplingConfig,
    /// `max_completion_tokens` or `max_tokens`; `None`: until the context ends.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Fields OpenAI defines that this server does not implement: refused unless at their default.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("tools", "tool calls are not supported"),
    ("functions", "function calls are not supported"),
    ("logit_bias", "logit_bias is not supported"),
    ("audio", "audio output is not supported"),
    ("prediction", "predicted outputs are not supported"),
];

fn number(v: &Value, param: &str, want: &str) -> Result<f64, ApiError> {
    v.as_f64().ok_or_else(|| ApiError::invalid(param, format!("{param}: expected {want}, got {v}")))
}

fn count(v: &Value, param: &str) -> Result<u64, ApiError> {
    v.as_u64().ok_or_else(|| ApiError::invalid(param, format!("{param}: expected a whole number ≥ 0, got {v}")))
}

/// `Some(value)` of a field that is present and not null.
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).filter(|v| !v.is_null())
}

impl ChatRequest {
    /// Parse and check a request for the model served as `model_id`.
    pub fn parse(body: &[u8], model_id: &str) -> Result<Self, ApiError> {
        let value = super::chat::parse_json(body)?;
        let o = value.as_object().ok_or_else(|| ApiError::malformed("the request body must be a JSON object"))?;
        match field(o, "model") {
            None => {}
            Some(Value::String(m)) if m == model_id => {}
            Some(Value::String(m)) => {
                return Err(ApiError::not_found(
                    Some("model".into()),
                    "model_not_found",
                    format!("model: `{m}` is not served here; this server serves `{model_id}` (GET /v1/models)"),
                ));
            }
            Some(v) => return Err(ApiError::invalid("model", format!("model: expected a string, got {v}"))),
        }
        for (name, why) in UNSUPPORTED {
            if field(o, name).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
                return Err(ApiError::invalid(*name, format!("{name}: {why} by this server")));
            }
        }
        let mut sampling = SamplingConfig::default();
        if let Some(v) = field(o, "temperature") {
            let t = number(v, "temperature", "a number in [0, 2]")?;
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature",
                    format!("temperature: expected a number in [0, 2], got {t}"),
                ));
            }
            sampling.temperature = t as f32;
        }
        if let Some(v) = field(o, "top_p") {
            sampling.top_p = number(v, "top_p", "a number in (0, 1]")? as f32;
        }
        if let Some(v) = field(o, "top_k") {
            sampling.top_k = count(v, "top_k")? as usize;
        }
        if let Some(v) = field(o, "repetition_penalty") {
            sampling.repetition_penalty = number(v, "repetition_penalty", "a number > 0 (1 = off)")? as f32;
        }
        if let Some(v) = field(o, "seed") {
            let s =
                v.as_i64().ok_or_else(|| ApiError::invalid("seed", format!("seed: expected an integer, got {v}")))?;
            sampling.seed = s as u64;
        }
        // The sampler's own ranges (OpenAI's bound on temperature, checked above, is tighter).
        if let Some((param, message)) = sampling.problem() {
            return Err(ApiError::invalid(param, message));
        }
        for name in ["frequency_penalty", "presence_penalty"] {
            if let Some(v) = field(o, name) {
                let x = number(v, name, "a number")?;
                if x != 0.0 {
                    return Err(ApiError::invalid(
                        name,
                        format!(
                            "{name}: only 0 is supported (use repetition_penalty, the sampler's CTRL-style penalty)"
                        ),
                    ));
                }
            }
        }
        if let Some(v) = field(o, "n")
            && count(v, "n")? != 1
        {
            return Err(ApiError::invalid("n", format!("n: only 1 choice per request is supported, got {v}")));
        }
        if field(o, "logprobs").is_some_and(|v| v != &Value::Bool(false)) {
            return Err(ApiError::invalid("logprobs", "logprobs: log probabilities are not supported"));
        }
        if let Some(v) = field(o, "response_format")
            && v.get("type").and_then(Value::as_str) != Some("text")
        {
            return Err(ApiError::invalid(
                "response_format",
                "response_format: only {\"type\": \"text\"} is supported",
            ));
        }
        // OpenAI's newer name wins where both are given.
        let mut max_tokens = None;
        for name in ["max_completion_tokens", "max_tokens"] {
            if let Some(v) = field(o, name) {
                let m = count(v, name)?;
                if m == 0 {
                    return Err(ApiError::invalid(name, format!("{name}: expected at least 1")));
                }
                max_tokens.get_or_insert(m.min(usize::MAX as u64) as usize);
            }
        }
        let stop = match field(o, "stop") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.len() <= 4 => a
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::invalid(format!("stop[{i}]"), format!("stop[{i}]: expected a string, got {s}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return Err(ApiError::invalid("stop", format!("stop: expected a string or up to 4 strings, got {v}")));
            }
        };
        if let Some(i) = stop.iter().position(String::is_empty) {
            return Err(ApiError::invalid(format!("stop[{i}]"), "stop: a stop sequence cannot be empty"));
        }
        let stream = match field(o, "stream") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(ApiError::invalid("stream", format!("stream: expected true or false, got {v}"))),
        };
        let include_usage = match field(o, "stream_options") {
            None => false,
            Some(v) => {
                if !stream {
                    return Err(ApiError::invalid("stream_options", "stream_options: only allowed with stream: true"));
                }
                match v.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(x) => {
                        return Err(ApiError::invalid(
                            "stream_options.include_usage",
                            format!("stream_options.include_usage: expected true or false, got {x}"),
                        ));
                    }
                }
            }
        };
        let Conversation { system, turns, images } = conversation(field(o, "messages"))?;
        Ok(Self { system, turns, images, sampling, max_tokens, stop, stream, include_usage })
    }
}

/// A message's content: a string, or parts of text and (in user messages) images.
fn content(v: &Value, param: &str, images: Option<&mut Vec<ImageSource>>) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text: Vec<&str> = Vec::new();
            let mut images = images;
            for (j, part) in parts.iter().enumerate() {
                let p = format!("{param}[{j}]");
                let kind = part.get("type").and_then(Value::as_str);
                match kind {
                    Some("text") => text.push(part.get("text").and_then(Value::as_str).ok_or_else(|| {
                        ApiError::invalid(format!("{p}.text"), format!("{p}.text: expected a string"))
                    })?),
                    Some("image_url") => {
                        let p = format!("{p}.image_url.url");
                        let url = part
                            .get("image_url")
                            .and_then(|u| u.get("url"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| ApiError::invalid(&p, format!("{p}: expected a string")))?;
                        match images.as_deref_mut() {
                            Some(images) => images.push(parse_url(url, &p)?),
                            None => {
                                return Err(ApiError::invalid(
                                    &p,
                                    format!(
                                        "{p}: images are taken in the first user message only (VoCo-LLaMA's prompt puts the image before the conversation)"
                                    ),
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{p}.type"),
                            format!(
                                "{p}.type: expected \"text\" or \"image_url\", got {}",
                                part.get("type").unwrap_or(&Value::Null)
                            ),
                        ));
                    }
                }
            }
            // Parts are joined by a space: the VoCo template drops newlines.
            Ok(text.join(" "))
        }
        v => Err(ApiError::invalid(param, format!("{param}: expected a string or an array of content parts, got {v}"))),
    }
}

/// What `messages` holds.
struct Conversation {
    system: Option<String>,
    /// Questions each with its answer (the last question unanswered).
    turns: Vec<(String, Option<String>)>,
    images: Vec<ImageSource>,
}

/// `messages` → an optional system prompt (a first `system` or `developer`
/// message), the turns (user questions each answered by the assistant message
/// after it, the last unanswered) and the first user message's images.
fn conversation(messages: Option<&Value>) -> Result<Conversation, ApiError> {
    let messages = messages
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("messages", "messages: expected an array of messages"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages: at least one user message is needed"));
    }
    let mut turns: Vec<(String, Option<String>)> = Vec::new();
    let mut images = Vec::new();
    let mut system = None;
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let body = m
            .get("content")
            .ok_or_else(|| ApiError::invalid(format!("{param}.content"), format!("{param}.content: missing")))?;
        let expected = if turns.last().is_some_and(|t| t.1.is_none()) { "assistant" } else { "user" };
        match role {
            "system" | "developer" if i == 0 => system = Some(content(body, &format!("{param}.content"), None)?),
            "system" | "developer" => {
                return Err(ApiError::invalid(
                    format!("{param}.role"),
                    format!("{param}.role: a {role} message is taken only as the first message"),
                ));
            }
            r if r != expected => {
                return Err(ApiError::invalid(
                    format!("{param}.role"),
                    format!(
                        "{param}.role: expected \"{expected}\" (user and assistant messages alternate, starting and ending with the user), got {}",
                        m.get("role").unwrap_or(&Value::Null)
                    ),
                ));
            }
            "user" => {
                let first = turns.is_empty();
                let text = content(body, &format!("{param}.content"), first.then_some(&mut images))?;
                turns.push((text, None));
            }
            _ => {
                let text = content(body, &format!("{param}.content"), None)?;
                turns.last_mut().expect("a question before an answer").1 = Some(text);
            }
        }
    }
    if turns.last().is_some_and(|t| t.1.is_some()) {
        return Err(ApiError::invalid("messages", "messages: the last message must be the user's"));
    }
    if images.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages: the first user message needs an image (an image_url part); VoCo-LLaMA answers about images",
        ));
    }
    Ok(Conversation { system, turns, images })
}
