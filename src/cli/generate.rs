use super::load_args::LoadArgs;
use super::{output, tokens_arg, Global};
use anyhow::{bail, Context, Result};
use microscale::bench::generate::{generate_capped, Capped, CappedGeneration, GenerationReport, Talk, STATS_PREFIX};
use microscale::bench::profiles::{parse_memory, profile, Overrides};
use microscale::engine::generate::{tokenize_chat, Conversation, GenerateOptions, Generator, Sampling, RANDOM_SEED};
use microscale::engine::log::{set_mode, LogMode};
use microscale::engine::Model;
use microscale::util::paths::IoPaths;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sampling flags, as llama.cpp's tools spell them (shared by `generate` and `chat`).
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 samples greedily (always the most likely token: the same text every run).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temp: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: i32,
    /// Keep the smallest set of tokens whose probability reaches P (1.0: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0.0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalise tokens repeated within the last --repeat-last-n tokens (1.0: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: i32,
    /// Seed of the draw (default: a new one each run, printed so that the run can be repeated).
    #[arg(short, long)]
    seed: Option<u32>,
}

impl SamplingArgs {
    pub fn sampling(&self) -> Result<Sampling> {
        if self.seed == Some(RANDOM_SEED) {
            bail!("--seed {RANDOM_SEED} is llama.cpp's \"random seed\" marker; leave --seed out for a random seed");
        }
        let s = Sampling {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed.unwrap_or(RANDOM_SEED),
        };
        s.check()?;
        Ok(s)
    }

    /// The same flags for a child process.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<String> = vec![
            format!("--temp={}", self.temp),
            format!("--top-k={}", self.top_k),
            format!("--top-p={}", self.top_p),
            format!("--min-p={}", self.min_p),
            format!("--repeat-penalty={}", self.repeat_penalty),
            format!("--repeat-last-n={}", self.repeat_last_n),
        ];
        if let Some(s) = self.seed {
            a.push(format!("--seed={s}"));
        }
        a.into_iter().map(OsString::from).collect()
    }
}

/// Context, thread and offload flags (shared by `generate` and `chat`).
#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("threads", |a| a.help("Threads (default: all cores; under --profile: the profile's)")))]
pub struct ContextArgs {
    /// Context size in tokens: the prompt, the conversation so far and the reply must fit.
    #[arg(short = 'c', long, default_value_t = 4096, value_parser = tokens_arg::<2>())]
    ctx_size: usize,
    /// Prompt tokens decoded per batch.
    #[arg(short = 'b', long, default_value_t = 2048, value_parser = tokens_arg::<1>())]
    batch_size: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// The chat template: a name llama.cpp knows (chatml, llama2, llama3, phi3, gemma, …) or a
    /// template's text (default: the model's own, tokenizer.chat_template).
    #[arg(long, value_name = "NAME")]
    chat_template: Option<String>,
    /// A system message at the start of the conversation (with --chat).
    #[arg(long = "system", visible_alias = "sys", value_name = "TEXT")]
    system: Option<String>,
}

impl ContextArgs {
    /// The same flags for a capped child, but the loading ones (the child's spec carries them:
    /// the profile's thread count, the offload, mmap).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> =
            vec![format!("--ctx-size={}", self.ctx_size).into(), format!("--batch-size={}", self.batch_size).into()];
        if let Some(s) = &self.system {
            a.extend(["--system".into(), s.into()]);
        }
        if let Some(t) = &self.chat_template {
            a.extend(["--chat-template".into(), t.into()]);
        }
        a
    }

    pub fn options(&self, sampling: Sampling) -> GenerateOptions {
        GenerateOptions {
            ctx_size: self.ctx_size,
            batch_size: self.batch_size,
            threads: self.load.threads_or_all(),
            sampling,
        }
    }

    /// The conversation with its system message, if any.
    pub fn conversation(&self, model: &Model) -> Result<Conversation> {
        let mut conversation = Conversation::new(model, self.chat_template.as_deref())?;
        if let Some(system) = &self.system {
            conversation.set_system(system);
        }
        Ok(conversation)
    }
}

/// Generate text from a prompt, streamed to stdout as the model writes it.
///
/// Runs the model through llama.cpp. With --chat the prompt is a user message formatted with
/// the model's own chat template (tokenizer.chat_template in the GGUF, through llama.cpp's
/// template support; --system adds a system message), and generation stops at the model's
/// end-of-turn token, as `llama-completion -cnv -st` does. Sampling is llama.cpp's chain:
/// repeat penalty, top-k, top-p, min-p, temperature, then a seeded draw; --temp 0 is greedy.
/// At the end, stderr gets the prompt and generation speeds (tokens/s), the time to first
/// token, the load time and the peak memory; --json prints all of it, and the text, as one
/// JSON document instead.
///
/// Under a device's caps (--profile, --mem-limit, --cpu-quota) the generation runs in a
/// capped child process as `bench` does (threads pinned, memory capped by a cgroup, model
/// read into RAM so that the cap decides whether it fits), still streaming. A model that
/// does not fit says so ("does not fit in 64 MiB") and the command exits non-zero.
///
/// Examples:
///   microscale generate q4.gguf --chat --prompt "What is the capital of France?" --temp 0
///   microscale generate q4.gguf -p "Once upon a time" --max-tokens 64 --seed 42
///   microscale generate q4.gguf --chat -p "Hi!" --profile pi4-4gb
///   microscale generate q4.gguf --chat -p "Hi!" --profile host --mem-limit 64MiB
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The GGUF model (or a LiteRT .tflite, with --tokenizer: run greedily by LiteRT's interpreter).
    model: PathBuf,
    /// The GGUF whose vocabulary and chat template serve a LiteRT MODEL (the file it came from).
    #[arg(long, value_name = "GGUF")]
    tokenizer: Option<PathBuf>,
    /// The prompt (with --chat: the user's message).
    #[arg(short, long, required_unless_present = "file", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Treat the prompt as a chat message: apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Stop after this many generated tokens (generation also stops at an end-of-generation
    /// token and at the end of the context).
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 256, value_parser = tokens_arg::<1>())]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
    #[command(flatten)]
    caps: CapArgs,
    /// Print one JSON document (text, tokens, speeds, memory) instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// Device caps (shared by `generate` and `chat`): the run happens in a capped child process.
#[derive(clap::Args, Clone, Debug)]
pub struct CapArgs {
    /// Run under this device profile's caps (pi4-4gb, pi5-8gb, jetson-orin-nano-8gb, phone-6gb,
    /// host; `microscale bench --list-profiles`).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Memory cap (e.g. 3GiB, 512MiB, none); overrides the profile's (alone: the host profile).
    #[arg(long)]
    mem_limit: Option<String>,
    /// CPU bandwidth in CPUs (0.5 = half a core); overrides the profile's.
    #[arg(long, value_name = "CPUS", value_parser = super::cpu_quota_arg)]
    cpu_quota: Option<f64>,
    /// Under caps: memory-map the model instead of reading it into RAM.
    #[arg(long)]
    mmap: bool,
    /// Under caps: stop the child after this many seconds (default: 900 for generate, none for chat).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// (internal) This process is the capped child.
    #[arg(long, hide = true)]
    pub capped_child: bool,
}

impl CapArgs {
    /// Caps were asked for, and this process is not already the capped child: run one.
    pub fn wanted(&self) -> bool {
        (self.profile.is_some() || self.mem_limit.is_some() || self.cpu_quota.is_some()) && !self.capped_child
    }

    /// The capped child reads the model into RAM (the cap decides whether it fits) unless
    /// --mmap; an uncapped run maps it.
    pub fn mmap(&self) -> bool {
        !self.capped_child || self.mmap
    }

    /// `--mmap` as given.
    #[cfg(test)]
    pub fn mmap_flag(&self) -> bool {
        self.mmap
    }

    /// In the capped child, llama.cpp's log goes to stderr line by line: if the process dies, the
    /// parent quotes its last line.
    pub fn enter_child_mode(&self) {
        if self.capped_child {
            set_mode(LogMode::Child);
        }
    }

    /// Run `talk` in a child under the profile's caps; `--threads` overrides the profile's.
    pub fn run_child(
        &self,
        model: &Path,
        load: &LoadArgs,
        flags: Vec<OsString>,
        talk: Talk,
    ) -> Result<CappedGeneration> {
        microscale::sandbox::caps::remove_stale_cgroups();
        let overrides = Overrides {
            threads: load.threads,
            memory: self.mem_limit.as_deref().map(parse_memory).transpose()?,
            cpu_quota: self.cpu_quota,
        };
        let p = profile(self.profile.as_deref().unwrap_or("host"))?.with(&overrides);
        let default_timeout = match talk {
            Talk::Generate { .. } => 900,
            Talk::Chat => 365 * 24 * 3600, // a conversation lasts as long as the user talks
        };
        let capped = Capped {
            talk,
            model,
            load: load.load_options(self.mmap),
            flags,
            timeout: Duration::from_secs(self.timeout.unwrap_or(default_timeout)),
            child_exe: None,
        };
        generate_capped(capped, &p)
    }
}

impl Args {
    pub fn run(mut self, g: Global) -> Result<()> {
        IoPaths::new()
            .input("MODEL", &self.model)
            .input_opt("--file", self.file.as_ref())
            .input_opt("--tokenizer", self.tokenizer.as_ref())
            .check()?;
        self.context.load.resolve_offload();
        if microscale::engine::litert::is_litert(&self.model) {
            return self.run_litert();
        }
        if self.caps.wanted() {
            return self.run_capped(g);
        }
        let prompt = self.prompt_text()?;
        let sampling = self.sampling.sampling()?;
        self.caps.enter_child_mode();
        let start = Instant::now();
        let model = Model::load_with(&self.model, &self.context.load.load_options(self.caps.mmap()))?;
        let load_s = start.elapsed().as_secs_f64();
        let opts = self.context.options(sampling.clone());
        let mut generator = Generator::new(&model, &opts)?;
        let tokens = if self.chat {
            let mut conversation = self.context.conversation(&model)?;
            tokenize_chat(&model, &conversation.add_user(&model, &prompt)?, true)
        } else {
            tokenize_chat(&model, &prompt, true)
        };
        let stream = !self.json;
        let mut stdout = std::io::stdout().lock();
        let reply = generator.reply(&tokens, self.max_tokens, |piece| {
            if stream {
                stdout.write_all(piece.as_bytes())?;
                stdout.flush()?;
            }
            Ok(())
        })?;
        if stream {
            writeln!(stdout)?;
        }
        drop(stdout);
        let mut report =
            GenerationReport::new(&self.model, opts.threads, opts.ctx_size, &sampling, generator.seed(), load_s)
                .with_reply(&reply);
        report.chat = self.chat;
        report.gpu_layers = self.context.load.gpu_layers;
        if self.caps.capped_child {
            eprintln!("{STATS_PREFIX}{}", serde_json::to_string(&report)?);
            return Ok(());
        }
        if self.json {
            return output::print_json(&report);
        }
        if !g.quiet {
            eprint!("{}", output::generation_stats(&report));
        }
        Ok(())
    }

    fn prompt_text(&self) -> Result<String> {
        match (&self.prompt, &self.file) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(f)) => {
                std::fs::read_to_string(f).with_context(|| format!("{}: cannot read the prompt", f.display()))
            }
            (None, None) => bail!("no prompt: give --prompt TEXT or --file FILE"),
        }
    }

    #[cfg(test)]
    pub fn model_path(&self) -> &std::path::Path {
        &self.model
    }

    #[cfg(test)]
    pub fn load_args(&self) -> &LoadArgs {
        &self.context.load
    }

    /// The capped child's command line as the parent described it (None: this is not the child):
    /// the child runs from these flags themselves; the round-trip test compares.
    #[cfg(test)]
    pub fn child_spec(&self) -> Option<microscale::sandbox::child::GenerateChild> {
        if !self.caps.capped_child {
            return None;
        }
        Some(microscale::sandbox::child::GenerateChild {
            chat: false,
            model: self.model.clone(),
            threads: self.context.load.threads?,
            load: self.context.load.load_options(self.caps.mmap_flag()),
            flags: self.child_args(),
        })
    }

    /// Run this generation again as a child under the profile's caps, streaming its text.
    /// A LiteRT file: the greedy reply through LiteRT's interpreter, tokenized and formatted by
    /// the GGUF it came from.
    fn run_litert(&self) -> Result<()> {
        let shown = self.model.display();
        let Some(tokenizer) = &self.tokenizer else {
            bail!("{shown}: a LiteRT file holds no tokenizer; give the GGUF it was exported from with --tokenizer");
        };
        if !self.sampling.sampling()?.is_greedy() || self.caps.wanted() {
            bail!("{shown}: a LiteRT file is run greedily and uncapped here: add --temp 0, and no --profile or caps");
        }
        let prompt = self.prompt_text()?;
        let threads = self.context.load.threads_or_all();
        let reply = microscale::engine::litert::reply_greedy(
            &self.model,
            tokenizer,
            &prompt,
            self.chat,
            self.max_tokens,
            threads,
        )?;
        if self.json {
            return output::print_json(&serde_json::json!({"model": self.model, "runtime": "litert", "reply": reply}));
        }
        println!("{reply}");
        Ok(())
    }

    fn run_capped(&self, g: Global) -> Result<()> {
        self.sampling.sampling()?; // refuse nonsense before starting a child
        if let Some(f) = &self.file {
            std::fs::metadata(f).with_context(|| format!("{}: cannot read the prompt", f.display()))?;
        }
        let run = self.caps.run_child(
            &self.model,
            &self.context.load,
            self.child_args(),
            Talk::Generate { stream: !self.json },
        )?;
        if self.json {
            output::print_json(&run)?;
        } else if !g.quiet || run.report.is_none() {
            eprint!("{}", output::capped_generation_stats(&run));
        }
        match &run.reason {
            Some(reason) => bail!("{}: {reason}", self.model.display()),
            None => Ok(()),
        }
    }

    /// The flags the capped child gets: everything about the generation, nothing about caps
    /// (it is capped from outside) nor about loading (the child's spec carries the profile's
    /// thread count, the offload and mmap).
    pub fn child_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match (&self.prompt, &self.file) {
            (Some(p), _) => a.extend(["--prompt".into(), p.into()]),
            (None, Some(f)) => a.extend(["--file".into(), f.into()]),
            (None, None) => {}
        }
        if self.chat {
            a.push("--chat".into());
        }
        a.push(format!("--max-tokens={}", self.max_tokens).into());
        a.extend(self.context.to_args());
        a.extend(self.sampling.to_args());
        a
    }
}
