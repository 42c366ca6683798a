//! GGUF tensor names of the repeated blocks, `blk.N.REST` (`blk.3.ffn_down.weight`), as llama.cpp
//! and `convert_hf_to_gguf.py` write them: parsed and written here, once.

/// The prefix of every block tensor's name.
pub const PREFIX: &str = "blk.";

/// `blk.N.REST` → (N, REST); None for a tensor outside the blocks (`token_embd.weight`,
/// `output_norm.weight`) or a name whose N is not a number.
pub fn split(name: &str) -> Option<(usize, &str)> {
    let (index, rest) = name.strip_prefix(PREFIX)?.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// `blk.N.…` → N.
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix(PREFIX)?.split('.').next()?.parse().ok()
}

/// Whether the tensor belongs to a block (`blk.…`).
pub fn in_block(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// `blk.{index}.{rest}`.
pub fn name(index: usize, rest: &str) -> String {
    format!("{PREFIX}{index}.{rest}")
}

/// `blk.N.REST` renumbered `blk.{to}.REST` (None outside the blocks).
pub fn renumbered(name: &str, to: usize) -> Option<String> {
    split(name).map(|(_, rest)| self::name(to, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_parse_and_print() {
        assert_eq!(split("blk.11.ffn_down.weight"), Some((11, "ffn_down.weight")));
        assert_eq!(split("token_embd.weight"), None);
        assert_eq!(split("blk.x.attn_q.weight"), None);
        assert_eq!(block_of("blk.0.attn_norm.weight"), Some(0));
        assert_eq!(block_of("output.weight"), None);
        assert!(in_block("blk.2.attn_v.weight") && !in_block("output_norm.weight"));
        assert_eq!(name(4, "ffn_up.weight"), "blk.4.ffn_up.weight");
        assert_eq!(renumbered("blk.11.ffn_down.weight", 12).as_deref(), Some("blk.12.ffn_down.weight"));
        assert_eq!(renumbered("output.weight", 3), None);
    }
}
