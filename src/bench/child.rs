//! The measuring side of `bench`, run in a capped child process (`microscale __bench-child`):
//! load the model, then llama-bench's tests: pp (prompt processing: `n_prompt` random tokens in one
//! batch) and tg (generation: `n_gen` tokens decoded one at a time), each after a warm-up run and
//! repeated `reps` times. Prints one JSON line on stdout.

use crate::engine::{init, SessionOptions};
use crate::sandbox::child::BenchChild;
use anyhow::Result;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChildReport {
    /// The thread count given to llama.cpp.
    pub n_threads: usize,
    /// Threads the child process actually ran (from /proc/self/task, after decoding): llama.cpp's
    /// OpenMP pool plus the main thread.
    pub os_threads: usize,
    /// The CPUs the child was allowed to run on.
    pub affinity: Vec<usize>,
    pub load_s: f64,
    /// Time to first token: the prompt, then one generated token.
    pub ttft_s: f64,
    /// tokens/s of each repetition.
    pub pp_tps: Vec<f64>,
    pub tg_tps: Vec<f64>,
    /// Peak resident set as the child saw it (VmHWM), bytes.
    pub vm_hwm: u64,
}

/// llama-bench draws its tokens with `std::rand() % n_vocab`; any fixed pseudo-random stream does.
struct Tokens(crate::util::rng::XorShift64);

impl Tokens {
    fn next(&mut self, n_vocab: i32) -> LlamaToken {
        LlamaToken(self.0.below(n_vocab as u64) as i32)
    }
}

pub fn run_child(a: &BenchChild) -> Result<ChildReport> {
    // llama.cpp's log goes to stderr line by line: if this process crashes, the parent quotes
    // its last line.
    crate::engine::log::set_mode(crate::engine::log::LogMode::Child);
    init(false);
    let t = Instant::now();
    let wrapped = crate::engine::Model::load_with(&a.model, &a.load)?;
    let load_s = t.elapsed().as_secs_f64();
    crate::util::fault::at("bench-child");
    let n_ctx = a.n_prompt + a.n_gen + 1;
    let mut session = wrapped.session_with(&SessionOptions {
        n_ctx,
        n_batch: a.n_prompt.max(1),
        threads: a.threads,
        n_seq: 1,
        unified_kv: false,
        f32_kv: false,
    })?;
    let n_vocab = wrapped.n_vocab() as i32;
    let bos = wrapped.add_bos().then(|| LlamaToken(wrapped.bos()));
    let mut rng = Tokens(crate::util::rng::XorShift64::new(0x2545_F491_4F6C_DD1D));

    let prompt = |session: &mut crate::engine::Session, n: usize, rng: &mut Tokens| -> Result<()> {
        let mut batch = LlamaBatch::new(n, 1);
        for i in 0..n {
            let tok = if i == 0 { bos.unwrap_or_else(|| rng.next(n_vocab)) } else { rng.next(n_vocab) };
            batch.add(tok, i as i32, &[0], i + 1 == n)?;
        }
        session.ctx.decode(&mut batch)?;
        Ok(())
    };
    let gen = |session: &mut crate::engine::Session, start: usize, n: usize, rng: &mut Tokens| -> Result<()> {
        let mut tok = bos.unwrap_or_else(|| rng.next(n_vocab));
        for i in 0..n {
            let mut batch = LlamaBatch::new(1, 1);
            batch.add(tok, (start + i) as i32, &[0], true)?;
            session.ctx.decode(&mut batch)?;
            tok = rng.next(n_vocab);
        }
        Ok(())
    };

    // Time to first token, on a cold context: the prompt, then one token.
    let t = Instant::now();
    if a.n_prompt > 0 {
        prompt(&mut session, a.n_prompt, &mut rng)?;
    }
    gen(&mut session, a.n_prompt, 1, &mut rng)?;
    let ttft_s = t.elapsed().as_secs_f64();

    let mut pp_tps = Vec::new();
    if a.n_prompt > 0 {
        session.clear();
        prompt(&mut session, a.n_prompt, &mut rng)?; // warm-up
        for _ in 0..a.reps {
            session.clear();
            let t = Instant::now();
            prompt(&mut session, a.n_prompt, &mut rng)?;
            pp_tps.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
        }
    }
    let mut tg_tps = Vec::new();
    if a.n_gen > 0 {
        session.clear();
        gen(&mut session, 0, 1, &mut rng)?; // warm-up
        for _ in 0..a.reps {
            session.clear();
            let t = Instant::now();
            gen(&mut session, 0, a.n_gen, &mut rng)?;
            tg_tps.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(ChildReport {
        n_threads: a.threads,
        os_threads: std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0),
        affinity: crate::sandbox::caps::available_cpus(),
        load_s,
        ttft_s,
        pp_tps,
        tg_tps,
        vm_hwm: crate::util::mem::peak_rss(),
    })
}
