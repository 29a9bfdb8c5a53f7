//! The request schemas of vLLM's OpenAI server (0.4–0.6), field for field and in declaration
//! order, as `shared/reference/vllm_reference_app.py` defines them.

use super::schema::{Schema, Ty};

pub(super) const ROLES: &[&str] = &["system", "user", "assistant", "tool"];
const TOOL_CHOICES: &[&str] = &["none", "auto", "required"];

fn stream_options() -> Ty {
    Ty::model(Schema::new("StreamOptions").optional("include_usage", Ty::Bool.nullable()))
        .nullable()
}

fn stop() -> Ty {
    Ty::union([Ty::Str, Ty::list(Ty::Str)]).nullable()
}

fn penalty() -> Ty {
    Ty::Float.ge(-2).le(2).nullable()
}

/// `Union[List[int], List[List[int]], str, List[str]]`, the `prompt` of completions and the
/// `input` of embeddings.
fn prompt() -> Ty {
    Ty::union([
        Ty::list(Ty::Int),
        Ty::list(Ty::list(Ty::Int)),
        Ty::Str,
        Ty::list(Ty::Str),
    ])
}

/// `ChatCompletionRequest`.
pub(super) fn chat_completion() -> Schema {
    let message = Schema::new("ChatMessage")
        .required("role", Ty::Literal(ROLES))
        .optional(
            "content",
            Ty::union([Ty::Str, Ty::list(Ty::dict(Ty::Any))]).nullable(),
        )
        .optional("name", Ty::Str.nullable())
        .optional("tool_call_id", Ty::Str.nullable())
        .optional("tool_calls", Ty::list(Ty::dict(Ty::Any)).nullable())
        .optional("reasoning_content", Ty::Str.nullable());
    let function = Schema::new("FunctionDefinition")
        .required("name", Ty::Str)
        .optional("description", Ty::Str.nullable())
        .optional("parameters", Ty::dict(Ty::Any).nullable());
    let tool = Schema::new("ChatCompletionToolsParam")
        .optional("type", Ty::Literal(&["function"]))
        .required("function", Ty::model(function));
    Schema::new("ChatCompletionRequest")
        .required("messages", Ty::list(Ty::model(message)))
        .required("model", Ty::Str)
        .optional("frequency_penalty", penalty())
        .optional("logit_bias", Ty::dict(Ty::Float).nullable())
        .optional("logprobs", Ty::Bool.nullable())
        .optional("top_logprobs", Ty::Int.ge(0).le(20).nullable())
        .optional("max_tokens", Ty::Int.ge(1).nullable())
        .optional("n", Ty::Int.ge(1).le(10).nullable())
        .optional("presence_penalty", penalty())
        .optional("seed", Ty::Int.nullable())
        .optional("stop", stop())
        .optional("stream", Ty::Bool.nullable())
        .optional("stream_options", stream_options())
        .optional("temperature", Ty::Float.ge(0).le(2).nullable())
        .optional("top_p", Ty::Float.ge(0).le(1).nullable())
        .optional("tools", Ty::list(Ty::model(tool)).nullable())
        .optional(
            "tool_choice",
            Ty::union([Ty::Literal(TOOL_CHOICES), Ty::dict(Ty::Any)]).nullable(),
        )
        .optional("user", Ty::Str.nullable())
        .optional("use_beam_search", Ty::Bool.nullable())
        .optional("top_k", Ty::Int.nullable())
        .optional("length_penalty", Ty::Float.nullable())
        .optional("chat_template_kwargs", Ty::dict(Ty::Any).nullable())
}

/// `CompletionRequest`.
pub(super) fn completion() -> Schema {
    Schema::new("CompletionRequest")
        .required("model", Ty::Str)
        .required("prompt", prompt())
        .optional("echo", Ty::Bool.nullable())
        .optional("frequency_penalty", penalty())
        .optional("logprobs", Ty::Int.nullable())
        .optional("max_tokens", Ty::Int.ge(1).nullable())
        .optional("n", Ty::Int.ge(1).le(10))
        .optional("presence_penalty", penalty())
        .optional("seed", Ty::Int.nullable())
        .optional("stop", stop())
        .optional("stream", Ty::Bool.nullable())
        .optional("stream_options", stream_options())
        .optional("temperature", Ty::Float.ge(0).le(2).nullable())
        .optional("top_p", Ty::Float.ge(0).le(1).nullable())
        .optional("user", Ty::Str.nullable())
}

/// `EmbeddingRequest`.
pub(super) fn embedding() -> Schema {
    Schema::new("EmbeddingRequest")
        .required("model", Ty::Str)
        .required("input", prompt())
        .optional("encoding_format", Ty::Literal(&["float", "base64"]))
        .optional("dimensions", Ty::Int.nullable())
        .optional("user", Ty::Str.nullable())
}
