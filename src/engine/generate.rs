//! Text generation through llama.cpp: sampling as llama.cpp's tools chain it, the model's own
//! chat template, and a conversation kept in the KV cache turn after turn.
//!
//! What `llama-completion -cnv` does, in the pieces a library needs:
//! - [`Sampling`] builds llama.cpp's sampler chain in `common_sampler`'s order (penalties, top-k,
//!   top-p, min-p, temperature, then a seeded draw); `temp <= 0` is greedy.
//! - [`Conversation`] formats each new message with the template stored in the GGUF
//!   (`tokenizer.chat_template`, applied by `llama_chat_apply_template`, the template engine
//!   `llama-completion` uses without `--jinja`) as `common_chat_format_single` does: only the text
//!   the new message adds to the formatted conversation is tokenized and decoded, so the KV cache
//!   always holds the conversation exactly as the template writes it.
//! - [`Generator`] decodes a prompt on top of what the cache holds, then samples token by token,
//!   handing each piece of text to the caller as soon as it is complete UTF-8, until an
//!   end-of-generation token, the token budget, or the end of the context.

use super::{engine_error, BatchToken, Model, Session, SessionOptions};
use anyhow::{bail, Context, Result};
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::time::Instant;

/// llama.cpp's "pick a random seed" value (`LLAMA_DEFAULT_SEED`).
pub const RANDOM_SEED: u32 = u32::MAX;

/// Sampling settings, named and defaulted as llama.cpp's tools (`common_params_sampling`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sampling {
    /// Temperature; `<= 0` samples greedily (the most likely token, always).
    pub temp: f32,
    /// Keep the `top_k` most likely tokens (`<= 0`: all).
    pub top_k: i32,
    /// Nucleus sampling: keep the smallest set whose probability reaches `top_p` (1.0: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0.0: off).
    pub min_p: f32,
    /// Penalise tokens seen in the last `repeat_last_n` tokens (1.0: off).
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    /// The draw's seed ([`RANDOM_SEED`]: a new one each run).
    pub seed: u32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: RANDOM_SEED,
        }
    }
}

impl Sampling {
    /// Settings that make no sense are errors, not surprises: llama.cpp would accept some of them
    /// and sample nonsense (a negative top-p), or abort (a zero repeat penalty).
    pub fn check(&self) -> Result<()> {
        if !self.temp.is_finite() {
            bail!("--temp must be a finite number, not {}", self.temp);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], not {}", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            bail!("--min-p must be in [0, 1], not {}", self.min_p);
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            bail!("--repeat-penalty must be positive (1.0 turns it off), not {}", self.repeat_penalty);
        }
        if self.repeat_last_n < 0 {
            bail!("--repeat-last-n must be at least 0, not {}", self.repeat_last_n);
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temp <= 0.0
    }

    /// The seed the draw actually uses: a fixed one as given, else one drawn now (reported, so a
    /// run can be repeated).
    pub fn resolved_seed(&self) -> u32 {
        if self.seed != RANDOM_SEED {
            return self.seed;
        }
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mixed = (nanos as u64) ^ ((std::process::id() as u64) << 32);
        // Never the "random" marker itself.
        (crate::util::rng::XorShift64::new(mixed | 1).next_u64() as u32).min(RANDOM_SEED - 1)
    }

    /// llama.cpp's sampler chain for these settings (`common_sampler_init` with the default order
    /// and the samplers a user can set here), drawing with `seed`.
    fn chain(&self, n_vocab: i32, seed: u32) -> LlamaSampler {
        let mut samplers = Vec::new();
        if self.repeat_penalty != 1.0 && self.repeat_last_n != 0 {
            samplers.push(LlamaSampler::penalties(n_vocab, self.repeat_last_n, self.repeat_penalty, 0.0, 0.0));
        }
        if self.is_greedy() {
            samplers.push(LlamaSampler::greedy());
        } else {
            if self.top_k > 0 {
                samplers.push(LlamaSampler::top_k(self.top_k));
            }
            if self.top_p < 1.0 {
                samplers.push(LlamaSampler::top_p(self.top_p, 1));
            }
            if self.min_p > 0.0 {
                samplers.push(LlamaSampler::min_p(self.min_p, 1));
            }
            samplers.push(LlamaSampler::temp(self.temp));
            samplers.push(LlamaSampler::dist(seed));
        }
        LlamaSampler::chain(samplers, true)
    }
}

/// Why a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The model produced an end-of-generation token (end of turn, end of text).
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context (`--ctx-size`) is full.
    ContextFull,
}

impl Stop {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stop::EndOfGeneration => "end of generation",
            Stop::MaxTokens => "max tokens",
            Stop::ContextFull => "context full",
        }
    }
}

/// One reply and what it cost.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Reply {
    pub text: String,
    /// Prompt tokens decoded for this reply (the new part only, in a conversation).
    pub prompt_tokens: usize,
    /// Tokens generated, the end-of-generation token included when there was one.
    pub generated_tokens: usize,
    pub prompt_s: f64,
    pub generation_s: f64,
    /// From the start of the prompt's decode to the first generated token.
    pub ttft_s: f64,
    pub stop: Option<Stop>,
}

impl Reply {
    pub fn prompt_tps(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_s)
    }

    /// Generation speed over the tokens after the first (the first one's time is the prompt's),
    /// as llama.cpp's `eval time` counts it.
    pub fn generation_tps(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.generation_s)
    }
}

fn rate(tokens: usize, secs: f64) -> f64 {
    if tokens == 0 || secs <= 0.0 {
        0.0
    } else {
        tokens as f64 / secs
    }
}

/// How to build a [`Generator`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub ctx_size: usize,
    /// Prompt tokens per decode.
    pub batch_size: usize,
    pub threads: usize,
    pub sampling: Sampling,
}

/// A context that generates: the KV cache (what has been said so far), the sampler, and the
/// position the next token goes to.
pub struct Generator<'m> {
    model: &'m Model,
    session: Session<'m>,
    sampler: LlamaSampler,
    sampling: Sampling,
    seed: u32,
    n_ctx: usize,
    /// Tokens in the KV cache.
    n_past: usize,
    /// A sampled token not decoded yet (the last token of the previous reply).
    pending: Option<LlamaToken>,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m Model, o: &GenerateOptions) -> Result<Generator<'m>> {
        o.sampling.check()?;
        if o.ctx_size < 2 {
            bail!("--ctx-size must be at least 2 tokens, not {}", o.ctx_size);
        }
        let n_batch = o.batch_size.clamp(1, o.ctx_size);
        let session = model.session_with(&SessionOptions {
            n_ctx: o.ctx_size,
            n_batch,
            threads: o.threads,
            n_seq: 1,
            unified_kv: false,
            f32_kv: false,
        })?;
        let seed = o.sampling.resolved_seed();
        let sampler = o.sampling.chain(model.n_vocab() as i32, seed);
        Ok(Generator {
            model,
            session,
            sampler,
            sampling: o.sampling.clone(),
            seed,
            n_ctx: o.ctx_size,
            n_past: 0,
            pending: None,
        })
    }

    /// The seed the sampler draws with.
    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// Tokens in the context so far, and its size.
    pub fn context_used(&self) -> (usize, usize) {
        (self.n_past, self.n_ctx)
    }

    /// Forget the conversation: empty KV cache, fresh sampler (same seed, so a reset conversation
    /// replays as the first one did).
    pub fn reset(&mut self) {
        self.session.clear();
        self.sampler = self.sampling.chain(self.model.n_vocab() as i32, self.seed);
        self.n_past = 0;
        self.pending = None;
    }

    /// Decode `prompt` after what the cache holds, then generate up to `max_tokens` tokens,
    /// handing each complete piece of text to `on_text` as it is produced.
    pub fn reply(
        &mut self,
        prompt: &[i32],
        max_tokens: usize,
        mut on_text: impl FnMut(&str) -> Result<()>,
    ) -> Result<Reply> {
        let needed = prompt.len() + usize::from(self.pending.is_some());
        if needed == 0 {
            bail!("the prompt is empty: nothing to generate from");
        }
        // Checked before anything changes: a turn that does not fit leaves the conversation as it was.
        if self.n_past + needed >= self.n_ctx {
            bail!(
                "the prompt needs {needed} tokens but the context has {} of {} left (raise --ctx-size{})",
                self.n_ctx - self.n_past,
                self.n_ctx,
                if self.n_past > 0 { ", or /reset the conversation" } else { "" }
            );
        }
        let mut tokens: Vec<LlamaToken> = self.pending.take().into_iter().collect();
        tokens.extend(prompt.iter().map(|&t| LlamaToken(t)));
        let mut reply = Reply { prompt_tokens: prompt.len(), ..Reply::default() };
        // The prompt counts towards repetition penalties, as in llama-completion.
        for &t in &tokens {
            self.sampler.accept(t);
        }
        let start = Instant::now();
        self.decode(&tokens)?;
        reply.prompt_s = start.elapsed().as_secs_f64();

        let vocab = self.model.inner.vocab();
        let mut text = Utf8Stream::default();
        let gen_start = Instant::now();
        loop {
            if reply.generated_tokens == max_tokens {
                reply.stop = Some(Stop::MaxTokens);
                break;
            }
            let token = self.sampler.sample(&self.session.ctx, -1);
            reply.generated_tokens += 1;
            if reply.generated_tokens == 1 {
                reply.ttft_s = start.elapsed().as_secs_f64();
            }
            if vocab.is_eog(token) {
                // Kept for the next turn: the template's text after a reply starts after it.
                self.pending = Some(token);
                reply.stop = Some(Stop::EndOfGeneration);
                break;
            }
            let piece = vocab.token_to_piece(token, false, None);
            if let Some(done) = text.push(&piece) {
                reply.text.push_str(&done);
                on_text(&done)?;
            }
            if self.n_past + 1 >= self.n_ctx {
                self.pending = Some(token);
                reply.stop = Some(Stop::ContextFull);
                break;
            }
            self.decode(&[token])?;
        }
        let rest = text.finish();
        if !rest.is_empty() {
            reply.text.push_str(&rest);
            on_text(&rest)?;
        }
        // The first token came out of the prompt's decode; the rest are generation proper.
        reply.generation_s = (gen_start.elapsed().as_secs_f64() - (reply.ttft_s - reply.prompt_s)).max(0.0);
        if reply.generated_tokens <= 1 {
            reply.generation_s = 0.0;
        }
        Ok(reply)
    }

    /// Decode `tokens` at the next positions, `n_batch` at a time; logits of the last one only.
    fn decode(&mut self, tokens: &[LlamaToken]) -> Result<()> {
        let n = tokens.len();
        let batch: Vec<BatchToken> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| BatchToken { token: t.0, pos: self.n_past + i, seqs: vec![0], logits: i + 1 == n })
            .collect();
        crate::engine::log::clear();
        // The sampler reads the last token's logits from the context itself.
        self.session
            .decode_with(&batch, |_| Ok(()))
            .map_err(|_| engine_error(&self.model.path, "llama.cpp could not decode"))?;
        self.n_past += n;
        Ok(())
    }
}

/// Bytes of token pieces turned into text only where they end a UTF-8 character: a character
/// split over two tokens (an emoji, a CJK character in byte-level BPE) is printed whole.
#[derive(Default)]
struct Utf8Stream {
    bytes: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, piece: &[u8]) -> Option<String> {
        self.bytes.extend_from_slice(piece);
        let complete = match std::str::from_utf8(&self.bytes) {
            Ok(_) => self.bytes.len(),
            // An invalid byte (not an unfinished character) is passed on as U+FFFD now.
            Err(e) if e.error_len().is_some() => self.bytes.len(),
            Err(e) => e.valid_up_to(),
        };
        if complete == 0 {
            return None;
        }
        let rest = self.bytes.split_off(complete);
        let done = String::from_utf8_lossy(&std::mem::replace(&mut self.bytes, rest)).into_owned();
        Some(done)
    }

    fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.bytes)).into_owned()
    }
}

/// A conversation formatted by the model's chat template, message by message.
pub struct Conversation {
    template: LlamaChatTemplate,
    /// (role, content) of every message so far.
    messages: Vec<(String, String)>,
    /// Nothing of the conversation is in the cache yet (a first turn, or after a reset).
    fresh: bool,
}

impl Conversation {
    /// The model's own template (`tokenizer.chat_template`), or a built-in one llama.cpp knows by
    /// name (`chatml`, `llama2`, `llama3`, …) or a template text given as `template`.
    pub fn new(model: &Model, template: Option<&str>) -> Result<Conversation> {
        let template = match template {
            Some(t) => LlamaChatTemplate::new(t).context("the chat template holds a NUL byte")?,
            None => model.inner.chat_template(None).map_err(|_| {
                anyhow::anyhow!(
                    "{}: the model has no chat template (tokenizer.chat_template); give one with --chat-template NAME",
                    model.path.display()
                )
            })?,
        };
        let conversation = Conversation { template, messages: Vec::new(), fresh: true };
        // llama.cpp recognises templates by their text: find out now whether it knows this one.
        conversation.format(model, &[("user".into(), "hi".into())], true).map_err(|_| {
            anyhow::anyhow!(
                "{}: llama.cpp does not support this chat template; give a built-in one with --chat-template (chatml, llama3, …)",
                model.path.display()
            )
        })?;
        Ok(conversation)
    }

    /// Start the conversation with a system message (kept across resets).
    pub fn set_system(&mut self, content: &str) {
        self.messages.retain(|(role, _)| role != "system");
        self.messages.insert(0, ("system".into(), content.to_string()));
    }

    fn format(&self, model: &Model, messages: &[(String, String)], add_assistant: bool) -> Result<String> {
        if messages.is_empty() {
            return Ok(String::new());
        }
        let chat = messages
            .iter()
            .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .context("a chat message holds a NUL byte")?;
        model.inner.apply_chat_template(&self.template, &chat, add_assistant).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Add the user's message and return the text to decode next: on a fresh conversation the
    /// whole formatted prompt (system message included), else only what the message adds to the
    /// formatted conversation, ending with the assistant's opening. This is llama-completion's
    /// `-cnv` (`common_chat_templates_apply`, then `common_chat_format_single` for each turn).
    pub fn add_user(&mut self, model: &Model, content: &str) -> Result<String> {
        let past = if self.fresh { String::new() } else { self.format(model, &self.messages, false)? };
        self.messages.push(("user".into(), content.to_string()));
        let whole = self.format(model, &self.messages, true)?;
        if self.fresh {
            self.fresh = false;
            return Ok(whole);
        }
        // The formatted past ends with the newline after the last end-of-turn token, which the
        // cache does not hold yet (it holds the token itself): keep it.
        let mut delta = String::new();
        if past.ends_with('\n') {
            delta.push('\n');
        }
        match whole.strip_prefix(past.as_str()) {
            Some(rest) => delta.push_str(rest),
            None => {
                bail!("the chat template rewrites earlier messages, so a conversation cannot continue in the cache")
            }
        }
        Ok(delta)
    }

    /// Take back the last user message (its turn could not be taken).
    pub fn undo_user(&mut self) {
        if self.messages.last().is_some_and(|(role, _)| role == "user") {
            self.messages.pop();
            self.fresh = !self.messages.iter().any(|(role, _)| role != "system");
        }
    }

    /// Record the assistant's reply (its tokens are already in the cache).
    pub fn add_reply(&mut self, text: &str) {
        self.messages.push(("assistant".into(), text.to_string()));
    }

    /// Forget every message but the system message.
    pub fn reset(&mut self) {
        self.messages.retain(|(role, _)| role == "system");
        self.fresh = true;
    }

    /// User messages so far.
    pub fn turns(&self) -> usize {
        self.messages.iter().filter(|(r, _)| r == "user").count()
    }
}

/// The template's text tokenized as llama-completion tokenizes a conversation: special tokens
/// parsed (`<|im_start|>` is one token), BOS added on the first turn when the vocabulary asks.
pub fn tokenize_chat(model: &Model, text: &str, first_turn: bool) -> Vec<i32> {
    model.inner.vocab().tokenize(text.as_bytes(), first_turn, true).into_iter().map(|t| t.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_holds_a_split_character_until_it_is_whole() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(b"a"), Some("a".into()));
        assert_eq!(s.push(&euro[..2]), None);
        assert_eq!(s.push(&euro[2..]), Some("€".into()));
        assert_eq!(s.push(&[b'x', euro[0]]), Some("x".into()));
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn nonsense_sampling_settings_are_refused() {
        let ok = Sampling::default();
        assert!(ok.check().is_ok());
        for bad in [
            Sampling { top_p: 0.0, ..ok.clone() },
            Sampling { top_p: 1.5, ..ok.clone() },
            Sampling { min_p: -0.1, ..ok.clone() },
            Sampling { repeat_penalty: 0.0, ..ok.clone() },
            Sampling { temp: f32::NAN, ..ok.clone() },
            Sampling { repeat_last_n: -2, ..ok.clone() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_fixed_seed_is_kept_and_a_random_one_is_drawn() {
        assert_eq!(Sampling { seed: 42, ..Sampling::default() }.resolved_seed(), 42);
        assert_ne!(Sampling::default().resolved_seed(), RANDOM_SEED);
    }
}
