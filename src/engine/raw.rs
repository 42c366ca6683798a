//! llama.cpp through `llama-cpp-sys-2` directly, for what `llama-cpp-2` does not expose: the graph
//! evaluation callback (`cb_eval`), which lets calibration read every intermediate tensor (matrix
//! multiplication inputs, each block's output) as llama.cpp computes it.

use anyhow::{anyhow, Result};
use llama_cpp_sys_2 as sys;
use std::ffi::{c_void, CStr, CString};
use std::path::Path;

/// Sees tensors as the graph computes them. `wants` is asked first (before computation); `seen`
/// gets the computed tensor when `wants` said yes.
pub trait TensorObserver {
    fn wants(&mut self, t: &sys::ggml_tensor) -> bool;
    fn seen(&mut self, t: &sys::ggml_tensor);
    /// True once the observer has all it needs from this evaluation: llama.cpp then skips the
    /// rest of the current scheduler split (on the CPU, the rest of the graph: the later blocks
    /// and the output head; later splits of a partly offloaded model still run), and the logits
    /// it returns are meaningless.
    fn finished(&self) -> bool {
        false
    }
}

unsafe extern "C" fn trampoline(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: `user` is the `&mut dyn TensorObserver` boxed by `ObservedContext`, alive for the
    // context's lifetime; llama.cpp calls this from the thread running llama_decode.
    let obs = &mut **(user as *mut Box<dyn TensorObserver>);
    let t = &*t;
    if ask {
        obs.wants(t)
    } else {
        obs.seen(t);
        !obs.finished() // false stops computing the graph
    }
}

/// A tensor's name.
pub fn tensor_name(t: &sys::ggml_tensor) -> &str {
    unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_str().unwrap_or("")
}

/// The f32 rows of a 2-D host tensor (None for anything else).
pub fn f32_rows(t: &sys::ggml_tensor) -> Option<Vec<&[f32]>> {
    if t.type_ != sys::GGML_TYPE_F32 || t.data.is_null() || t.ne[2] != 1 || t.ne[3] != 1 {
        return None;
    }
    if !t.buffer.is_null() && !unsafe { sys::ggml_backend_buffer_is_host(t.buffer) } {
        return None;
    }
    let (n, rows, stride) = (t.ne[0] as usize, t.ne[1] as usize, t.nb[1]);
    let base = t.data as *const u8;
    // SAFETY: a computed host tensor of `rows` rows of `n` f32, `stride` bytes apart.
    Some((0..rows).map(|r| unsafe { std::slice::from_raw_parts(base.add(r * stride) as *const f32, n) }).collect())
}

/// A model and one context whose graph evaluation is observed.
pub struct ObservedContext {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    observer: *mut Box<dyn TensorObserver>,
    pub n_vocab: usize,
    pub add_bos: bool,
    pub bos: i32,
    vocab: *const sys::llama_vocab,
}

impl ObservedContext {
    /// A model loaded from a GGUF file, observed.
    pub fn new(
        path: &Path,
        n_ctx: usize,
        threads: usize,
        observer: Box<dyn TensorObserver>,
    ) -> Result<ObservedContext> {
        super::init(false);
        let c_path = CString::new(path.to_string_lossy().as_bytes())?;
        super::log::clear();
        let model = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), sys::llama_model_default_params()) };
        if model.is_null() {
            return Err(super::engine_error(path, "llama.cpp could not load the model"));
        }
        // SAFETY: a model just loaded, owned by nobody else.
        unsafe { Self::from_model(model, n_ctx, threads, observer) }.map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// Observe a model already made (by [`super::user_model::model_from_parts`]); takes ownership.
    ///
    /// # Safety
    /// `model` must be a valid llama.cpp model that nothing else frees.
    pub unsafe fn from_model(
        model: *mut sys::llama_model,
        n_ctx: usize,
        threads: usize,
        observer: Box<dyn TensorObserver>,
    ) -> Result<ObservedContext> {
        if let Err(e) = super::check_threads(threads).and_then(|()| match n_ctx {
            1..=super::MAX_CONTEXT => Ok(()),
            _ => Err(anyhow!("a context of {n_ctx} tokens is outside 1..={}", super::MAX_CONTEXT)),
        }) {
            unsafe { sys::llama_model_free(model) };
            return Err(e);
        }
        let observer = Box::into_raw(Box::new(observer));
        let mut p = unsafe { sys::llama_context_default_params() };
        p.n_ctx = n_ctx as u32;
        p.n_batch = n_ctx as u32;
        p.n_ubatch = n_ctx as u32;
        p.n_threads = threads as i32;
        p.n_threads_batch = threads as i32;
        p.cb_eval = Some(trampoline);
        p.cb_eval_user_data = observer as *mut c_void;
        let ctx = unsafe { sys::llama_init_from_model(model, p) };
        if ctx.is_null() {
            unsafe {
                drop(Box::from_raw(observer));
                sys::llama_model_free(model);
            }
            return Err(anyhow!(
                "llama.cpp could not create a context: {}",
                super::log::last_error().unwrap_or_else(|| "no reason given (run with -v)".into())
            ));
        }
        let vocab = unsafe { sys::llama_model_get_vocab(model) };
        Ok(ObservedContext {
            model,
            ctx,
            observer,
            n_vocab: unsafe { sys::llama_vocab_n_tokens(vocab) } as usize,
            add_bos: unsafe { sys::llama_vocab_get_add_bos(vocab) },
            bos: unsafe { sys::llama_vocab_bos(vocab) },
            vocab,
        })
    }

    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        let bytes = text.as_bytes();
        let mut out = vec![0i32; bytes.len() + 2];
        let n = unsafe {
            sys::llama_tokenize(
                self.vocab,
                bytes.as_ptr() as *const _,
                bytes.len() as i32,
                out.as_mut_ptr(),
                out.len() as i32,
                true,
                false,
            )
        };
        out.truncate(n.max(0) as usize);
        out
    }

    /// Decode one fresh sequence, asking for every position's logits (so that every layer keeps
    /// every token's rows: llama.cpp drops the rows of positions without outputs before the last
    /// block otherwise).
    pub fn decode_all(&mut self, tokens: &[i32]) -> Result<()> {
        unsafe {
            sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true);
            let mut batch = sys::llama_batch_init(tokens.len() as i32, 0, 1);
            for (i, &t) in tokens.iter().enumerate() {
                *batch.token.add(i) = t;
                *batch.pos.add(i) = i as i32;
                *batch.n_seq_id.add(i) = 1;
                **batch.seq_id.add(i) = 0;
                *batch.logits.add(i) = 1;
            }
            batch.n_tokens = tokens.len() as i32;
            let rc = sys::llama_decode(self.ctx, batch);
            sys::llama_batch_free(batch);
            if rc != 0 {
                return Err(anyhow!("llama_decode failed ({rc})"));
            }
        }
        Ok(())
    }

    /// Take the observer back (ends observation).
    pub fn into_observer(mut self) -> Box<dyn TensorObserver> {
        let obs = unsafe { *Box::from_raw(self.observer) };
        self.observer = std::ptr::null_mut();
        obs
    }
}

impl Drop for ObservedContext {
    fn drop(&mut self) {
        unsafe {
            sys::llama_free(self.ctx);
            sys::llama_model_free(self.model);
            if !self.observer.is_null() {
                drop(Box::from_raw(self.observer));
            }
        }
    }
}
