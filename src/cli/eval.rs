use super::load_args::LoadArgs;
use super::{at_least, output, tokens_arg, Global};
use anyhow::Result;
use microscale::eval::data::Task;
use microscale::eval::run::{run, EvalSpec};
use microscale::record::rows::{append_csv, ModelId};
use microscale::util::data::{DataDir, WIKITEXT_TEST};
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// Evaluate a GGUF model through llama.cpp: perplexity, KL divergence, SST-2, multiple choice.
///
/// Perplexity and KL divergence follow llama-perplexity exactly (512-token windows, second half
/// scored, BOS as the vocabulary asks; the same ± and KLD statistics). Tasks score each choice's
/// log-likelihood after a prompt, all choices of an item in one llama.cpp batch sharing the
/// context: acc = highest sum, acc_norm = highest per character (lm-evaluation-harness).
///
/// With no --ppl, --kld-base or --task, perplexity on WikiText-2 test is computed.
///
/// A LiteRT file (MODEL.tflite, from `microscale export --format litert`) is run through LiteRT's
/// own interpreter on the same windows, tokenized by the GGUF it came from (--tokenizer), and its
/// logits scored by the same code as llama.cpp's; it needs a prefill signature of --ctx-size
/// tokens. Perplexity, and KL divergence against a base saved by --save-kld-base (both then on
/// the base's windows); no tasks.
///
/// Examples:
///   microscale eval model.gguf --chunks 40
///   microscale eval model-q4_k_m.gguf --kld-base model-f32.gguf --chunks 40
///   microscale eval model-f32.gguf --save-kld-base f32.kld --chunks 40   (then, for each file:)
///   microscale eval model-q4_k_m.gguf --kld-base f32.kld
///   microscale eval model.gguf --task sst2 --task arc-easy --task arc-challenge --csv results.csv
///   microscale eval model.gguf --task mc:my-questions.jsonl --limit 200 --json
///   microscale eval model.tflite --tokenizer model.gguf --chunks 8
///   microscale eval model.tflite --tokenizer model.gguf --kld-base f32.kld
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The GGUF model (or a LiteRT .tflite, with --tokenizer).
    model: PathBuf,
    /// The GGUF whose vocabulary tokenizes for a LiteRT MODEL (the file it was exported from).
    #[arg(long, value_name = "GGUF")]
    tokenizer: Option<PathBuf>,
    /// Perplexity on this text (bare flag: the data folder's WikiText-2 test split).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    ppl: Option<Option<PathBuf>>,
    /// KL divergence against this base: a model (same vocabulary), run on the perplexity text, or
    /// a file saved by --save-kld-base (or llama-perplexity --kl-divergence-base), which holds its
    /// own tokens and spares running the base model for every comparison.
    #[arg(long, value_name = "BASE")]
    kld_base: Option<PathBuf>,
    /// Save this model's log-probabilities on the perplexity text (--chunks windows) to FILE, in
    /// llama-perplexity's format, as the --kld-base of later runs.
    #[arg(long, value_name = "FILE")]
    save_kld_base: Option<PathBuf>,
    /// sst2, arc-easy, arc-challenge, or mc:FILE.jsonl ({"context", "choices", "label"}); repeatable.
    #[arg(long = "task", value_name = "TASK")]
    tasks: Vec<Task>,
    /// SST-2 demonstrations (k-shot), drawn with --seed and excluded from the evaluated items.
    #[arg(long, default_value_t = 0)]
    shots: usize,
    /// Tokens per perplexity window.
    #[arg(short = 'c', long, default_value_t = 512, value_parser = tokens_arg::<4>())]
    ctx_size: usize,
    /// Tokens per llama.cpp decode (perplexity runs batch/ctx windows at once).
    #[arg(short = 'b', long, default_value_t = 2048, value_parser = tokens_arg::<1>())]
    batch_size: usize,
    /// Score at most this many perplexity windows (default: all).
    #[arg(long, value_parser = at_least::<1>())]
    chunks: Option<usize>,
    /// Evaluate at most this many items per task (a seeded sample).
    #[arg(long, value_parser = at_least::<1>())]
    limit: Option<usize>,
    /// Seed for SST-2 demonstrations and --limit samples.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    load: LoadArgs,
    /// The data folder holding wikitext-2/, sst2/ and arc/ (default: $MICROSCALE_DATA, else
    /// the one shipped with microscale).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Append one row per metric to this CSV file.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
}

impl Args {
    fn spec(self) -> Result<EvalSpec> {
        let data = DataDir::resolve(self.data_dir.as_deref());
        let ppl = match self.ppl {
            Some(Some(file)) => Some(file),
            Some(None) => Some(data.file(WIKITEXT_TEST)?),
            None if self.kld_base.is_none() && self.save_kld_base.is_none() && self.tasks.is_empty() => {
                Some(data.file(WIKITEXT_TEST)?)
            }
            None => None,
        };
        Ok(EvalSpec {
            ppl,
            kld_base: self.kld_base,
            save_kld_base: self.save_kld_base,
            tasks: self.tasks,
            shots: self.shots,
            n_ctx: self.ctx_size,
            n_batch: self.batch_size,
            chunks: self.chunks,
            limit: self.limit,
            seed: self.seed,
            data,
            // Evaluation maps the file, as llama-perplexity does.
            load: self.load.load_options(true),
            tokenizer: self.tokenizer,
            ..EvalSpec::new(self.load.threads_or_all())
        })
    }

    /// Every file `eval` reads and writes, by flag.
    fn io(&self) -> IoPaths {
        let task_files = self.tasks.iter().filter_map(|t| match t {
            Task::Mc(path) => Some(path),
            _ => None,
        });
        IoPaths::new()
            .input("MODEL", &self.model)
            .input_opt("--tokenizer", self.tokenizer.as_ref())
            .input_opt("--ppl", self.ppl.as_ref().and_then(|p| p.as_ref()))
            .input_opt("--kld-base", self.kld_base.as_ref())
            .inputs("--task", task_files)
            .input_opt("--data-dir", self.data_dir.as_ref())
            .output_opt("--save-kld-base", self.save_kld_base.as_ref(), OutputKind::File)
            .output_opt("--csv", self.csv.as_ref(), OutputKind::Append)
    }

    pub fn run(mut self, g: Global) -> Result<()> {
        self.io().check()?;
        self.load.resolve_offload();
        let (model, csv, json, gpu_layers) = (self.model.clone(), self.csv.clone(), self.json, self.load.gpu_layers);
        let tokenizer = self.tokenizer.clone();
        let out = run(&model, &self.spec()?, g.quiet)?;
        let id = match &tokenizer {
            Some(gguf) if microscale::engine::litert::is_litert(&model) => ModelId::litert(&model, gguf)?,
            _ => ModelId::of(&model)?,
        };
        if let Some(path) = &csv {
            append_csv(path, &id, &out.rows, gpu_layers)?;
        }
        if json {
            output::print_json(&serde_json::json!({"model": id, "results": out}))
        } else {
            print!("{}", output::eval_text(&id, &out));
            Ok(())
        }
    }
}
