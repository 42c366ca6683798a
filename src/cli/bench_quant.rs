use super::{at_least, output, threads_arg, Global};
use anyhow::Result;
use microscale::bench::quant::{bench_type, imatrix_settings, BENCH_TYPES};
use microscale::quant::GgmlType;

/// Quantizer throughput: microscale's quantizers against ggml's C functions.
///
/// Both run on the same data and thread count, alternately, in one process; the ratio column
/// (microscale / ggml, above 1 = faster) is what to read on a noisy machine. Also checks the
/// outputs are byte-identical.
///
/// Example: microscale bench-quant --threads 2 > bench-results/quantizers.md
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Rows per run.
    #[arg(long, default_value_t = 1024, value_parser = at_least::<1>())]
    rows: usize,
    /// Row length (a multiple of 256).
    #[arg(long, default_value_t = 4096, value_parser = at_least::<256>())]
    row_len: usize,
    /// Threads for both sides (default: all cores).
    #[arg(short, long, value_parser = threads_arg())]
    threads: Option<usize>,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = at_least::<1>())]
    reps: usize,
    /// Only these types (default: all).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, _: Global) -> Result<()> {
        let threads = self.threads.unwrap_or_else(microscale::engine::default_threads);
        let types: Vec<GgmlType> = if self.types.is_empty() {
            BENCH_TYPES.to_vec()
        } else {
            self.types.iter().map(|t| GgmlType::parse(t)).collect::<Result<_>>()?
        };
        let mut rows = Vec::new();
        for ty in types {
            for &imatrix in imatrix_settings(ty) {
                rows.push(bench_type(ty, self.rows, self.row_len, threads, self.reps, imatrix)?);
            }
        }
        if self.json {
            output::print_json(&rows)
        } else {
            print!("{}", output::quant_bench_table(&rows));
            Ok(())
        }
    }
}
