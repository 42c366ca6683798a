use microscale::quant::mix::{MixFlags, TensorTypeOverride};
use microscale::quant::GgmlType;

/// llama-quantize's flags that change the per-tensor mix (convert and stock-quantize share them).
#[derive(clap::Args, Clone, Debug)]
pub struct MixArgs {
    /// Quantize tensors whose name matches the regex PATTERN to TYPE (e.g. 'ffn_down=q6_k');
    /// repeatable, first match wins, as llama-quantize's --tensor-type.
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    pub tensor_types: Vec<TensorTypeOverride>,
    /// Type of output.weight (or of the tied token embeddings), instead of the mix's choice.
    #[arg(long, value_name = "TYPE", value_parser = GgmlType::parse)]
    pub output_tensor_type: Option<GgmlType>,
    /// Type of token_embd.weight, instead of the mix's choice.
    #[arg(long, value_name = "TYPE", value_parser = GgmlType::parse)]
    pub token_embedding_type: Option<GgmlType>,
    /// Leave output.weight unquantized (F32 from a float source).
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Every quantizable tensor in the scheme's default type: no per-tensor mix (row-size
    /// fallbacks and --tensor-type still apply), as llama-quantize's --pure.
    #[arg(long)]
    pub pure: bool,
}

impl MixArgs {
    pub fn flags(&self) -> MixFlags {
        MixFlags {
            output_tensor_type: self.output_tensor_type,
            token_embedding_type: self.token_embedding_type,
            leave_output_tensor: self.leave_output_tensor,
            pure: self.pure,
        }
    }
}

/// A size budget for the blocks' weight types (convert and prune-plan share it).
#[derive(clap::Args, Clone, Debug)]
pub struct BudgetArgs {
    /// Fit the whole file in SIZE (100MiB, 1.5GB, ...): each weight matrix's type (the blocks',
    /// the token embedding's and the output head's) is chosen from the ladder of types to
    /// minimise the importance-weighted quantization error for the budget (use --imatrix or
    /// --calib: without one every channel counts alike). With --quant-method gptq the error is
    /// GPTQ's, measured against the inputs' full second moment. Stock llama.cpp runs the file.
    #[arg(long, value_name = "SIZE", value_parser = microscale::util::mem::parse_size, conflicts_with = "target_bpw")]
    pub target_size: Option<u64>,
    /// As --target-size, for an average of BPW bits per weight over all tensors' data.
    #[arg(long, value_name = "BPW", value_parser = positive_bpw)]
    pub target_bpw: Option<f64>,
    /// With a budget: weigh the error of every tensor of ROLE (attn_q, ffn_down, token_embd,
    /// output, ...) by F, e.g. a sensitivity measured as KL divergence per unit of error
    /// (`microscale shrink` measures them and writes them into the command that rebuilds its
    /// file); repeatable.
    #[arg(long, value_name = "ROLE=F", value_parser = role_scale)]
    pub loss_scale: Vec<(String, f64)>,
}

fn role_scale(s: &str) -> Result<(String, f64), String> {
    let (role, f) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ROLE=F"))?;
    match f.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && !role.is_empty() => Ok((role.to_string(), f)),
        _ => Err(format!("{s:?}: F must be a positive number and ROLE a tensor role (attn_q, token_embd, ...)")),
    }
}

fn positive_bpw(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if b > 0.0 && b <= 32.0 => Ok(b),
        _ => Err(format!("{s:?} is not a bit rate between 0 and 32")),
    }
}

impl BudgetArgs {
    pub fn budget(&self) -> Option<microscale::convert::budget::Budget> {
        use microscale::convert::budget::Budget;
        self.target_size.map(Budget::Size).or(self.target_bpw.map(Budget::Bpw))
    }
}
