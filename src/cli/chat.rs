use super::generate::{CapArgs, ContextArgs, SamplingArgs};
use super::{output, tokens_arg, Global};
use anyhow::Result;
use microscale::bench::generate::Talk;
use microscale::engine::generate::{tokenize_chat, Generator, Reply, Stop};
use microscale::engine::Model;
use microscale::util::mem::format_size_short;
use microscale::util::paths::IoPaths;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Talk to a model: an interactive chat in the terminal, the conversation kept in the KV cache.
///
/// Each line you type is a user message, formatted with the model's chat template (or
/// --chat-template) and added to what the model has already read, so a turn costs only its
/// new tokens; the reply streams as it is written and ends at the model's end-of-turn token.
/// Commands: /reset forgets the conversation (the system message stays), /stats shows the
/// last reply's speeds and how full the context is, /help lists them; Ctrl-D (end of input)
/// leaves. Sampling flags are `generate`'s; --temp 0 answers greedily.
///
/// Under a device's caps (--profile, --mem-limit, --cpu-quota) the whole conversation runs
/// in a capped child process that gets this terminal, as `generate --profile` does: a model
/// that does not fit says so and the command exits non-zero.
///
/// Examples:
///   microscale chat q4.gguf
///   microscale chat q4.gguf --system "Answer in one sentence." --temp 0.3 --ctx-size 2048
///   microscale chat q4.gguf --profile pi4-4gb
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// Stop a reply after this many tokens.
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 512, value_parser = tokens_arg::<1>())]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
    #[command(flatten)]
    caps: CapArgs,
}

const HELP: &str = "/reset  forget the conversation (the system message stays)\n\
                    /stats  the last reply's speeds, and how full the context is\n\
                    /help   this list\n\
                    Ctrl-D  leave";

impl Args {
    pub fn run(mut self, g: Global) -> Result<()> {
        IoPaths::new().input("MODEL", &self.model).check()?;
        self.context.load.resolve_offload();
        let sampling = self.sampling.sampling()?;
        if self.caps.wanted() {
            return self.run_capped(g);
        }
        self.caps.enter_child_mode();
        let model = Model::load_with(&self.model, &self.context.load.load_options(self.caps.mmap()))?;
        let opts = self.context.options(sampling);
        let mut generator = Generator::new(&model, &opts)?;
        let mut conversation = self.context.conversation(&model)?;
        if !g.quiet {
            let size = std::fs::metadata(&self.model).map(|m| m.len()).unwrap_or(0);
            let banner = format!(
                "chatting with {} ({}), context {} tokens, {} threads. /help for commands, Ctrl-D to leave.",
                self.model.display(),
                format_size_short(size),
                opts.ctx_size,
                opts.threads
            );
            // A capped child's stderr goes to its parent, read when it ends: say it on stdout.
            if self.caps.capped_child {
                println!("{banner}");
            } else {
                eprintln!("{banner}");
            }
        }
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut last: Option<Reply> = None;
        loop {
            print!("> ");
            std::io::stdout().flush()?;
            let mut line = String::new();
            if stdin.read_line(&mut line)? == 0 {
                println!();
                return Ok(()); // Ctrl-D
            }
            let line = line.trim_end_matches(['\n', '\r']);
            match line.trim() {
                "" => continue,
                "/reset" => {
                    generator.reset();
                    conversation.reset();
                    println!("(conversation cleared)");
                    continue;
                }
                "/stats" => {
                    let (used, size) = generator.context_used();
                    if let Some(r) = &last {
                        println!(
                            "{}",
                            output::reply_stats_line(
                                r.prompt_tokens,
                                r.prompt_tps(),
                                r.generated_tokens,
                                r.generation_tps(),
                                r.ttft_s
                            )
                        );
                    }
                    println!(
                        "context {used} of {size} tokens, {} turn(s), peak memory {}",
                        conversation.turns(),
                        format_size_short(microscale::util::mem::peak_rss())
                    );
                    continue;
                }
                "/help" => {
                    println!("{HELP}");
                    continue;
                }
                cmd if cmd.starts_with('/') && !cmd.contains(' ') => {
                    println!("unknown command {cmd}; /help lists the commands");
                    continue;
                }
                _ => {}
            }
            match self.turn(&model, &mut generator, &mut conversation, line) {
                Ok(reply) => {
                    if reply.stop == Some(Stop::ContextFull) {
                        println!("(the context is full: /reset to start again, or a larger --ctx-size)");
                    }
                    last = Some(reply);
                }
                // A turn that cannot be taken (the context is full) leaves the chat open.
                Err(e) => println!("error: {}", output::error_line(&e)),
            }
        }
    }

    #[cfg(test)]
    pub fn model_path(&self) -> &std::path::Path {
        &self.model
    }

    #[cfg(test)]
    pub fn load_args(&self) -> &super::load_args::LoadArgs {
        &self.context.load
    }

    /// The capped child's command line as the parent described it (None: this is not the child):
    /// the child runs from these flags themselves; the round-trip test compares.
    #[cfg(test)]
    pub fn child_spec(&self, g: Global) -> Option<microscale::sandbox::child::GenerateChild> {
        if !self.caps.capped_child {
            return None;
        }
        Some(microscale::sandbox::child::GenerateChild {
            chat: true,
            model: self.model.clone(),
            threads: self.context.load.threads?,
            load: self.context.load.load_options(self.caps.mmap_flag()),
            flags: self.child_args(g),
        })
    }

    /// The flags the capped child gets (as `generate`'s: nothing about caps nor loading).
    pub fn child_args(&self, g: Global) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![format!("--max-tokens={}", self.max_tokens).into()];
        args.extend(self.context.to_args());
        args.extend(self.sampling.to_args());
        if g.quiet {
            args.push("-q".into());
        }
        args
    }

    /// The conversation in a child under the profile's caps, on this terminal.
    fn run_capped(&self, g: Global) -> Result<()> {
        let run = self.caps.run_child(&self.model, &self.context.load, self.child_args(g), Talk::Chat)?;
        if !g.quiet || run.reason.is_some() {
            eprint!("{}", output::capped_generation_stats(&run));
        }
        match &run.reason {
            Some(reason) => anyhow::bail!("{}: {reason}", self.model.display()),
            None => Ok(()),
        }
    }

    /// One user message and the streamed reply.
    fn turn(
        &self,
        model: &Model,
        generator: &mut Generator,
        conversation: &mut microscale::engine::generate::Conversation,
        message: &str,
    ) -> Result<Reply> {
        let first = generator.context_used().0 == 0;
        let text = conversation.add_user(model, message)?;
        let tokens = tokenize_chat(model, &text, first);
        let mut stdout = std::io::stdout().lock();
        let reply = generator.reply(&tokens, self.max_tokens, |piece| {
            stdout.write_all(piece.as_bytes())?;
            stdout.flush()?;
            Ok(())
        });
        writeln!(stdout)?;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                conversation.undo_user();
                return Err(e);
            }
        };
        conversation.add_reply(&reply.text);
        Ok(reply)
    }
}
